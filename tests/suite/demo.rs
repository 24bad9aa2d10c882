//! `sealpost demo` on a fresh clone: its first screen shows mail, not warnings about its own
//! fixtures (git keeps no file modes, so the fixture keys arrive readable by others); bob reads
//! the RMS-protected message through contoso's licensing service with his own certificate, and
//! dave, holding a forwarded copy, is refused by the service.

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
    assert!(
        stdout.contains("deliveries arrived"),
        "every delivery arrives: {stdout}"
    );
    // contoso signs its mail; fabrikam checks it against the records of its static table.
    let signed = stdout
        .lines()
        .filter(|l| {
            l.contains("auth: mx.fabrikam.test;")
                && l.contains("dkim=pass header.d=contoso.test header.s=s2026")
                && l.contains("dmarc=pass header.from=contoso.test")
        })
        .count();
    assert_eq!(
        signed, 5,
        "each message relayed from contoso passes DKIM and DMARC: {stdout}"
    );
    let bob = stdout
        .lines()
        .find(|l| l.contains("RMS-protected"))
        .unwrap_or_else(|| panic!("the demo shows the [protect] message: {stdout}"));
    for part in [
        "template do-not-forward",
        "bob@fabrikam.test opened it through contoso's licensing service https://127.0.0.1:",
        "with the S/MIME certificate pki/smime/bob@fabrikam.test.crt",
        "rights: VIEW",
        "use license valid until 20",
        "\"Hello from the sealpost demo.\"",
    ] {
        assert!(bob.contains(part), "{part:?} not in {bob}");
    }
    assert!(
        stdout.lines().any(|l| l
            .contains("a copy forwarded to dave@fabrikam.test: the licensing service refused")
            && l.contains("\"dave@fabrikam.test has no rights on this message\"")),
        "dave is refused with the service's reason: {stdout}"
    );
    assert!(
        !stdout.to_lowercase().contains("tenant key"),
        "readers do not use the tenant key: {stdout}"
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
