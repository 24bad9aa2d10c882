//! `sealpost decrypt` through the real binary: success to a file and to standard output, and
//! each failure with its own message and exit code, never writing the output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sealpost::crypto::smime::{encrypt_message, ContentAlgorithm, RecipientCert, SmimeOptions};

fn smime(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/pki/smime")
        .join(file)
        .display()
        .to_string()
}

const MESSAGE: &[u8] = b"From: alice@contoso.test\r\nTo: bob@fabrikam.test, dave@fabrikam.test\r\n\
Subject: [secure] plans\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
The plans are attached in spirit.\r\n";

fn sealed(algorithm: ContentAlgorithm) -> Vec<u8> {
    let certs: Vec<RecipientCert> = ["bob@fabrikam.test", "dave@fabrikam.test"]
        .iter()
        .map(|a| RecipientCert::from_pem_file(Path::new(&smime(&format!("{a}.crt")))).unwrap())
        .collect();
    let opts = SmimeOptions {
        algorithm,
        ..SmimeOptions::default()
    };
    encrypt_message(MESSAGE, &certs, &opts).unwrap()
}

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

fn decrypt(args: &[&str], stdin: &[u8]) -> Run {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .arg("decrypt")
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

/// A file in a fresh directory, and the `--out` path beside it.
struct Case {
    _dir: tempfile::TempDir,
    input: PathBuf,
    out: PathBuf,
}

fn case(bytes: &[u8]) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.eml");
    std::fs::write(&input, bytes).unwrap();
    let out = dir.path().join("out.eml");
    Case {
        _dir: dir,
        input,
        out,
    }
}

/// Runs a failing decryption to `--out` and checks code, message and that nothing was written.
fn fails(bytes: &[u8], key_args: &[&str], code: i32, says: &str) -> String {
    let c = case(bytes);
    let mut args = vec![c.input.to_str().unwrap(), "--out", c.out.to_str().unwrap()];
    args.extend_from_slice(key_args);
    let run = decrypt(&args, b"");
    assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
    assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(!c.out.exists(), "{args:?} wrote output");
    let leftovers = std::fs::read_dir(c.input.parent().unwrap())
        .unwrap()
        .count();
    assert_eq!(leftovers, 1, "temporary files left behind");
    run.stderr
}

fn bob_key() -> String {
    smime("bob@fabrikam.test.key")
}

