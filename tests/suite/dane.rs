//! DANE (RFC 7672) for delivery by MX over real sockets: NSD serves DNSSEC-signed zones
//! (support/dnssec.rs), contoso resolves through it with the zones' trust anchor, and a second
//! sealpost (fabrikam, certificate for mx.fabrikam.test) is every MX host.

use crate::support;

use std::time::Duration;

use support::dane::{contoso, contoso_with, fabrikam, trace_of};
use support::dnssec::{tlsa_for_certificate, SignedZones};
use support::domains::{files_containing, pki, submit, wait_for_mailbox_async, wait_for_reason};
use support::tlsrpt::python_read_report;

const WAIT: Duration = Duration::from_secs(20);

/// `ee.good.dane.test`: MX `mx-ee`, whose DANE-EE record matches fabrikam's key; and the
/// domains whose MX hosts are the aliases of support/dnssec.rs (`cx`: `cx-alias CNAME mx-ee`).
fn matching_records() -> String {
    let tlsa = tlsa_for_certificate(&pki().join("mx.fabrikam.test.crt"), 3, 1, 1);
    format!(
        "ee MX 10 mx-ee\nmx-ee A 127.0.0.1\n_25._tcp.mx-ee TLSA {tlsa}\n\
         cx MX 10 cx-alias\ncx-alias CNAME mx-ee\n\
         cx-plain MX 10 alias-plain\ncx-bogus MX 10 alias-bogus\ncx-only MX 10 cname-only\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_dane_ee_record_delivers_and_says_dane() {
    let Some(zones) = SignedZones::start_with(&matching_records()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let (c, c_data) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@ee.good.dane.test", "M-dane-ok").await;
    let got = wait_for_mailbox_async(&f_data, "bob@ee.good.dane.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-dane-ok"));
    let trace = trace_of(&c_data);
    assert!(
        trace.contains("dane (mx-ee.good.dane.test): DANE-EE matched TLSA 3 1 1"),
        "{trace}"
    );
    let metrics = c.telemetry().metrics.render();
    assert!(
        metrics.contains("outbound_tls_policies_total{source=\"dane\",outcome=\"enforce\"}"),
        "{metrics}"
    );
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tlsa_record_that_does_not_match_defers() {
    let Some(zones) = SignedZones::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let (c, _) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@good.dane.test", "M-dane-mismatch").await;
    let reason = wait_for_reason(&c, "4.7.5").await;
    assert!(
        reason.starts_with("451 4.7.5")
            && reason.contains("TLS required by dane (mx.good.dane.test)"),
        "{reason}"
    );
    assert!(files_containing(&f_data, b"M-dane-mismatch").is_empty());
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mx_without_starttls_under_a_secure_tlsa_defers() {
    let Some(zones) = SignedZones::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), false).await;
    let (c, _) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@good.dane.test", "M-dane-plain").await;
    let reason = wait_for_reason(&c, "4.7.4").await;
    assert!(
        reason.contains("TLS required by dane (mx.good.dane.test)"),
        "{reason}"
    );
    assert!(files_containing(&f_data, b"M-dane-plain").is_empty());
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_zone_defers() {
    let Some(zones) = SignedZones::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let (c, _) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@bogus.dane.test", "M-dane-bogus").await;
    let reason = wait_for_reason(&c, "4.7.5").await;
    assert!(
        reason.starts_with("451 4.7.5 DANE") && reason.contains("bogus.dane.test"),
        "{reason}"
    );
    assert!(files_containing(&f_data, b"M-dane-bogus").is_empty());
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_zone_is_delivered_opportunistically() {
    let Some(zones) = SignedZones::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let (c, c_data) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@plain.dane.test", "M-dane-insecure").await;
    let got = wait_for_mailbox_async(&f_data, "bob@plain.dane.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-dane-insecure"));
    let trace = trace_of(&c_data);
    assert!(trace.contains("certificate not checked"), "{trace}");
    assert!(!trace.contains("dane ("), "{trace}");
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_dane_defers_an_unsigned_zone() {
    let Some(zones) = SignedZones::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let (c, _) = contoso_with(dir.path(), &zones, f_port, "dane = \"mandatory\"").await;
    submit(&c, "bob@plain.dane.test", "M-dane-mandatory").await;
    let reason = wait_for_reason(&c, "4.7.5").await;
    assert!(
        reason.starts_with("451 4.7.5 DANE is mandatory")
            && reason.contains("plain.dane.test are not DNSSEC-secure"),
        "{reason}"
    );
    assert!(files_containing(&f_data, b"M-dane-mandatory").is_empty());
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mx_host_whose_addresses_are_insecure_gets_no_dane() {
    // alias-plain.good.dane.test has a secure TLSA record (which fabrikam does not match), but
    // its CNAME leads into the unsigned plain.dane.test: no TLSA lookup, opportunistic TLS.
    let Some(zones) = SignedZones::start_with(&matching_records()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let (c, c_data) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@cx-plain.good.dane.test", "M-dane-addr-insecure").await;
    let got = wait_for_mailbox_async(&f_data, "bob@cx-plain.good.dane.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-dane-addr-insecure"));
    let trace = trace_of(&c_data);
    assert!(trace.contains("certificate not checked"), "{trace}");
    assert!(!trace.contains("dane ("), "{trace}");
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mx_host_whose_addresses_are_bogus_defers() {
    let Some(zones) = SignedZones::start_with(&matching_records()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let (c, _) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@cx-bogus.good.dane.test", "M-dane-addr-bogus").await;
    let reason = wait_for_reason(&c, "4.7.5").await;
    assert!(
        reason.starts_with("451 4.7.5 DANE (alias-bogus.good.dane.test)")
            && reason.contains("DNSSEC validation failed"),
        "{reason}"
    );
    assert!(files_containing(&f_data, b"M-dane-addr-bogus").is_empty());
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tlsa_base_is_the_cname_expanded_name_then_the_mx_host() {
    let Some(zones) = SignedZones::start_with(&matching_records()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let (c, c_data) = contoso(dir.path(), &zones, f_port).await;
    // cx-alias has no TLSA records of its own; the expanded name mx-ee's match.
    submit(&c, "bob@cx.good.dane.test", "M-dane-cname").await;
    let got = wait_for_mailbox_async(&f_data, "bob@cx.good.dane.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-dane-cname"));
    let trace = trace_of(&c_data);
    assert!(
        trace.contains("dane (cx-alias.good.dane.test): DANE-EE matched TLSA 3 1 1"),
        "{trace}"
    );
    // cname-only expands to nomx, which has no TLSA records: the alias's own record (which
    // fabrikam does not match) applies.
    submit(&c, "bob@cx-only.good.dane.test", "M-dane-cname-only").await;
    let reason = wait_for_reason(&c, "4.7.5").await;
    assert!(
        reason.contains("TLS required by dane (cname-only.good.dane.test)"),
        "{reason}"
    );
    assert!(files_containing(&f_data, b"M-dane-cname-only").is_empty());
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_rpt_reports_the_sessions_gzipped_to_the_rua_mailbox() {
    let rua = "\"v=TLSRPTv1; rua=mailto:tlsrpt@contoso.test\"";
    let records = format!(
        "{}_smtp._tls TXT {rua}\n_smtp._tls.ee TXT {rua}\n",
        matching_records()
    );
    let Some(zones) = SignedZones::start_with(&records) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (f, f_data, f_port) = fabrikam(dir.path(), true).await;
    let (c, c_data) = contoso(dir.path(), &zones, f_port).await;
    submit(&c, "bob@ee.good.dane.test", "M-rpt-ok").await;
    wait_for_mailbox_async(&f_data, "bob@ee.good.dane.test", 1, WAIT).await;
    submit(&c, "bob@good.dane.test", "M-rpt-mismatch").await;
    wait_for_reason(&c, "4.7.5").await;
    // The sessions of the last second go in the next report.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let sealpost = env!("CARGO_BIN_EXE_sealpost");
    let config = dir.path().join("contoso.toml");
    let show = std::process::Command::new(sealpost)
        .args(["tls-report", "show", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("good.dane.test") && shown.contains("tlsa-invalid at mx.good.dane.test"),
        "{shown}"
    );
    let sent = std::process::Command::new(sealpost)
        .args(["tls-report", "send", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(said.contains("ee.good.dane.test: report"), "{said}");
    let got = wait_for_mailbox_async(&c_data, "tlsrpt@contoso.test", 2, WAIT).await;
    let reports: Vec<serde_json::Value> = got.iter().map(|m| python_read_report(m)).collect();
    let of = |domain: &str| {
        reports
            .iter()
            .find(|r| r["domain"] == domain)
            .unwrap_or_else(|| panic!("no report for {domain}: {reports:?}"))
    };
    let ok = of("ee.good.dane.test");
    assert_eq!(ok["submitter"], "mx.contoso.test");
    let filename = ok["filename"].as_str().unwrap();
    assert!(
        filename.starts_with("mx.contoso.test!ee.good.dane.test!")
            && filename.ends_with(".json.gz"),
        "{filename}"
    );
    let policy = &ok["report"]["policies"][0];
    assert_eq!(policy["policy"]["policy-type"], "tlsa");
    assert_eq!(policy["policy"]["mx-host"][0], "mx-ee.good.dane.test");
    assert!(policy["policy"]["policy-string"][0]
        .as_str()
        .unwrap()
        .starts_with("3 1 1 "));
    assert_eq!(policy["summary"]["total-successful-session-count"], 1);
    assert_eq!(policy["summary"]["total-failure-session-count"], 0);
    let bad = &of("good.dane.test")["report"];
    for field in ["organization-name", "contact-info", "report-id"] {
        assert!(bad[field].is_string(), "{field}: {bad}");
    }
    assert!(bad["date-range"]["start-datetime"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00Z"));
    let policy = &bad["policies"][0];
    assert_eq!(policy["policy"]["policy-type"], "tlsa");
    assert_eq!(policy["policy"]["policy-domain"], "good.dane.test");
    assert_eq!(policy["summary"]["total-successful-session-count"], 0);
    let failed = policy["summary"]["total-failure-session-count"]
        .as_u64()
        .unwrap();
    assert!(failed >= 1, "{policy}");
    let detail = &policy["failure-details"][0];
    assert_eq!(detail["result-type"], "tlsa-invalid");
    assert_eq!(detail["receiving-mx-hostname"], "mx.good.dane.test");
    assert_eq!(detail["receiving-ip"], "127.0.0.1");
    assert_eq!(detail["failed-session-count"], failed);
    // Reported once: a second run has nothing more before the failures still coming in.
    let again = std::process::Command::new(sealpost)
        .args(["tls-report", "show", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let pending = String::from_utf8_lossy(&again.stdout);
    assert!(!pending.contains("ee.good.dane.test"), "{pending}");
    c.shutdown().await;
    f.shutdown().await;
}
