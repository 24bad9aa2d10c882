//! The real binary's configuration checks: clear errors naming file, key and problem.

mod support;

use std::process::Command;

use support::domains::{free_port, pki, sealpost, DomainSpec};

#[test]
fn fixtures_pass_check_config() {
    for name in ["contoso", "fabrikam"] {
        let path = format!("{}/fixtures/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let (code, out, err) = sealpost(&["check-config", "--config", &path]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("mx.{name}.test")), "{out}");
    }
}

#[test]
fn missing_key_file_is_named_and_serve_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nhostname = \"mx.a.test\"\ndata_dir = \"d\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [tls]\ncertificate = \"pki/mx.a.test.crt\"\nprivate_key = \"pki/mx.a.test.key\"\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    for cmd in ["check-config", "serve"] {
        let (code, _, err) = sealpost(&[cmd, "--config", p]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(
            err.contains(&format!(
                "{p}: tls.certificate: file not found: pki/mx.a.test.crt"
            )),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn rsa_1024_server_key_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("weak.key");
    let crt = dir.path().join("weak.crt");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=mx.contoso.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port());
    spec.tls = false;
    let path = spec.write(dir.path());
    let text = std::fs::read_to_string(&path).unwrap()
        + &format!(
            "\n[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            crt.display(),
            key.display()
        );
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    for cmd in ["check-config", "serve"] {
        let (code, _, err) = sealpost(&[cmd, "--config", p]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("weak.key"), "{cmd}: {err}");
        assert!(err.contains("2048"), "{cmd}: {err}");
    }
    // The fixture's 2048-bit key with the same config shape is fine.
    assert!(pki().join("mx.contoso.test.key").is_file());
}

#[test]
fn keys_pki_writes_private_keys_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let (code, _, err) = sealpost(&[
        "keys",
        "pki",
        "--out",
        out.to_str().unwrap(),
        "--hosts",
        "mx.x.test",
    ]);
    assert_eq!(code, 0, "{err}");
    for f in ["ca.key", "mx.x.test.key"] {
        let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // openssl agrees the host certificate chains to the CA.
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("mx.x.test.crt"))
        .output()
        .expect("openssl");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn sha1_signed_server_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("sha1.key");
    let crt = dir.path().join("sha1.crt");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-sha1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=mx.contoso.test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port());
    spec.tls = false;
    let path = spec.write(dir.path());
    let text = std::fs::read_to_string(&path).unwrap()
        + &format!(
            "\n[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            crt.display(),
            key.display()
        );
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = sealpost(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("sha1.crt") && err.contains("sha1WithRSAEncryption (weak)"),
        "{err}"
    );
}
