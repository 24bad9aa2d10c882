//! `sealpost demo` on a fresh clone: its first screen shows mail, not warnings about its own
//! fixtures (git keeps no file modes, so the fixture keys arrive readable by others).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), &dst).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

#[test]
fn the_demo_prints_no_warning_about_its_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clone = tempfile::tempdir().unwrap();
    // As a fresh clone has them: every file 0644, keys included.
    copy_tree(&root.join("fixtures"), &clone.path().join("fixtures"));
    copy_tree(&root.join("rules"), &clone.path().join("rules"));
    let fixtures = clone.path().join("fixtures");
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(["demo", "--fixtures", fixtures.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("bob@fabrikam.test"),
        "the demo shows mail: {stdout}"
    );
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    // The fixtures themselves are left as they were.
    let mode = std::fs::metadata(fixtures.join("keys/roots/contoso-a.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
}
