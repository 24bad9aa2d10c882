//! More of DANE (RFC 7672) end to end, over real sockets with NSD serving the signed zones
//! (support/dnssec.rs): DANE-TA, DANE beside MTA-STS, REQUIRETLS over a DANE hop, and DANE
//! under a connector in audit mode.

use crate::support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::dane::{contoso, contoso_with, fabrikam, fabrikam_with, trace_of};
use support::dnssec::{tlsa_for_certificate, SignedZones};
use support::domains::{
    files_containing, pki, python_send, submit, wait_for_mailbox_async, wait_for_reason,
};
use support::policy_host::PolicyHost;

const WAIT: Duration = Duration::from_secs(20);

/// A CA made here and a certificate it issues for `name`: (CA file, chain file with the
/// server certificate then the CA, key file).
fn ta_chain(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "DANE-TA test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca).unwrap();
    let files = (
        dir.join("ta-ca.crt"),
        dir.join("ta-chain.crt"),
        dir.join("ta.key"),
    );
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, format!("{}{}", cert.pem(), ca.pem())).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

/// `ta.good.dane.test`: MX `mx-ta`, whose DANE-TA record (2 0 1) names the CA in `ca`.
fn ta_records(ca: &Path) -> String {
    let tlsa = tlsa_for_certificate(ca, 2, 0, 1);
    format!("ta MX 10 mx-ta\nmx-ta A 127.0.0.1\n_25._tcp.mx-ta TLSA {tlsa}\n")
}

