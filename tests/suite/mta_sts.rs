//! MTA-STS (RFC 8461) over real sockets: a loopback DNS server publishes `_mta-sts` TXT records
//! and addresses, Python's `http.server` + `ssl` serves the policy on 127.0.0.N:443 with a
//! certificate for `mta-sts.<domain>` from the fixture CA, and a second sealpost (fabrikam,
//! certificate for mx.fabrikam.test) or a plaintext peer is the MX.

use crate::support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealpost::tls::mta_sts::{Lookup, MtaSts};
use support::dns::{Record, TestDnsServer};
use support::domains::{
    free_port, load, python_send, submit, wait_for_mailbox_async, wait_for_reason, DomainSpec,
};
use support::policy_host::PolicyHost;

const WAIT: Duration = Duration::from_secs(20);
const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: mx.fabrikam.test\nmax_age: 86400\n";

/// DNS for example.test: MX → `mx` (127.0.0.1), the TXT record (if any), mta-sts → `ip`.
fn dns(mx: &str, txt: Option<&str>, ip: Ipv4Addr) -> TestDnsServer {
    let mut records = vec![
        Record::mx("example.test", 10, mx),
        Record::a(mx, Ipv4Addr::LOCALHOST),
        Record::a("mta-sts.example.test", ip),
    ];
    if let Some(t) = txt {
        records.push(Record::txt("_mta-sts.example.test", t));
    }
    TestDnsServer::start(records)
}

/// contoso sends by MX through `dns` to port `mx_port`, MTA-STS trusting the fixture CA.
async fn contoso(
    dir: &Path,
    dns: &TestDnsServer,
    mx_port: u16,
    extra: &str,
) -> sealpost::app::Server {
    let bundle = dir.join("bundle.crt");
    let ca = if bundle.exists() {
        bundle.display().to_string()
    } else {
        "{pki}/ca.crt".to_string()
    };
    let mut c = DomainSpec::new("contoso", &["alice@contoso.test"], free_port())
        .toml(&format!("mta_sts_ca_file = \"{ca}\"\n{extra}"));
    c.nameservers = vec![dns.addr()];
    c.smtp_port = Some(mx_port);
    sealpost::app::start(load(&c.write(dir))).await.unwrap()
}

/// fabrikam (certificate for mx.fabrikam.test) receiving for example.test.
async fn fabrikam(dir: &Path) -> (sealpost::app::Server, PathBuf, u16) {
    let port = free_port();
    let mut f = DomainSpec::new("fabrikam", &["bob@example.test"], port);
    f.extra_domains = vec!["example.test"];
    let config = load(&f.write(dir));
    let data = config.data_dir.clone();
    (sealpost::app::start(config).await.unwrap(), data, port)
}

