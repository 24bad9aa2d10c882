//! RMS-style protected messages through the real binary: `keys tenant new/list/activate`, and
//! `sealpost decrypt --tenant-key` with its summary, `--as`, expiry, tampering and wrong keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use sealpost::crypto::rms::{self, license_for, TenantKeys};
use sealpost::rules::{Right, RmsProtect};

const MESSAGE: &[u8] = b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\n\
Subject: [protect] plans\r\nMessage-ID: <plans@contoso.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\nThe plans, byte for byte.\r\n";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/tenant")
}

fn protected(expires_after: Option<Duration>, issued: SystemTime) -> Vec<u8> {
    let keys = TenantKeys::load_dir(&fixture_dir()).unwrap();
    let mut action = RmsProtect {
        template: "do-not-forward".into(),
        rights: Default::default(),
        expires_after,
    };
    action
        .rights
        .insert("*@contoso.test".into(), vec![Right::View]);
    let req = license_for(
        &action,
        "alice@contoso.test",
        &["bob@fabrikam.test".into()],
        Some("<plans@contoso.test>"),
        issued,
    );
    rms::protect(MESSAGE, keys.active().unwrap(), req).unwrap()
}

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

fn sealpost(args: &[&str], stdin: &[u8]) -> Run {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn decrypt_opens_byte_for_byte_and_shows_rights() {
    let dir = fixture_dir();
    let dir = dir.to_str().unwrap();
    let msg = protected(None, SystemTime::now());
    let run = sealpost(
        &["decrypt", "--tenant-key", dir, "--as", "bob@fabrikam.test"],
        &msg,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, MESSAGE);
    assert!(
        run.stderr
            .contains("protected by alice@contoso.test with template \"do-not-forward\""),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("bob@fabrikam.test: VIEW, REPLY, REPLYALL\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("bob@fabrikam.test holds: VIEW, REPLY, REPLYALL"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("does not expire"), "{}", run.stderr);

    // A key file works as well as the directory; to a file with --out.
    let key = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pem"))
        .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("clear.eml");
    let run = sealpost(
        &[
            "decrypt",
            "--tenant-key",
            key.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        &msg,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), MESSAGE);

    // Someone without VIEW: refused, nothing written.
    let run = sealpost(
        &["decrypt", "--tenant-key", dir, "--as", "eve@evil.test"],
        &msg,
    );
    assert_eq!(run.code, 13, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("eve@evil.test may not view"),
        "{}",
        run.stderr
    );
    let run = sealpost(
        &["decrypt", "--tenant-key", dir, "--as", "carol@contoso.test"],
        &msg,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("carol@contoso.test holds: VIEW\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn tampering_wrong_key_and_expiry_write_nothing() {
    let dir = fixture_dir();
    let dir = dir.to_str().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("clear.eml");
    let out_s = out.to_str().unwrap();

    // One flipped bit in the ciphertext of the bare container.
    let container = rms::extract_container(&protected(None, SystemTime::now()))
        .unwrap()
        .into_owned();
    let mut bad = container.clone();
    let last = bad.len() - 20;
    bad[last] ^= 0x10;
    let run = sealpost(&["decrypt", "--tenant-key", dir, "-o", out_s], &bad);
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert!(
        run.stderr.contains("integrity check failed"),
        "{}",
        run.stderr
    );
    assert!(!out.exists() && run.stdout.is_empty());

    // Another tenant's key.
    let other = tempfile::tempdir().unwrap();
    let run = sealpost(
        &[
            "keys",
            "tenant",
            "new",
            "--dir",
            other.path().to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let other_id = TenantKeys::load_dir(other.path()).unwrap().ids()[0].clone();
    let ours = TenantKeys::load_dir(&fixture_dir()).unwrap().ids()[0].clone();
    let run = sealpost(
        &[
            "decrypt",
            "--tenant-key",
            other.path().to_str().unwrap(),
            "-o",
            out_s,
        ],
        &container,
    );
    assert_eq!(run.code, 11, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "protected with tenant key {ours}, you gave {other_id}"
        )),
        "{}",
        run.stderr
    );
    assert!(!out.exists());

    // Expired a day ago.
    let issued = SystemTime::now() - Duration::from_secs(3 * 86400);
    let expired = protected(Some(Duration::from_secs(2 * 86400)), issued);
    let run = sealpost(&["decrypt", "--tenant-key", dir, "-o", out_s], &expired);
    assert_eq!(run.code, 12, "{}", run.stderr);
    assert!(
        run.stderr.contains("the license expired on 20"),
        "{}",
        run.stderr
    );
    assert!(!out.exists());
    let run = sealpost(
        &[
            "decrypt",
            "--tenant-key",
            dir,
            "--ignore-expiry",
            "-o",
            out_s,
        ],
        &expired,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("opened anyway because of --ignore-expiry"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&out).unwrap(), MESSAGE);

    // Not protected at all; and a protected message given to the S/MIME path.
    let run = sealpost(&["decrypt", "--tenant-key", dir], MESSAGE);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let key =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki/smime/bob@fabrikam.test.key");
    let run = sealpost(&["decrypt", "--key", key.to_str().unwrap()], &expired);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("--tenant-key"), "{}", run.stderr);
}

#[test]
fn tenant_key_commands_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = sealpost(
        &["keys", "tenant", "new", "--dir", d, "--bits", "1024"],
        b"",
    );
    assert_ne!(run.code, 0);
    let first = sealpost(&["keys", "tenant", "new", "--dir", d], b"");
    assert_eq!(first.code, 0, "{}", first.stderr);
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(text.contains("(active)"), "{text}");
    let keys = TenantKeys::load_dir(dir.path()).unwrap();
    let req = |now| {
        license_for(
            &RmsProtect {
                template: "encrypt-only".into(),
                rights: Default::default(),
                expires_after: None,
            },
            "alice@contoso.test",
            &["bob@fabrikam.test".into()],
            None,
            now,
        )
    };
    let before = rms::protect_active(MESSAGE, &keys, req(SystemTime::now())).unwrap();
    let second = sealpost(
        &["keys", "tenant", "new", "--dir", d, "--bits", "3072"],
        b"",
    );
    assert_eq!(second.code, 0, "{}", second.stderr);
    let keys = TenantKeys::load_dir(dir.path()).unwrap();
    let new_id = keys
        .ids()
        .into_iter()
        .find(|i| *i != keys.active().unwrap().id_hex())
        .unwrap();
    let run = sealpost(&["keys", "tenant", "activate", &new_id, "--dir", d], b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let list = sealpost(&["keys", "tenant", "list", "--dir", d], b"");
    let list = String::from_utf8(list.stdout).unwrap();
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&new_id) && l.contains("3072 bits") && l.ends_with("active")),
        "{list}"
    );
    let json = sealpost(&["keys", "tenant", "list", "--dir", d, "--json"], b"");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let active: Vec<&serde_json::Value> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["active"] == true)
        .collect();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
    assert_eq!(active.len(), 1, "{json}");
    assert_eq!(active[0]["id"], new_id.as_str());
    assert_eq!(active[0]["bits"], 3072);
    let keys = TenantKeys::load_dir(dir.path()).unwrap();
    let after = rms::protect_active(MESSAGE, &keys, req(SystemTime::now())).unwrap();
    for msg in [before, after] {
        let run = sealpost(&["decrypt", "--tenant-key", d], &msg);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stdout, MESSAGE);
    }
}

