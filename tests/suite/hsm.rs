//! Tenant keys in a real PKCS#11 token (SoftHSM2): `keys tenant new --pkcs11` generates the key
//! on the token, the config loads it, messages are protected (license signed in the token) and
//! opened (content key unwrapped in the token), the licensing decision issues a use license
//! signed in the token that bob opens with his own key; the private key's secret attributes
//! cannot be read out (nor is it listed as extractable by OpenSC's pkcs11-tool); a wrong PIN is a clear error and `serve` does not start.

use crate::support::softhsm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use sealpost::config::Config;
use sealpost::crypto::keys::DecryptKey;
use sealpost::crypto::rms::{self, license_for, TenantKeys, UseLicense};
use sealpost::keys::{Pkcs11Uri, RsaPrivateKey};
use sealpost::licensing::{decide, Policy, ReaderKeySource, Request, RevocationList};
use sealpost::rules::RmsProtect;

use softhsm::{softhsm, SoftHsm, MODULE};

const MESSAGE: &[u8] = b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\n\
Message-ID: <hsm@contoso.test>\r\nSubject: plans\r\n\r\nfor bob only\r\n";
const URL: &str = "https://127.0.0.1:8443";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn sealpost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(args)
        .output()
        .unwrap()
}

/// A config in a fresh directory under the token's temp dir: tenant keys in `tenant/`,
/// `[pkcs11]` with `pin` as the PIN source line.
fn write_config(hsm: &SoftHsm, name: &str, pin: &str) -> PathBuf {
    let dir = hsm.dir().join(name);
    std::fs::create_dir_all(dir.join("tenant")).unwrap();
    let path = dir.join("sealpost.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nhostname = \"mx.contoso.test\"\ndata_dir = \"data\"\n\
             [[domain]]\nname = \"contoso.test\"\nencryption_policy = \"none\"\n\
             [rms]\ntenant_key_dir = \"tenant\"\n\
             [pkcs11]\nmodule = \"{MODULE}\"\n{pin}\n"
        ),
    )
    .unwrap();
    path
}

fn request(now: SystemTime) -> rms::LicenseRequest {
    let action = RmsProtect {
        template: "do-not-forward".into(),
        rights: Default::default(),
        expires_after: None,
    };
    license_for(
        &action,
        "alice@contoso.test",
        &["bob@fabrikam.test".into()],
        Some("<hsm@contoso.test>"),
        now,
    )
    .with_licensing_url(Some(URL.into()))
}