fn trace_of(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("trace.jsonl")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_with_a_valid_certificate_delivers_and_says_mta_sts() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 31);
    let host = PolicyHost::start(dir.path(), ip, "example.test", ENFORCE.as_bytes()).ready();
    let dns = dns("mx.fabrikam.test", Some("v=STSv1; id=20260101;"), ip);
    let (f, f_data, f_port) = fabrikam(dir.path()).await;
    let c = contoso(dir.path(), &dns, f_port, "").await;
    submit(&c, "bob@example.test", "M-sts-ok").await;
    let got = wait_for_mailbox_async(&f_data, "bob@example.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-sts-ok"));
    let data = load(&dir.path().join("contoso.toml")).data_dir;
    let trace = trace_of(&data);
    assert!(
        trace.contains("mta-sts (example.test, enforce): verified mx.fabrikam.test via bundle.crt"),
        "{trace}"
    );
    let metrics = c.telemetry().metrics.render();
    assert!(
        metrics.contains("outbound_tls_policies_total{source=\"mta-sts\",outcome=\"enforce\"}"),
        "{metrics}"
    );
    assert_eq!(host.requests(), 1);
    // The policy is cached (and written under data_dir): the next message fetches nothing.
    submit(&c, "bob@example.test", "M-sts-again").await;
    wait_for_mailbox_async(&f_data, "bob@example.test", 2, WAIT).await;
    assert_eq!(
        host.requests(),
        1,
        "a cached policy with the same id is not fetched again"
    );
    assert!(std::fs::read_to_string(data.join("mta-sts-cache.json"))
        .unwrap()
        .contains("mx.fabrikam.test"));
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_with_a_certificate_for_another_name_defers_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 32);
    let body = "version: STSv1\nmode: enforce\nmx: mx.other.test\nmax_age: 86400\n";
    let _host = PolicyHost::start(dir.path(), ip, "example.test", body.as_bytes()).ready();
    let dns = dns("mx.other.test", Some("v=STSv1; id=a1;"), ip);
    let (f, f_data, f_port) = fabrikam(dir.path()).await;
    let c = contoso(dir.path(), &dns, f_port, "").await;
    submit(&c, "bob@example.test", "M-sts-name").await;
    let reason = wait_for_reason(&c, "4.7.5").await;
    assert!(
        reason.contains("TLS required by mta-sts (example.test, enforce)")
            && reason.contains("mx.other.test"),
        "{reason}"
    );
    assert!(support::domains::files_containing(&f_data, b"M-sts-name").is_empty());
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_toward_a_peer_without_starttls_defers_before_mail_from() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 33);
    let _host = PolicyHost::start(dir.path(), ip, "example.test", ENFORCE.as_bytes()).ready();
    let dns = dns("mx.fabrikam.test", Some("v=STSv1; id=a1;"), ip);
    let (peer_port, seen) = support::peers::plaintext_peer();
    let c = contoso(dir.path(), &dns, peer_port, "").await;
    submit(&c, "bob@example.test", "M-sts-strip").await;
    let reason = wait_for_reason(&c, "4.7.4").await;
    assert!(reason.contains("did not offer STARTTLS"), "{reason}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|l| l.starts_with("EHLO")), "{seen:?}");
    assert!(!seen.iter().any(|l| l.starts_with("MAIL")), "{seen:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_skips_mx_hosts_the_policy_does_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 34);
    let body = "version: STSv1\nmode: enforce\nmx: *.elsewhere.test\nmax_age: 86400\n";
    let _host = PolicyHost::start(dir.path(), ip, "example.test", body.as_bytes()).ready();
    let dns = dns("mx.fabrikam.test", Some("v=STSv1; id=a1;"), ip);
    let (f, f_data, f_port) = fabrikam(dir.path()).await;
    let c = contoso(dir.path(), &dns, f_port, "").await;
    submit(&c, "bob@example.test", "M-sts-mx").await;
    let reason = wait_for_reason(&c, "no MX host matches").await;
    assert!(
        reason.starts_with("451 4.7.5") && reason.contains("*.elsewhere.test"),
        "{reason}"
    );
    assert!(support::domains::files_containing(&f_data, b"M-sts-mx").is_empty());
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testing_mode_delivers_despite_a_bad_certificate_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 35);
    let body = "version: STSv1\nmode: testing\nmx: mx.other.test\nmax_age: 86400\n";
    let _host = PolicyHost::start(dir.path(), ip, "example.test", body.as_bytes()).ready();
    let dns = dns("mx.other.test", Some("v=STSv1; id=t1;"), ip);
    let (f, f_data, f_port) = fabrikam(dir.path()).await;
    let c = contoso(dir.path(), &dns, f_port, "").await;
    submit(&c, "bob@example.test", "M-sts-testing").await;
    wait_for_mailbox_async(&f_data, "bob@example.test", 1, WAIT).await;
    let trace = trace_of(&load(&dir.path().join("contoso.toml")).data_dir);
    assert!(
        trace.contains("mta-sts (example.test, testing): audit only, would have deferred"),
        "{trace}"
    );
    // Reported: TLS-RPT counts the session as a failure under the sts policy.
    let show = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(["tls-report", "show", "--json", "--config"])
        .arg(dir.path().join("contoso.toml"))
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&show.stdout);
    let report: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    let policy = &report["policies"][0];
    assert_eq!(policy["policy"]["policy-type"], "sts", "{report}");
    assert_eq!(policy["policy"]["policy-domain"], "example.test");
    assert_eq!(policy["policy"]["mx-host"][0], "mx.other.test");
    let strings = policy["policy"]["policy-string"].to_string();
    assert!(strings.contains("mode: testing"), "{strings}");
    assert_eq!(policy["summary"]["total-successful-session-count"], 0);
    assert_eq!(policy["summary"]["total-failure-session-count"], 1);
    let detail = &policy["failure-details"][0];
    assert_eq!(
        detail["result-type"], "certificate-host-mismatch",
        "{report}"
    );
    assert_eq!(detail["receiving-mx-hostname"], "mx.other.test");
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_policy_is_opportunistic_unless_mta_sts_is_mandatory() {
    let dir = tempfile::tempdir().unwrap();
    // No TXT record and no policy host: the certificate name does not matter.
    let dns = dns("mx.other.test", None, Ipv4Addr::new(127, 0, 0, 36));
    let (f, f_data, f_port) = fabrikam(dir.path()).await;
    let c = contoso(dir.path(), &dns, f_port, "").await;
    submit(&c, "bob@example.test", "M-sts-none").await;
    wait_for_mailbox_async(&f_data, "bob@example.test", 1, WAIT).await;
    c.shutdown().await;

    let dir2 = tempfile::tempdir().unwrap();
    let c = contoso(dir2.path(), &dns, f_port, "mta_sts = \"mandatory\"\n").await;
    submit(&c, "bob@example.test", "M-sts-mandatory").await;
    let reason = wait_for_reason(&c, "4.7.4").await;
    assert!(
        reason.contains("MTA-STS is mandatory and example.test has no valid policy")
            && reason.contains("no TXT record"),
        "{reason}"
    );
    c.shutdown().await;
    f.shutdown().await;
}

