//! The checks on S/MIME signing keys when the configuration loads (and so on every reload):
//! a missing directory, a key readable by others, RSA under 2048 bits, a certificate that does
//! not belong to its key, a key without its certificate, and a signing rule without keys, each
//! a clear error naming the configuration file, the key `smime.signing_dir` and the file.

use crate::support::smime_files;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use smime_files::{fixtures, openssl, private_copy, smime};

use sealpost::crypto::smime::SigningKeys;

const CONFIG: &str = r#"
[server]
hostname = "mx.contoso.test"
data_dir = "data"
[[domain]]
name = "contoso.test"
encryption_policy = "none"
[[mailbox]]
address = "alice@contoso.test"
[smime]
signing_dir = "signing"
"#;

/// Validates CONFIG in `dir`; the error as (key, problem).
fn check_config(dir: &Path, extra: &str) -> Result<sealpost::config::Config, (String, String)> {
    let path = dir.join("sealpost.toml");
    let text = format!("{CONFIG}{extra}");
    std::fs::write(&path, &text).unwrap();
    sealpost::config::Config::from_toml(&path, &text, None).map_err(|e| {
        assert_eq!(e.file, path, "the error names the configuration file");
        (e.key, e.problem)
    })
}

#[test]
fn signing_keys_are_checked_when_the_configuration_loads() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("signing");

    // No such directory.
    let (key, problem) = check_config(dir.path(), "").unwrap_err();
    assert_eq!(key, "smime.signing_dir");
    assert_eq!(problem, "not a directory: signing");
    std::fs::create_dir(&keys).unwrap();
    let (key, problem) = check_config(dir.path(), "").unwrap_err();
    assert_eq!(key, "smime.signing_dir");
    assert!(problem.contains("no signing keys"), "{problem}");

    // A sender's own key and a domain's key.
    std::fs::copy(
        smime("alice@contoso.test.crt"),
        keys.join("alice@contoso.test.crt"),
    )
    .unwrap();
    private_copy(
        &keys,
        &smime("alice@contoso.test.key"),
        "alice@contoso.test.key",
    );
    std::fs::copy(
        smime("carol@contoso.test.crt"),
        keys.join("contoso.test.pem"),
    )
    .unwrap();
    private_copy(&keys, &smime("carol@contoso.test.key"), "contoso.test.key");
    let config = check_config(dir.path(), "").unwrap();
    let loaded = &config.smime_signing.as_ref().unwrap().keys;
    assert_eq!(loaded.len(), 2);
    assert!(loaded
        .find("Alice@Contoso.test")
        .unwrap()
        .subject()
        .contains("alice"));
    assert!(loaded
        .find("zed@contoso.test")
        .unwrap()
        .subject()
        .contains("carol"));
    assert!(loaded.find("bob@fabrikam.test").is_none());
    assert!(SigningKeys::load_dir(&keys, SystemTime::now()).is_ok());

    // A key readable by others is refused, naming the file.
    let alice_key = keys.join("alice@contoso.test.key");
    std::fs::set_permissions(&alice_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (key, problem) = check_config(dir.path(), "").unwrap_err();
    assert_eq!(key, "smime.signing_dir");
    assert!(
        problem.contains(&alice_key.display().to_string())
            && problem.contains("mode 644")
            && problem.contains("chmod 600"),
        "{problem}"
    );
    std::fs::set_permissions(&alice_key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A certificate that belongs to another key.
    std::fs::copy(
        smime("bob@fabrikam.test.crt"),
        keys.join("contoso.test.pem"),
    )
    .unwrap();
    let (key, problem) = check_config(dir.path(), "").unwrap_err();
    assert_eq!(key, "smime.signing_dir");
    assert!(
        problem.contains("contoso.test.pem") && problem.contains("does not belong to the key"),
        "{problem}"
    );
    std::fs::remove_file(keys.join("contoso.test.pem")).unwrap();

    // A key without its certificate.
    let (_, problem) = check_config(dir.path(), "").unwrap_err();
    assert!(
        problem.contains("contoso.test.key") && problem.contains("no certificate"),
        "{problem}"
    );
    std::fs::remove_file(keys.join("contoso.test.key")).unwrap();

    // A 1024-bit RSA key, with a certificate from the fixture CA.
    let weak_key = keys.join("weak@contoso.test.key");
    let (ok, _, err) = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            weak_key.to_str().unwrap(),
        ],
        b"",
    );
    assert!(ok, "{err}");
    std::fs::set_permissions(&weak_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, csr, err) = openssl(
        &[
            "req",
            "-new",
            "-key",
            weak_key.to_str().unwrap(),
            "-subj",
            "/CN=weak@contoso.test",
        ],
        b"",
    );
    assert!(ok, "{err}");
    let ca_crt = fixtures().join("ca.crt");
    let ca_key = fixtures().join("ca.key");
    let ext = dir.path().join("ext.cnf");
    std::fs::write(&ext, "subjectAltName=email:weak@contoso.test\n").unwrap();
    let (ok, _, err) = openssl(
        &[
            "x509",
            "-req",
            "-CA",
            ca_crt.to_str().unwrap(),
            "-CAkey",
            ca_key.to_str().unwrap(),
            "-set_serial",
            "7",
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            keys.join("weak@contoso.test.crt").to_str().unwrap(),
        ],
        &csr,
    );
    assert!(ok, "{err}");
    let (key, problem) = check_config(dir.path(), "").unwrap_err();
    assert_eq!(key, "smime.signing_dir");
    assert!(
        problem.contains(&weak_key.display().to_string()) && problem.contains("1024-bit"),
        "{problem}"
    );
    std::fs::remove_file(&weak_key).unwrap();
    std::fs::remove_file(keys.join("weak@contoso.test.crt")).unwrap();

    // A rule that signs needs a signing_dir.
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("sign.toml"),
        "name = \"sign\"\npriority = 1\n[[actions]]\ntype = \"smime_sign\"\n",
    )
    .unwrap();
    assert!(check_config(dir.path(), "[rules]\ndir = \"rules\"\n").is_ok());
    let path = dir.path().join("sealpost.toml");
    let text = CONFIG.replace(
        "[smime]\nsigning_dir = \"signing\"\n",
        "[rules]\ndir = \"rules\"\n",
    );
    let e = sealpost::config::Config::from_toml(&path, &text, None).unwrap_err();
    assert_eq!(e.key, "rules.dir");
    assert!(
        e.problem.contains("there is no [smime] signing_dir"),
        "{}",
        e.problem
    );
}
