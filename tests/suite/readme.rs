//! Every command example of README.md runs, in README order, against the fixture domains started
//! as the README says (on free ports, in a copy of the fixtures): the lines of each ```sh block,
//! each `$ ` line of other blocks, and each inline `sealpost ...` span that names a fixture
//! config. A broken example fails this test; the few that cannot run here are skipped by name
//! below, with the reason.

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::domains::free_port;

/// Examples not run here, and why.
const SKIPPED: &[(&str, &str)] = &[
    (
        "cargo ",
        "cargo builds and tests are what runs this test; `demo` has tests/suite/demo.rs",
    ),
    (
        "docker ",
        "needs Docker and its images; tests/suite/ops_files.rs checks the compose configs",
    ),
];

/// One example: a command line (continuations joined) or a here-document script.
struct Example {
    line: usize,
    text: String,
}

fn examples(readme: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut lines = readme.lines().enumerate().peekable();
    let mut block: Option<String> = None;
    while let Some((i, line)) = lines.next() {
        if let Some(rest) = line.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(rest.trim().to_string()),
            };
            continue;
        }
        let text = match block.as_deref() {
            Some("sh") if !line.trim().is_empty() && !line.trim_start().starts_with('#') => {
                line.to_string()
            }
            Some(_) => match line.strip_prefix("$ ") {
                Some(cmd) => cmd.to_string(),
                None => continue,
            },
            None => {
                for span in line.split('`').skip(1).step_by(2) {
                    if span.starts_with("sealpost ") && span.contains("--config fixtures/") {
                        out.push(Example {
                            line: i + 1,
                            text: span.to_string(),
                        });
                    }
                }
                continue;
            }
        };
        let mut text = text;
        while text.ends_with('\\') {
            text.pop();
            match lines.next() {
                Some((_, next)) => text.push_str(next.trim_start()),
                None => break,
            }
        }
        if let Some((_, tag)) = text.split_once("<<'") {
            let end = tag.trim_end_matches('\'').to_string();
            for (_, next) in lines.by_ref() {
                text.push('\n');
                text.push_str(next);
                if next == end {
                    break;
                }
            }
        }
        out.push(Example { line: i + 1, text });
    }
    out
}

fn copy_tree(from: &Path, to: &Path, edit: &dyn Fn(&str) -> String) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dst, edit);
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        let bytes = match (
            dst.extension().and_then(|e| e.to_str()),
            String::from_utf8(bytes),
        ) {
            (Some("toml"), Ok(text)) => edit(&text).into_bytes(),
            (_, Ok(text)) => text.into_bytes(),
            (_, Err(e)) => e.into_bytes(),
        };
        std::fs::write(&dst, bytes).unwrap();
        let private = matches!(
            dst.extension().and_then(|e| e.to_str()),
            Some("key" | "pem" | "token")
        );
        let mode = if private { 0o600 } else { 0o644 };
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn shell(dir: &Path, text: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(text)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sealpost commands are retried for a while until they succeed with output: the examples
/// read mail that the servers are still relaying.
fn run_until_ok(dir: &Path, text: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = shell(dir, text);
        if out.status.success() && !out.stdout.is_empty() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn every_command_example_of_the_readme_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let ports: BTreeMap<&str, String> = ["2525", "2526", "8443", "9025", "9026"]
        .into_iter()
        .map(|p| (p, free_port().to_string()))
        .collect();
    let with_ports = |text: &str| {
        ports.iter().fold(text.to_string(), |t, (from, to)| {
            t.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"))
                .replace(
                    &format!("\"127.0.0.1\", {from}"),
                    &format!("\"127.0.0.1\", {to}"),
                )
        })
    };
    copy_tree(&root.join("fixtures"), &work.join("fixtures"), &with_ports);
    copy_tree(&root.join("rules"), &work.join("rules"), &with_ports);
    let bin = env!("CARGO_BIN_EXE_sealpost");
    let tmp = work.join("tmp");
    let localize = |text: &str| {
        let mut t = with_ports(text).replace("/tmp/", &format!("{}/", tmp.display()));
        for prefix in ["./target/release/sealpost ", "sealpost "] {
            if let Some(rest) = t.strip_prefix(prefix) {
                t = format!("{bin} {rest}");
            }
        }
        t
    };

    let mut servers = Servers(Vec::new());
    let mut last_id = None;
    let mut ran = 0;
    for ex in examples(&readme) {
        let at = format!("README.md:{}: {}", ex.line, ex.text);
        if let Some((_, why)) = SKIPPED.iter().find(|(p, _)| ex.text.starts_with(p)) {
            eprintln!("skipped {at}\n  ({why})");
            continue;
        }
        let mut text = localize(&ex.text);
        if let Some(serve) = text.strip_suffix('&') {
            let child = Command::new("sh")
                .arg("-c")
                .arg(format!("exec {serve}"))
                .current_dir(work)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            servers.0.push(child);
            ran += 1;
            continue;
        }
        for port in [&ports["2525"], &ports["2526"]] {
            wait_port(port.parse().unwrap());
        }
        if text.contains("<ID>") {
            let id: &String = last_id
                .as_ref()
                .unwrap_or_else(|| panic!("{at}: no id listed before"));
            text = text.replace("<ID>", id);
        }
        if text.contains("message.eml") && !work.join("message.eml").exists() {
            write_smime_message(work, &ports["2525"], &localize);
        }
        let out = if text.starts_with(bin) {
            run_until_ok(work, &text)
        } else {
            shell(work, &text)
        };
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "{at}\nran: {text}\n{stdout}\n{stderr}"
        );
        if text.contains(" mailbox list ") {
            last_id = stdout
                .lines()
                .last()
                .and_then(|l| l.split_whitespace().next())
                .map(String::from);
        }
        ran += 1;
    }
    assert!(ran >= 8, "only {ran} examples ran");
}

/// `message.eml` of the S/MIME example: a `[secure]` message to bob, which contoso's rule
/// encrypts, as bob's mailbox stores it.
fn write_smime_message(work: &Path, port: &str, localize: &dyn Fn(&str) -> String) {
    let send = format!(
        "python3 - <<'PY'\nimport smtplib\nwith smtplib.SMTP('127.0.0.1', {port}) as s:\n    \
         s.sendmail('alice@contoso.test', ['bob@fabrikam.test'], \
         'Subject: [secure] plans\\r\\nMessage-ID: <secure@contoso.test>\\r\\n\\r\\nsecret\\r\\n')\nPY"
    );
    assert!(shell(work, &send).status.success());
    let list = "sealpost mailbox list --config fixtures/fabrikam.toml --data-dir /tmp/f --mailbox bob@fabrikam.test";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = shell(work, &localize(list));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(line) = text.lines().find(|l| l.contains("[secure] plans")) {
            let id = line.split_whitespace().next().unwrap();
            let read = localize(&format!(
                "sealpost mailbox read --config fixtures/fabrikam.toml --data-dir /tmp/f --mailbox bob@fabrikam.test --id {id}"
            ));
            let out = shell(work, &format!("{read} > message.eml"));
            assert!(out.status.success());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the [secure] message did not arrive: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
