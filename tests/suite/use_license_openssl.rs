//! A use license's signature checks with the openssl command line (the documented command), and
//! the licensing decision refuses certificates openssl makes with small or non-RSA keys.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use sealpost::crypto::rms::{self, license_for, TenantKeys, UseLicense};
use sealpost::licensing::{decide, Policy, ReaderKeySource, Request, RevocationList};
use sealpost::rules::RmsProtect;

const MSG: &[u8] =
    b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\nSubject: s\r\n\r\nbody\r\n";
const URL: &str = "https://127.0.0.1:8443";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed (.ci/run installs it)")
}

fn ask(keys: &TenantKeys, certificate: &[u8]) -> Result<UseLicense, sealpost::licensing::Refusal> {
    let action = RmsProtect {
        template: "do-not-forward".into(),
        rights: Default::default(),
        expires_after: None,
    };
    let now = SystemTime::now();
    let req = license_for(
        &action,
        "alice@contoso.test",
        &["bob@fabrikam.test".into()],
        None,
        now,
    )
    .with_licensing_url(Some(URL.into()));
    let container = rms::seal_container(MSG, keys.active().unwrap(), &req).unwrap();
    let framed = rms::parse_container(&container).unwrap();
    let request = Request {
        license: framed.license,
        signature: framed.signature,
        principal: "bob@fabrikam.test",
        reader: ReaderKeySource::Certificate(certificate),
    };
    let policy = Policy {
        tenant_keys: keys,
        licensing_url: URL,
        validity: Duration::from_secs(30 * 86400),
    };
    decide(&request, &policy, &RevocationList::default(), now)
}

#[test]
fn openssl_verifies_the_use_license_signature() {
    let keys = TenantKeys::load_dir(&fixtures().join("keys/tenant")).unwrap();
    let bob = std::fs::read(fixtures().join("pki/smime/bob@fabrikam.test.crt")).unwrap();
    let ul = UseLicense::decode(&ask(&keys, &bob).unwrap().encode()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    std::fs::write(
        p("tenant.pub.pem"),
        keys.active().unwrap().public().to_pem(),
    )
    .unwrap();
    std::fs::write(p("use-license.signed"), ul.signed()).unwrap();
    std::fs::write(p("use-license.sig"), ul.signature()).unwrap();
    let verify = |data: &str| {
        openssl(&[
            "dgst",
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
            "-sigopt",
            "rsa_mgf1_md:sha256",
            "-verify",
            &p("tenant.pub.pem"),
            "-signature",
            &p("use-license.sig"),
            &p(data),
        ])
    };
    let out = verify("use-license.signed");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The key id is SHA-256 of the public key's DER, as for the tenant key files.
    let der = openssl(&[
        "pkey",
        "-pubin",
        "-in",
        &p("tenant.pub.pem"),
        "-outform",
        "DER",
    ]);
    assert!(der.status.success());
    let id = sha2_hex(&der.stdout);
    assert_eq!(id, keys.active().unwrap().id_hex());
    // One flipped byte anywhere in the signed bytes: openssl refuses.
    for i in [0, 8, 20, ul.signed().len() / 2, ul.signed().len() - 1] {
        let mut bad = ul.signed().to_vec();
        bad[i] ^= 0x01;
        std::fs::write(p("bad.signed"), &bad).unwrap();
        let out = verify("bad.signed");
        assert!(!out.status.success(), "byte {i} accepted");
        assert!(String::from_utf8_lossy(&out.stdout)
            .to_lowercase()
            .contains("verification failure"));
    }
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn small_and_non_rsa_reader_certificates_are_refused() {
    let keys = TenantKeys::load_dir(&fixtures().join("keys/tenant")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let params = openssl(&["ecparam", "-name", "prime256v1", "-out", &p("ec.param")]);
    assert!(params.status.success());
    for (name, new_key, expect) in [
        ("rsa1024", "rsa:1024".to_string(), "1024"),
        ("ec", format!("ec:{}", p("ec.param")), "not an RSA key"),
    ] {
        let (key, crt) = (p(&format!("{name}.key")), p(&format!("{name}.crt")));
        let out = openssl(&[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=bob@fabrikam.test",
            "-newkey",
            &new_key,
            "-keyout",
            &key,
            "-out",
            &crt,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let refusal = ask(&keys, &std::fs::read(&crt).unwrap()).unwrap_err();
        assert_eq!(refusal.code(), "bad-certificate", "{name}: {refusal}");
        assert!(refusal.to_string().contains(expect), "{name}: {refusal}");
    }
}