/// `ee.good.dane.test`: MX `mx-ee`, whose DANE-EE record matches fabrikam's key.
fn ee_records() -> String {
    let tlsa = tlsa_for_certificate(&pki().join("mx.fabrikam.test.crt"), 3, 1, 1);
    format!("ee MX 10 mx-ee\nmx-ee A 127.0.0.1\n_25._tcp.mx-ee TLSA {tlsa}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ta_with_the_mx_host_name_delivers_and_says_dane() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, chain, key) = ta_chain(dir.path(), "mx-ta.good.dane.test");
    let Some(zones) = SignedZones::start_with(&ta_records(&ca)) else {
        return;
    };
    let (f, f_data, f_port) = fabrikam_with(dir.path(), true, Some((&chain, &key))).await;
    let (c, c_data) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@ta.good.dane.test", "M-dane-ta").await;
    let got = wait_for_mailbox_async(&f_data, "bob@ta.good.dane.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-dane-ta"));
    let trace = trace_of(&c_data);
    assert!(
        trace.contains("dane (mx-ta.good.dane.test): DANE-TA"),
        "{trace}"
    );
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ta_with_another_name_defers() {
    let dir = tempfile::tempdir().unwrap();
    // The TLSA record names the CA, which issued the server's certificate, but for a name
    // that is neither the MX host nor the TLSA base domain.
    let (ca, chain, key) = ta_chain(dir.path(), "mx.elsewhere.test");
    let Some(zones) = SignedZones::start_with(&ta_records(&ca)) else {
        return;
    };
    let (f, f_data, f_port) = fabrikam_with(dir.path(), true, Some((&chain, &key))).await;
    let (c, _) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@ta.good.dane.test", "M-dane-ta-name").await;
    let reason = wait_for_reason(&c, "4.7.5").await;
    assert!(
        reason.contains("TLS required by dane (mx-ta.good.dane.test)")
            && reason.contains("mx-ta.good.dane.test"),
        "{reason}"
    );
    assert!(files_containing(&f_data, b"M-dane-ta-name").is_empty());
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ta_through_a_cname_accepts_the_mx_host_name() {
    // tac.good.dane.test: MX ta-alias, a CNAME for mx-ta, whose TLSA record (the expanded
    // name is the TLSA base domain) names the CA; the certificate is for the MX host name as
    // the MX record gives it, which RFC 7672 §3.2.2 accepts beside the TLSA base domain.
    let dir = tempfile::tempdir().unwrap();
    let (ca, chain, key) = ta_chain(dir.path(), "ta-alias.good.dane.test");
    let records = format!(
        "{}tac MX 10 ta-alias\nta-alias CNAME mx-ta\n",
        ta_records(&ca)
    );
    let Some(zones) = SignedZones::start_with(&records) else {
        return;
    };
    let (f, f_data, f_port) = fabrikam_with(dir.path(), true, Some((&chain, &key))).await;
    let (c, c_data) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@tac.good.dane.test", "M-dane-ta-cname").await;
    let got = wait_for_mailbox_async(&f_data, "bob@tac.good.dane.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-dane-ta-cname"));
    let trace = trace_of(&c_data);
    assert!(
        trace.contains("dane (ta-alias.good.dane.test): DANE-TA"),
        "{trace}"
    );
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_wins_over_an_mta_sts_enforce_policy() {
    // sts.good.dane.test: MX mx-ee (DANE-EE matches fabrikam), and an MTA-STS policy in mode
    // enforce that names only mx.fabrikam.test. Under MTA-STS mx-ee would not be tried at all
    // (and fabrikam's certificate is not for mx-ee); DANE covers it, so it is.
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 41);
    let policy = "version: STSv1\nmode: enforce\nmx: mx.fabrikam.test\nmax_age: 86400\n";
    let host = PolicyHost::start(dir.path(), ip, "sts.good.dane.test", policy.as_bytes()).ready();
    let records = format!(
        "{}sts MX 10 mx-ee\n_mta-sts.sts TXT \"v=STSv1; id=20260101;\"\nmta-sts.sts A {ip}\n",
        ee_records()
    );
    let Some(zones) = SignedZones::start_with(&records) else {
        return;
    };
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let bundle = dir.path().join("bundle.crt");
    let delivery = format!("mta_sts_ca_file = \"{}\"", bundle.display());
    let (c, c_data) = contoso_with(dir.path(), &zones, f_port, &delivery).await;
    submit(&c, "bob@sts.good.dane.test", "M-dane-over-sts").await;
    let got = wait_for_mailbox_async(&f_data, "bob@sts.good.dane.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-dane-over-sts"));
    assert!(host.requests() > 0, "the MTA-STS policy was never fetched");
    let trace = trace_of(&c_data);
    assert!(
        trace.contains("dane (mx-ee.good.dane.test): DANE-EE matched"),
        "{trace}"
    );
    let metrics = c.telemetry().metrics.render();
    assert!(
        metrics.contains("outbound_tls_policies_total{source=\"mta-sts\",outcome=\"enforce\"}"),
        "the enforce policy was not found: {metrics}"
    );
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requiretls_message_goes_over_a_dane_verified_hop() {
    let Some(zones) = SignedZones::start_with(&ee_records()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let (c, c_data) = contoso(dir.path(), &zones, f_port).await;
    let out = python_send(
        &c,
        "bob@ee.good.dane.test",
        "M-dane-requiretls",
        "",
        &["REQUIRETLS"],
    )
    .await;
    assert!(out.contains("refused: {}"), "{out}");
    let got = wait_for_mailbox_async(&f_data, "bob@ee.good.dane.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("body M-dane-requiretls"), "{text}");
    // fabrikam's Received header says the onward MAIL FROM carried REQUIRETLS.
    assert_eq!(text.matches(", REQUIRETLS)\r\n").count(), 2, "{text}");
    let trace = trace_of(&c_data);
    let delivery = trace
        .lines()
        .find(|l| l.contains(r#""result":"delivered""#))
        .unwrap_or_else(|| panic!("no delivery in contoso's trace:\n{trace}"));
    assert!(delivery.contains(r#""requiretls":true"#), "{delivery}");
    assert!(
        delivery.contains("dane (mx-ee.good.dane.test): DANE-EE matched"),
        "{delivery}"
    );
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_delivers_despite_a_tlsa_mismatch_and_records_it() {
    // good.dane.test's TLSA record does not match fabrikam; a connector in audit mode for the
    // domain (by MX, opportunistic) lets the message go and says what would have failed.
    let Some(zones) = SignedZones::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let connector = "[[connector.outbound]]\nname = \"audit-dane\"\n\
         recipient_domains = [\"good.dane.test\"]\ntls = \"opportunistic\"\nmode = \"audit\"\n";
    let config = support::dane::contoso_config(dir.path(), &zones, f_port, "", connector);
    let config = support::domains::load(&config);
    let c_data = config.data_dir.clone();
    let c = sealpost::app::start(config).await.unwrap();
    submit(&c, "bob@good.dane.test", "M-dane-audit").await;
    let got = wait_for_mailbox_async(&f_data, "bob@good.dane.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-dane-audit"));
    let trace = trace_of(&c_data);
    let delivery = trace
        .lines()
        .find(|l| l.contains(r#""result":"delivered""#))
        .unwrap_or_else(|| panic!("no delivery in contoso's trace:\n{trace}"));
    assert!(delivery.contains("dane (mx.good.dane.test)"), "{delivery}");
    assert!(
        delivery.contains("audit only, would have deferred")
            && delivery.contains("no certificate presented matches"),
        "{delivery}"
    );
    c.shutdown().await;
    f.shutdown().await;
}