#[test]
fn decrypts_to_a_file_and_to_standard_output() {
    let c = case(&sealed(ContentAlgorithm::Aes256Cbc));
    let key = bob_key();
    let run = decrypt(
        &[
            c.input.to_str().unwrap(),
            "--key",
            &key,
            "--out",
            c.out.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(std::fs::read(&c.out).unwrap(), MESSAGE);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&c.out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let dave = smime("dave@fabrikam.test.key");
    let dave_crt = smime("dave@fabrikam.test.crt");
    let run = decrypt(
        &["-", "--key", &dave, "--cert", &dave_crt],
        &sealed(ContentAlgorithm::Aes256Gcm),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, MESSAGE);
}

#[test]
fn a_flipped_byte_is_reported_as_altered() {
    let mut msg = sealed(ContentAlgorithm::Aes256Gcm);
    // Change one base64 character in the ciphertext: 60 characters from the end is before the
    // 16-byte MAC (24 characters) and its header, inside the last ciphertext bytes.
    let at = msg.len() - 60;
    let at = at
        + msg[at..]
            .iter()
            .position(|b| b.is_ascii_alphanumeric())
            .unwrap();
    msg[at] = if msg[at] == b'A' { b'B' } else { b'A' };
    let crt = smime("bob@fabrikam.test.crt");
    fails(&msg, &["--key", &bob_key(), "--cert", &crt], 6, "altered");
    // Without the certificate a damaged message and a wrong key cannot be told apart.
    fails(&msg, &["--key", &bob_key()], 5, "does not open");
}

#[test]
fn a_truncated_file_is_reported_as_corrupted() {
    let msg = sealed(ContentAlgorithm::Aes256Cbc);
    let e = fails(
        &msg[..msg.len() * 2 / 3],
        &["--key", &bob_key()],
        7,
        "corrupted or truncated",
    );
    assert!(e.starts_with("sealpost decrypt: "), "{e}");
}

#[test]
fn the_wrong_key_is_reported() {
    let alice = smime("alice@contoso.test.key");
    fails(
        &sealed(ContentAlgorithm::Aes256Cbc),
        &["--key", &alice],
        5,
        "this key does not open the message",
    );
}

#[test]
fn a_message_for_others_lists_them() {
    let alice = smime("alice@contoso.test.key");
    let alice_crt = smime("alice@contoso.test.crt");
    let e = fails(
        &sealed(ContentAlgorithm::Aes256Cbc),
        &["--key", &alice, "--cert", &alice_crt],
        4,
        "not encrypted for this key; it is for: ",
    );
    assert_eq!(
        e.matches("issuer \"O=sealpost fixtures,CN=sealpost test CA\" serial ")
            .count(),
        2,
        "{e}"
    );
}

#[test]
fn a_plain_message_is_not_encrypted() {
    fails(
        MESSAGE,
        &["--key", &bob_key()],
        3,
        "not an S/MIME encrypted message",
    );
}

#[test]
fn unsupported_algorithms_and_unusable_keys_have_their_own_codes() {
    // 3DES content, made by OpenSSL.
    let des = Command::new("openssl")
        .args(["cms", "-encrypt", "-des3", "-in", "/dev/null"])
        .arg(smime("bob@fabrikam.test.crt"))
        .output()
        .expect("openssl must be installed");
    assert!(des.status.success());
    fails(&des.stdout, &["--key", &bob_key()], 8, "3DES");

    // A certificate that is not the key's.
    let alice_crt = smime("alice@contoso.test.crt");
    fails(
        &sealed(ContentAlgorithm::Aes256Cbc),
        &["--key", &bob_key(), "--cert", &alice_crt],
        9,
        "does not belong to this key",
    );
    fails(
        &sealed(ContentAlgorithm::Aes256Cbc),
        &["--key", "/nonexistent.key"],
        9,
        "/nonexistent.key",
    );
}

#[test]
fn pkcs12_files_from_openssl_open_with_their_password() {
    let dir = tempfile::tempdir().unwrap();
    let p12 = dir.path().join("bob.p12");
    let legacy = dir.path().join("legacy.p12");
    let pw = dir.path().join("pw.txt");
    let wrong = dir.path().join("wrong.txt");
    std::fs::write(&pw, "correct horse\n").unwrap();
    std::fs::write(&wrong, "battery staple\n").unwrap();
    let export = |out: &Path, extra: &[&str]| {
        let status = Command::new("openssl")
            .args([
                "pkcs12",
                "-export",
                "-passout",
                "pass:correct horse",
                "-inkey",
            ])
            .arg(smime("bob@fabrikam.test.key"))
            .arg("-in")
            .arg(smime("bob@fabrikam.test.crt"))
            .arg("-out")
            .arg(out)
            .args(extra)
            .status()
            .unwrap();
        assert!(status.success());
    };
    export(&p12, &[]);
    export(
        &legacy,
        &[
            "-keypbe",
            "PBE-SHA1-3DES",
            "-certpbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
        ],
    );
    let msg = sealed(ContentAlgorithm::Aes256Gcm);
    let (p12s, pws, wrongs) = (
        p12.to_str().unwrap(),
        pw.to_str().unwrap(),
        wrong.to_str().unwrap(),
    );
    let run = decrypt(&["--pkcs12", p12s, "--password-file", pws], &msg);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, MESSAGE);
    fails(
        &msg,
        &["--pkcs12", p12s, "--password-file", wrongs],
        9,
        "wrong PKCS#12 password",
    );
    fails(
        &msg,
        &["--pkcs12", legacy.to_str().unwrap(), "--password-file", pws],
        8,
        "legacy PKCS#12",
    );
    // The certificate inside the PKCS#12 file identifies the key: a message for others says so.
    let for_alice = {
        let alice =
            RecipientCert::from_pem_file(Path::new(&smime("alice@contoso.test.crt"))).unwrap();
        encrypt_message(MESSAGE, &[alice], &SmimeOptions::default()).unwrap()
    };
    fails(
        &for_alice,
        &["--pkcs12", p12s, "--password-file", pws],
        4,
        "it is for",
    );
}

#[test]
fn usage_and_help() {
    let run = decrypt(&["--help"], b"");
    assert_eq!(run.code, 0);
    let help = String::from_utf8_lossy(&run.stdout);
    for part in [
        "EXIT STATUS",
        "--pkcs12",
        "--password-file",
        "RFC 3218",
        "EXAMPLES",
        "--trust",
        "SIGNATURES",
        " 17  bad signature",
    ] {
        assert!(help.contains(part), "help lacks {part}: {help}");
    }
    // A key is needed for an encrypted message (a signed-only one is checked without).
    let run = decrypt(&[], &sealed(ContentAlgorithm::Aes256Cbc));
    assert_eq!(run.code, 2, "no key is a usage error: {}", run.stderr);
    assert!(run.stderr.contains("--key"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let run = decrypt(&["/nonexistent/in.eml", "--key", &bob_key()], b"");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("/nonexistent/in.eml"), "{}", run.stderr);
}
