//! `serve` runs the licensing service when `[rms.licensing] listen` is configured: contoso's
//! server answers bob (proven by his S/MIME certificate, through the CA trusted for
//! fabrikam.test) with a use license for a message protected under contoso's tenant key, and
//! refuses carol of contoso.test, for which no CA is trusted; `sealpost rms revoke` takes effect
//! at the running service from the next request on, and `--unrevoke` takes it back. A
//! configuration whose service cannot authenticate anybody does not start.

use crate::support;
use crate::support::https;

use std::path::Path;
use std::time::SystemTime;

use base64::Engine;
use sealpost::crypto::rms::{
    extract_container, license_for, parse_container, protect, TenantKeys, UseLicense,
};
use sealpost::rules::RmsProtect;
use support::domains::{free_port, load, DomainSpec};

fn tenant_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/keys/tenant")
        .display()
        .to_string()
}

fn licensing(port: u16, trust: &str) -> String {
    format!(
        "[rms]\ntenant_key_dir = \"{}\"\n\n[rms.licensing]\nurl = \"https://127.0.0.1:{port}\"\n\
         listen = \"127.0.0.1:{port}\"\n{trust}",
        tenant_dir()
    )
}

const TRUST_FABRIKAM: &str =
    "\n[[rms.licensing.trust]]\ndomains = [\"fabrikam.test\"]\nca_file = \"{pki}/ca.crt\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_readers_with_use_licenses() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
        .toml(&licensing(port, TRUST_FABRIKAM));
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .expect("start contoso with its licensing service");
    assert_eq!(server.licensing_addr().map(|a| a.port()), Some(port));

    let keys = TenantKeys::load_dir(Path::new(&tenant_dir())).unwrap();
    let action = RmsProtect {
        template: "do-not-forward".into(),
        rights: Default::default(),
        expires_after: None,
    };
    let request = license_for(
        &action,
        "alice@contoso.test",
        &["bob@fabrikam.test".into(), "carol@contoso.test".into()],
        Some("<serve@contoso.test>"),
        SystemTime::now(),
    )
    .with_licensing_url(Some(format!("https://127.0.0.1:{port}")));
    let message = protect(
        b"Subject: s\r\n\r\nbody\r\n",
        keys.active().unwrap(),
        request,
    )
    .unwrap();
    let container = extract_container(&message).unwrap();
    let framed = parse_container(&container).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({
        "license": b64.encode(framed.license),
        "signature": b64.encode(framed.signature),
    })
    .to_string();

    let config_path = dir.path().join("contoso.toml");
    let (bob, carol) = tokio::task::spawn_blocking(move || {
        let ask = |who| https::request(port, Some(who), "POST", "/v1/use-license", "", &body);
        let answers = (ask("bob@fabrikam.test"), ask("carol@contoso.test"));
        // `sealpost rms revoke`: the running service refuses from the next request on.
        let rms = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
                .arg("rms")
                .args(args)
                .arg("--config")
                .arg(&config_path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let said = rms(&["revoke", "--message-id", "<serve@contoso.test>"]);
        assert!(
            said.starts_with("<serve@contoso.test>: revoked on "),
            "{said}"
        );
        assert!(rms(&["revocations"]).contains("<serve@contoso.test>"));
        let refused = ask("bob@fabrikam.test");
        assert_eq!(refused.status, "HTTP/1.1 403 Forbidden", "{}", refused.body);
        assert_eq!(refused.body["error"], "revoked");
        let said = rms(&[
            "revoke",
            "--unrevoke",
            "--message-id",
            "<serve@contoso.test>",
        ]);
        assert!(said.contains("revocation taken back"), "{said}");
        assert_eq!(ask("bob@fabrikam.test").status, "HTTP/1.1 200 OK");
        answers
    })
    .await
    .unwrap();
    assert_eq!(bob.status, "HTTP/1.1 200 OK", "{}", bob.body);
    assert!(bob.version.starts_with("TLSv1."), "{}", bob.version);
    let use_license = UseLicense::decode(
        &b64.decode(bob.body["use_license"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    use_license.verify_with(&keys).unwrap();
    assert_eq!(use_license.principal, "bob@fabrikam.test");
    // carol is in the license, but no CA is trusted to name readers of contoso.test.
    assert_eq!(carol.status, "HTTP/1.1 401 Unauthorized", "{}", carol.body);
    assert!(
        carol.body["reason"]
            .as_str()
            .unwrap()
            .contains("domain of carol@contoso.test"),
        "{}",
        carol.body
    );
    server.shutdown().await;

    // The access log: every request, in the store's audit log, shown by `rms access-log`.
    let config_path = dir.path().join("contoso.toml");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .output()
            .unwrap()
    };
    let out = run(&[
        "rms",
        "access-log",
        "--json",
        "--message-id",
        "<serve@contoso.test>",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap().to_string();
            (s("outcome"), s("code"), s("principal"))
        })
        .collect();
    let row = |o: &str, c: &str, p: &str| (o.to_string(), c.to_string(), p.to_string());
    assert_eq!(
        summary,
        [
            row("granted", "", "bob@fabrikam.test"),
            row("refused", "unauthenticated", ""),
            row("refused", "revoked", "bob@fabrikam.test"),
            row("granted", "", "bob@fabrikam.test"),
        ]
    );
    assert!(lines
        .iter()
        .all(|l| l["time"].as_str().is_some_and(|t| t.starts_with("20"))));
    let other = run(&["rms", "access-log", "--message-id", "<other@contoso.test>"]);
    assert!(
        other.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&other.stdout)
    );
    assert!(run(&["store", "audit", "verify"]).status.success());
    // An edited access log is detected by the audit verification.
    let audit = load(&config_path).store.keystore_dir.join("audit.log");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(
        &audit,
        text.replacen("bob@fabrikam.test", "eve@fabrikam.test", 1),
    )
    .unwrap();
    let verify = run(&["store", "audit", "verify"]);
    assert!(!verify.status.success());
    let said = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(said.contains("edited"), "{said}");
}

#[test]
fn a_service_that_could_authenticate_nobody_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
        .toml(&licensing(free_port(), ""));
    let path = spec.write(dir.path());
    let e = sealpost::config::Config::load(&path, None).unwrap_err();
    assert_eq!(e.key, "rms.licensing.trust");
    assert!(e.problem.contains("nobody could get a use license"), "{e}");
    assert!(e.to_string().contains("contoso.toml"), "{e}");
}

#[test]
fn password_readers_alone_can_run_the_service_unless_passwords_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let hash = sealpost::auth::hash_password("carol's").unwrap();
    let user = format!("\n[[user]]\nname = \"carol@contoso.test\"\npassword_hash = \"{hash}\"\n");
    let spec = DomainSpec::new("contoso", &["carol@contoso.test"], free_port())
        .toml(&(licensing(free_port(), "") + &user));
    let config = sealpost::config::Config::load(&spec.write(dir.path()), None).unwrap();
    let service = config.rms_licensing.unwrap().service.unwrap();
    assert!(service.passwords && service.trust.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let spec = DomainSpec::new("contoso", &["carol@contoso.test"], free_port())
        .toml(&(licensing(free_port(), "passwords = false\n") + &user));
    let e = sealpost::config::Config::load(&spec.write(dir.path()), None).unwrap_err();
    assert_eq!(e.key, "rms.licensing.trust");
    assert!(
        e.problem.contains("no [[user]] may use its password"),
        "{e}"
    );
}