#[test]
fn a_tenant_key_in_the_token_protects_opens_and_issues_use_licenses() {
    let Some(hsm) = softhsm() else { return };
    softhsm::write_private(&hsm.dir().join("contoso.pin"), "1234\n");
    let pin_line = format!("pin_file = \"{}\"", hsm.dir().join("contoso.pin").display());
    let config_path = write_config(&hsm, "contoso", &pin_line);
    let config_arg = config_path.to_str().unwrap();
    let uri = "pkcs11:token=sealpost;object=contoso-tenant";

    let new = sealpost(&[
        "keys", "tenant", "new", "--config", config_arg, "--pkcs11", uri,
    ]);
    let stdout = String::from_utf8_lossy(&new.stdout);
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    assert!(
        stdout.contains(&format!("in {uri}")) && stdout.contains("(active)"),
        "{stdout}"
    );
    assert!(stdout.contains("-----BEGIN PUBLIC KEY-----"), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
    // The same object name again is refused rather than shadowing the first key.
    let again = sealpost(&[
        "keys", "tenant", "new", "--config", config_arg, "--pkcs11", uri,
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already names an object"));

    let list = sealpost(&["keys", "tenant", "list", "--config", config_arg]);
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.contains(uri) && list.contains("2048 bits") && list.ends_with("active\n"));
    // Only the reference is on disk: no private key material in the tenant directory.
    for entry in std::fs::read_dir(config_path.parent().unwrap().join("tenant")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }

    let config = Config::load(&config_path, None).unwrap();
    let keys = TenantKeys::load_dir_with(
        config.rms_tenant_key_dir.as_deref().unwrap(),
        config.pkcs11.as_ref(),
    )
    .unwrap();
    let tenant = keys.active().unwrap();
    assert_eq!(tenant.location(), uri);
    assert_eq!(tenant.bits(), 2048);

    // Protect (RSA-PSS signature made in the token) and open (RSA-OAEP unwrap in the token).
    let now = SystemTime::now();
    let protected = rms::protect(MESSAGE, tenant, request(now)).unwrap();
    let (license, plain) = rms::unprotect(&protected, &keys, now, false).unwrap();
    assert_eq!(plain, MESSAGE);
    assert_eq!(license.tenant_key_hex(), tenant.id_hex());

    // The licensing decision: the token unwraps the content key and signs bob's use license.
    let container = rms::extract_container(&protected).unwrap();
    let framed = rms::parse_container(&container).unwrap();
    let bob_cert = std::fs::read(fixtures().join("pki/smime/bob@fabrikam.test.crt")).unwrap();
    let use_license = decide(
        &Request {
            license: framed.license,
            signature: framed.signature,
            principal: "bob@fabrikam.test",
            reader: ReaderKeySource::Certificate(&bob_cert),
        },
        &Policy {
            tenant_keys: &keys,
            licensing_url: URL,
            validity: Duration::from_secs(86400),
        },
        &RevocationList::default(),
        now,
    )
    .unwrap();
    let use_license = UseLicense::decode(&use_license.encode()).unwrap();
    let bob =
        DecryptKey::from_pem(&fixtures().join("pki/smime/bob@fabrikam.test.key"), None).unwrap();
    // bob holds only the tenant's public key (from the reference file), never the token.
    let reference = rms::read_reference(
        &config
            .rms_tenant_key_dir
            .unwrap()
            .join(format!("{}.pkcs11", tenant.id_hex())),
    )
    .unwrap();
    let (_, plain) =
        rms::unprotect_with_use_license(&protected, &use_license, &bob, &reference.public, now)
            .unwrap();
    assert_eq!(plain, MESSAGE);
}

#[test]
fn the_private_key_cannot_be_read_out_of_the_token() {
    let Some(hsm) = softhsm() else { return };
    let uri = Pkcs11Uri::parse("pkcs11:token=sealpost;object=sealed-away").unwrap();
    let small = RsaPrivateKey::generate_in_token(&hsm.config(), &uri, 1024).unwrap_err();
    assert!(small.to_string().contains("1024-bit"), "{small}");
    let key = RsaPrivateKey::generate_in_token(&hsm.config(), &uri, 2048).unwrap();
    let refused = key.token_secret_attributes_refused().unwrap().unwrap();
    assert_eq!(refused.len(), 4);
    for (attribute, was_refused) in &refused {
        assert!(was_refused, "the token reveals {attribute}");
    }
    // The key still works: a signature verifies with its public key.
    let spki = key.public_spki_der().unwrap();
    let public = rms::TenantPublicKey::from_spki_der(&spki).unwrap();
    let signature = key.sign_pss_sha256(b"data").unwrap();
    assert!(public.verifies(b"data", &signature));
    assert!(!public.verifies(b"other", &signature));

    // From outside, with OpenSC's pkcs11-tool: the public key reads out, the private one not.
    if Command::new("pkcs11-tool").arg("--help").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "pkcs11-tool (opensc) is missing"
        );
        eprintln!("pkcs11-tool (opensc) missing: skipping the outside check");
        return;
    }
    let listed = Command::new("pkcs11-tool")
        .args(["--module", MODULE, "--token-label", "sealpost", "--login"])
        .args(["--pin", softhsm::PIN, "--list-objects", "--type", "privkey"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let ours = listed
        .split("Private Key Object")
        .find(|o| o.contains("label:      sealed-away"))
        .unwrap_or_else(|| panic!("pkcs11-tool does not list the key: {listed}"));
    let access = ours.lines().find(|l| l.contains("Access:")).unwrap_or("");
    for flag in ["always sensitive", "never extractable"] {
        assert!(access.contains(flag), "{ours}");
    }
}

#[test]
fn a_wrong_pin_is_a_clear_error_and_serve_does_not_start() {
    let Some(hsm) = softhsm() else { return };
    // A key made with the right PIN, then a config whose PIN (from the environment) is wrong.
    let pin_line = format!("pin_file = \"{}\"", hsm.pin_file().display());
    let good = write_config(&hsm, "fabrikam", &pin_line);
    let new = sealpost(&[
        "keys",
        "tenant",
        "new",
        "--config",
        good.to_str().unwrap(),
        "--pkcs11",
        "pkcs11:token=sealpost;object=fabrikam-tenant",
    ]);
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace(&pin_line, "pin_env = \"SEALPOST_TEST_PIN\"");
    std::fs::write(&good, text).unwrap();
    for args in [
        vec!["check-config", "--config", good.to_str().unwrap()],
        vec!["serve", "--config", good.to_str().unwrap()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(&args)
            .env("SEALPOST_TEST_PIN", "987654")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            !out.status.success(),
            "{args:?} accepted a wrong PIN: {all}"
        );
        assert!(!all.contains("panicked"), "{all}");
        assert!(all.contains("rms.tenant_key_dir"), "{all}");
        assert!(
            all.contains("token \"sealpost\"") && all.contains("PIN was refused"),
            "{all}"
        );
        assert!(!all.contains("987654"), "the PIN was printed: {all}");
    }
    // No PIN at all: the config names the variable, and the server does not start.
    let out = sealpost(&["check-config", "--config", good.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("pkcs11.pin_env") && stderr.contains("SEALPOST_TEST_PIN"),
        "{stderr}"
    );
}
