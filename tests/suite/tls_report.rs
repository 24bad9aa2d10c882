//! TLS-RPT (RFC 8460) reports sent by a running server once a day: the sessions of days that
//! are over go to the rua mailbox of the domains that publish one, exactly once, across
//! restarts; today's sessions wait.

use crate::support;

use std::time::Duration;

use sealpost::report::tlsrpt::{journal, Failure, Policy, PolicyType, Recorder};
use support::dnssec::SignedZones;
use support::domains::{free_port, load, wait_for_mailbox_async, DomainSpec};
use support::tlsrpt::python_read_report;

const WAIT: Duration = Duration::from_secs(20);

fn tlsa(domain: &str) -> Policy {
    Policy {
        kind: PolicyType::Tlsa,
        domain: domain.into(),
        strings: vec!["3 1 1 00ff".into()],
        mx: vec![format!("mx.{domain}")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_reports_each_past_day_once_and_keeps_today_for_later() {
    let Some(zones) =
        SignedZones::start_with("_smtp._tls TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@contoso.test\"\n")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut c = DomainSpec::new("contoso", &["tlsrpt@contoso.test"], free_port());
    c.nameservers = vec![zones.addr()];
    let path = c.write(dir.path());
    let data = load(&path).data_dir;
    // Yesterday: two good sessions and a failure toward good.dane.test, one session toward a
    // domain that publishes no TLSRPT record; today: one more toward good.dane.test.
    let mut now = chrono::Utc::now().timestamp();
    if 86_400 - now.rem_euclid(86_400) < 30 {
        // Not across midnight: "today" must stay today while the test runs.
        tokio::time::sleep(Duration::from_secs(31)).await;
        now = chrono::Utc::now().timestamp();
    }
    let yesterday = journal::day_start(now) - 3600;
    let recorder = Recorder::new(&data);
    recorder.record_at(yesterday, &tlsa("good.dane.test"), None);
    recorder.record_at(yesterday + 1, &tlsa("good.dane.test"), None);
    let failure = Failure {
        result: "starttls-not-supported".into(),
        mx: Some("mx.good.dane.test".into()),
        ip: Some("127.0.0.1".parse().unwrap()),
        info: Some("peer did not offer STARTTLS".into()),
    };
    recorder.record_at(yesterday + 2, &tlsa("good.dane.test"), Some(failure));
    recorder.record_at(yesterday + 3, &Policy::none("plain.dane.test"), None);
    recorder.record_at(now, &tlsa("good.dane.test"), None);
    recorder.sync();

    let server = sealpost::app::start(load(&path)).await.unwrap();
    let got = wait_for_mailbox_async(&data, "tlsrpt@contoso.test", 1, WAIT).await;
    let read = python_read_report(&got[0]);
    assert_eq!(read["domain"], "good.dane.test");
    let report = &read["report"];
    let day = chrono::DateTime::from_timestamp(yesterday, 0).unwrap();
    assert_eq!(
        report["date-range"]["start-datetime"],
        day.format("%Y-%m-%dT00:00:00Z").to_string()
    );
    assert_eq!(
        report["date-range"]["end-datetime"],
        day.format("%Y-%m-%dT23:59:59Z").to_string()
    );
    let summary = &report["policies"][0]["summary"];
    assert_eq!(summary["total-successful-session-count"], 2, "{report}");
    assert_eq!(summary["total-failure-session-count"], 1, "{report}");
    assert_eq!(
        report["policies"][0]["failure-details"][0]["result-type"],
        "starttls-not-supported"
    );
    server.shutdown().await;

    // Restarted: yesterday is not reported again; today's session is still pending.
    let server = sealpost::app::start(load(&path)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = wait_for_mailbox_async(&data, "tlsrpt@contoso.test", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let show = std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(["tls-report", "show", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("good.dane.test") && shown.contains("1 successful, 0 failed sessions"),
        "{shown}"
    );
    assert!(!shown.contains("plain.dane.test"), "{shown}");
    server.shutdown().await;
}
