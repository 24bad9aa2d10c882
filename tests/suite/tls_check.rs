//! `sealpost tls-check` against real servers: a verified partner, a wrong name, plaintext only;
//! and `--domain`: the policy delivery applies (DANE through NSD's signed zones, or
//! opportunistic for an unsigned zone) and its outcome.

use crate::support;

use std::path::Path;

use support::dane::{contoso_config, fabrikam};
use support::dnssec::{tlsa_for_certificate, SignedZones};
use support::domains::{free_port, load, pki, sealpost, DomainSpec};
use support::peers::plaintext_peer;
use support::policy_host::PolicyHost;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_version_cipher_chain_and_verification() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let spec = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], port);
    let server = sealpost::app::start(load(&spec.write(dir.path())))
        .await
        .unwrap();
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki/ca.crt");
    let ca = ca.to_str().unwrap().to_string();
    let target = format!("127.0.0.1:{port}");
    let (code, out, err) = tokio::task::spawn_blocking({
        let (t, ca) = (target.clone(), ca.clone());
        move || {
            sealpost(&[
                "tls-check",
                &t,
                "--starttls",
                "--ca",
                &ca,
                "--name",
                "mx.fabrikam.test",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "STARTTLS:      offered",
        "TLS 1.3:       accepted",
        "TLS 1.2:       accepted",
        "negotiated:    TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (forward secrecy: yes)",
        "key:         RSA 2048 bits",
        "names:       mx.fabrikam.test",
        "verification:  verified mx.fabrikam.test via ca.crt",
        "grade:         A",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    // Wrong name: still encrypted and strong, but not verified.
    let (code, out, _) = tokio::task::spawn_blocking({
        let (t, ca) = (target.clone(), ca.clone());
        move || {
            sealpost(&[
                "tls-check",
                &t,
                "--starttls",
                "--ca",
                &ca,
                "--name",
                "mx.contoso.test",
                "--json",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["grade"], "B");
    assert_eq!(json["verified"], false);
    assert_eq!(
        json["verification"],
        "not verified: peer certificate does not name mx.contoso.test"
    );
    assert_eq!(json["chain"][0]["rsa_bits"], 2048);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn says_when_starttls_is_not_offered() {
    let (port, _) = plaintext_peer();
    let target = format!("127.0.0.1:{port}");
    let (code, out, _) =
        tokio::task::spawn_blocking(move || sealpost(&["tls-check", &target, "--starttls"]))
            .await
            .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("STARTTLS:      NOT offered"), "{out}");
    assert!(
        out.contains("grade:         F") && out.contains("STARTTLS is not offered"),
        "{out}"
    );
}

/// `sealpost tls-check --domain DOMAIN --config FILE [--json]`, off the async runtime.
async fn tls_check_domain(domain: &str, config: &Path, json: bool) -> (i32, String, String) {
    let (domain, config) = (domain.to_string(), config.display().to_string());
    tokio::task::spawn_blocking(move || {
        let mut args = vec!["tls-check", "--domain", &domain, "--config", &config];
        if json {
            args.push("--json");
        }
        sealpost(&args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_mode_names_dane_and_its_outcome() {
    let tlsa = tlsa_for_certificate(&pki().join("mx.fabrikam.test.crt"), 3, 1, 1);
    let records = format!("ee MX 10 mx-ee\nmx-ee A 127.0.0.1\n_25._tcp.mx-ee TLSA {tlsa}\n");
    let Some(zones) = SignedZones::start_with(&records) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, _, f_port) = fabrikam(dir.path(), true).await;
    let config = contoso_config(dir.path(), &zones, f_port, "", "");

    let (code, out, err) = tls_check_domain("ee.good.dane.test", &config, false).await;
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "route:         MX of ee.good.dane.test",
        &format!("host mx-ee.good.dane.test [127.0.0.1:{f_port}]"),
        "policy:      dane (enforce)",
        "source:      dane (mx-ee.good.dane.test)",
        "tls:         TLSv1.3",
        "check:       passed",
        "outcome:     deliver: dane (mx-ee.good.dane.test): DANE-EE matched TLSA 3 1 1",
        "deliverable:   yes",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }

    // good.dane.test's record does not match fabrikam: DANE applies and fails; delivery defers.
    let (code, out, err) = tls_check_domain("good.dane.test", &config, true).await;
    assert_eq!(code, 1, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["route"], "remote");
    assert_eq!(json["deliverable"], false);
    let host = &json["hosts"][0];
    assert_eq!(host["host"], "mx.good.dane.test");
    assert_eq!(host["policy"], "dane");
    assert_eq!(host["passed"], false);
    let outcome = host["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("defer: TLS required by dane (mx.good.dane.test)"),
        "{outcome}"
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_mode_says_opportunistic_for_an_unsigned_zone() {
    let Some(zones) = SignedZones::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, _, f_port) = fabrikam(dir.path(), true).await;
    let config = contoso_config(dir.path(), &zones, f_port, "", "");
    let (code, out, err) = tls_check_domain("plain.dane.test", &config, false).await;
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "host mx.plain.dane.test",
        "policy:      opportunistic (enforce)",
        "tls:         TLSv1.3",
        "check:       passed",
        "outcome:     deliver: ",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    assert!(!out.contains("policy:      dane"), "{out}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_mode_names_mta_sts_and_its_outcome() {
    // sts.good.dane.test: MX nomx (secure addresses, no TLSA records: no DANE) and an MTA-STS
    // policy in mode enforce naming it; fabrikam's certificate is for mx.fabrikam.test, so the
    // policy's PKIX name check fails and delivery would defer.
    let dir = tempfile::tempdir().unwrap();
    let ip = std::net::Ipv4Addr::new(127, 0, 0, 42);
    let policy = "version: STSv1\nmode: enforce\nmx: nomx.good.dane.test\nmax_age: 86400\n";
    let _host = PolicyHost::start(dir.path(), ip, "sts.good.dane.test", policy.as_bytes()).ready();
    let records =
        format!("sts MX 10 nomx\n_mta-sts.sts TXT \"v=STSv1; id=20260101;\"\nmta-sts.sts A {ip}\n");
    let Some(zones) = SignedZones::start_with(&records) else {
        return;
    };
    let (f, _, f_port) = fabrikam(dir.path(), true).await;
    let delivery = format!(
        "mta_sts_ca_file = \"{}\"",
        dir.path().join("bundle.crt").display()
    );
    let config = contoso_config(dir.path(), &zones, f_port, &delivery, "");
    let (code, out, err) = tls_check_domain("sts.good.dane.test", &config, false).await;
    assert_eq!(code, 1, "{out}{err}");
    for needle in [
        "host nomx.good.dane.test",
        "policy:      mta-sts (enforce)",
        "source:      mta-sts (sts.good.dane.test, enforce)",
        "check:       not passed",
        "outcome:     defer: TLS required by mta-sts (sts.good.dane.test, enforce): peer \
         certificate does not name nomx.good.dane.test",
        "deliverable:   no",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    f.shutdown().await;
}