/// The lookup itself, against the real policy host: bad answers mean no policy (RFC 8461
/// §3.3); a new TXT id fetches again; a failed refresh keeps the cached policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policy_files_are_no_policy_and_a_new_id_refetches() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 37);
    let host = PolicyHost::start(dir.path(), ip, "example.test", ENFORCE.as_bytes()).ready();
    let dns = dns("mx.fabrikam.test", Some("v=STSv1; id=bad1;"), ip);
    let anchors = sealpost::tls::load_trust_anchors(&dir.path().join("bundle.crt")).unwrap();
    let sts = MtaSts::new(Some(anchors), None).unwrap();
    let big = format!("{ENFORCE}{}", "# padding\n".repeat(7000));
    let cases: [(u16, &str, &[u8], &str); 4] = [
        (200, "text/html", ENFORCE.as_bytes(), "is not text/plain"),
        (
            301,
            "text/plain",
            ENFORCE.as_bytes(),
            "redirects are not followed",
        ),
        (200, "text/plain", big.as_bytes(), "larger than 65536 bytes"),
        (
            200,
            "text/plain",
            b"version: STSv1\nmode: enforce\n",
            "policy file",
        ),
    ];
    for (status, ctype, body, why) in cases {
        host.answer(status, ctype, body);
        match sts.lookup(&dns.resolver(), "example.test").await {
            Lookup::Absent(reason) => assert!(reason.contains(why), "{reason}"),
            Lookup::Policy(p) => panic!("accepted a bad policy: {:?}", p.policy),
        }
    }
    // Two STSv1 records: no policy, and nothing fetched.
    let before = host.requests();
    dns.set_records(vec![
        Record::txt("_mta-sts.example.test", "v=STSv1; id=x1;"),
        Record::txt("_mta-sts.example.test", "v=STSv1; id=x2;"),
        Record::a("mta-sts.example.test", ip),
    ]);
    match sts.lookup(&dns.resolver(), "example.test").await {
        Lookup::Absent(reason) => assert!(reason.contains("2 TXT records"), "{reason}"),
        Lookup::Policy(_) => panic!("two records must mean no policy"),
    }
    assert_eq!(host.requests(), before);

    // A good policy under id v1; then id v2 fetches the new one (testing).
    let txt = |id: &str| {
        vec![
            Record::txt("_mta-sts.example.test", &format!("v=STSv1; id={id};")),
            Record::a("mta-sts.example.test", ip),
        ]
    };
    host.answer(200, "text/plain", ENFORCE.as_bytes());
    dns.set_records(txt("v1"));
    let mode = |l: Lookup| match l {
        Lookup::Policy(p) => p.policy.mode.as_str(),
        Lookup::Absent(reason) => panic!("no policy: {reason}"),
    };
    assert_eq!(
        mode(sts.lookup(&dns.resolver(), "example.test").await),
        "enforce"
    );
    let fetched = host.requests();
    assert_eq!(
        mode(sts.lookup(&dns.resolver(), "example.test").await),
        "enforce"
    );
    assert_eq!(host.requests(), fetched, "same id: the cache answers");
    host.answer(
        200,
        "text/plain",
        b"version: STSv1\nmode: testing\nmx: mx.fabrikam.test\nmax_age: 600\n",
    );
    dns.set_records(txt("v2"));
    assert_eq!(
        mode(sts.lookup(&dns.resolver(), "example.test").await),
        "testing"
    );
    assert_eq!(host.requests(), fetched + 1, "a new id fetches again");
    // A new id whose fetch fails keeps the cached policy.
    host.answer(500, "text/plain", b"");
    dns.set_records(txt("v3"));
    assert_eq!(
        mode(sts.lookup(&dns.resolver(), "example.test").await),
        "testing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiretls_goes_over_an_mta_sts_enforced_hop() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 38);
    let _host = PolicyHost::start(dir.path(), ip, "example.test", ENFORCE.as_bytes()).ready();
    let dns = dns("mx.fabrikam.test", Some("v=STSv1; id=r1;"), ip);
    let (f, f_data, f_port) = fabrikam(dir.path()).await;
    let c = contoso(dir.path(), &dns, f_port, "").await;
    let out = python_send(
        &c,
        "bob@example.test",
        "M-sts-requiretls",
        "",
        &["REQUIRETLS"],
    )
    .await;
    assert_eq!(out.trim(), "refused: {}");
    let got = wait_for_mailbox_async(&f_data, "bob@example.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(text.contains("body M-sts-requiretls"), "{text}");
    // fabrikam's Received header: the onward MAIL FROM carried REQUIRETLS.
    assert!(text.matches("REQUIRETLS").count() >= 2, "{text}");
    c.shutdown().await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_no_lets_a_message_past_a_failing_mta_sts_policy() {
    let dir = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 39);
    let body = "version: STSv1\nmode: enforce\nmx: mx.other.test\nmax_age: 86400\n";
    let _host = PolicyHost::start(dir.path(), ip, "example.test", body.as_bytes()).ready();
    let dns = dns("mx.other.test", Some("v=STSv1; id=r2;"), ip);
    let (f, f_data, f_port) = fabrikam(dir.path()).await;
    let c = contoso(dir.path(), &dns, f_port, "").await;
    // The MX's certificate names mx.fabrikam.test, not mx.other.test: enforce would defer.
    let out = python_send(
        &c,
        "bob@example.test",
        "M-sts-relaxed",
        "TLS-Required: No\r\n",
        &[],
    )
    .await;
    assert_eq!(out.trim(), "refused: {}");
    let got = wait_for_mailbox_async(&f_data, "bob@example.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("body M-sts-relaxed"));
    let metrics = c.telemetry().metrics.render();
    assert!(
        metrics.contains("outcome=\"relaxed-by-tls-required-no\""),
        "{metrics}"
    );
    c.shutdown().await;
    f.shutdown().await;
}