/// A second reader built from docs/protected-message-format.md with OpenSSL alone: the
/// signature verifies as RSA-PSS-SHA256 (salt 32), the content key unwraps with OAEP-SHA256
/// and the content decrypts with AES-256-CBC to the original message.
#[test]
fn openssl_reads_the_documented_format() {
    fn openssl(args: &[&str]) -> std::process::Output {
        Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl must be installed (.ci/run installs it)")
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let container = rms::extract_container(&protected(None, SystemTime::now()))
        .unwrap()
        .into_owned();
    let be = |b: &[u8]| b.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x));
    assert_eq!(&container[..9], b"SEALRMS\0\x01");
    let l = be(&container[41..45]);
    let license = &container[45..45 + l];
    let s = be(&container[45 + l..47 + l]);
    let signature = &container[47 + l..47 + l + s];
    let c = be(&container[47 + l + s..55 + l + s]);
    let ciphertext = &container[55 + l + s..];
    assert_eq!(c, ciphertext.len());
    // The license fields, by tag.
    let mut fields = std::collections::BTreeMap::new();
    let mut i = 0;
    while i < license.len() {
        let n = be(&license[i + 1..i + 5]);
        fields.insert(license[i], license[i + 5..i + 5 + n].to_vec());
        i += 5 + n;
    }
    assert_eq!(fields[&3], [1]);
    std::fs::write(p("license"), license).unwrap();
    std::fs::write(p("sig"), signature).unwrap();
    std::fs::write(p("wrapped"), &fields[&5]).unwrap();
    std::fs::write(p("ct"), ciphertext).unwrap();
    let key = fixture_dir().join(format!("{}.pem", hex_of(&fields[&2])));
    let key = key.to_str().unwrap();
    let out = openssl(&["pkey", "-in", key, "-pubout", "-out", &p("pub.pem")]);
    assert!(out.status.success());
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:32",
        "-verify",
        &p("pub.pem"),
        "-signature",
        &p("sig"),
        &p("license"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = openssl(&[
        "pkeyutl",
        "-decrypt",
        "-inkey",
        key,
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
        "-in",
        &p("wrapped"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 32);
    let out = openssl(&[
        "enc",
        "-d",
        "-aes-256-cbc",
        "-K",
        &hex_of(&out.stdout),
        "-iv",
        &hex_of(&fields[&4]),
        "-in",
        &p("ct"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, MESSAGE);
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_truncated_protected_message_says_it_looks_truncated() {
    let eml = protected(None, SystemTime::now());
    let cut = &eml[..eml.len() * 6 / 10];
    let dir = fixture_dir();
    let run = sealpost(&["decrypt", "--tenant-key", dir.to_str().unwrap()], cut);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("the message looks truncated or damaged"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
}
