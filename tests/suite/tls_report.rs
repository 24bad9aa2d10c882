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

/// Two nodes on one PostgreSQL database, each with sessions of its own: their daily runs start
/// together and `sealpost tls-report send` runs on both at once; each time exactly one report
/// reaches the domain's rua mailbox (over SMTP, on another server), counting both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_send_one_report_counting_both() {
    use support::pg_nodes::{share_service_key, storage_toml};
    let Some(cluster) = support::postgres::shared() else {
        return;
    };
    let Some(zones) =
        SignedZones::start_with("_smtp._tls TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@fabrikam.test\"\n")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = cluster.create_database();
    let password = cluster.password_file(dir.path());
    let fport = free_port();
    let fabrikam = DomainSpec::new("fabrikam", &["tlsrpt@fabrikam.test"], fport).write(dir.path());
    let fdata = load(&fabrikam).data_dir;
    let configs: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let home = dir.path().join(name);
            std::fs::create_dir_all(&home).unwrap();
            let storage =
                storage_toml(cluster, &database, &password, &format!("node-{name}"), "4s");
            let mut spec = DomainSpec::new("contoso", &[], free_port())
                .route("fabrikam.test", fport)
                .toml(&storage);
            spec.nameservers = vec![zones.addr()];
            spec.write(&home)
        })
        .collect();
    share_service_key(configs.iter().map(|c| c.as_path()));

    let mut now = chrono::Utc::now().timestamp();
    if 86_400 - now.rem_euclid(86_400) < 60 {
        tokio::time::sleep(Duration::from_secs(61)).await;
        now = chrono::Utc::now().timestamp();
    }
    let yesterday = journal::day_start(now) - 3600;
    let failure = Failure {
        result: "starttls-not-supported".into(),
        mx: Some("mx.good.dane.test".into()),
        ip: Some("127.0.0.1".parse().unwrap()),
        info: None,
    };
    // Node a: two good sessions yesterday; node b: one failed; today one good on each.
    let record = |config: &std::path::Path, sessions: &[(i64, Option<Failure>)]| {
        let journal = sealpost::app::open_tls_journal(&load(config)).unwrap();
        for (t, f) in sessions {
            journal.record_at(*t, &tlsa("good.dane.test"), f.clone());
        }
        journal.sync();
    };
    let (a, b) = (configs[0].clone(), configs[1].clone());
    tokio::task::spawn_blocking(move || {
        record(&a, &[(yesterday, None), (yesterday + 1, None)]);
        record(&b, &[(yesterday + 2, Some(failure))]);
    })
    .await
    .unwrap();

    let sink = sealpost::app::start(load(&fabrikam)).await.unwrap();
    // Both nodes start at once: both daily runs find yesterday unreported.
    let (node_a, node_b) = tokio::join!(
        sealpost::app::start(load(&configs[0])),
        sealpost::app::start(load(&configs[1]))
    );
    let (node_a, node_b) = (node_a.unwrap(), node_b.unwrap());
    let got = wait_for_mailbox_async(&fdata, "tlsrpt@fabrikam.test", 1, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_after = wait_for_mailbox_async(&fdata, "tlsrpt@fabrikam.test", 1, WAIT).await;
    assert_eq!(got_after.len(), 1, "one daily report, not one per node");
    let read = python_read_report(&got[0]);
    assert_eq!(read["domain"], "good.dane.test");
    let summary = &read["report"]["policies"][0]["summary"];
    assert_eq!(summary["total-successful-session-count"], 2, "{read}");
    assert_eq!(summary["total-failure-session-count"], 1, "{read}");

    // Today's sessions, one per node; `tls-report send` on both nodes at the same time.
    let (a, b) = (configs[0].clone(), configs[1].clone());
    let today = now - 30;
    tokio::task::spawn_blocking(move || {
        record(&a, &[(today, None)]);
        record(&b, &[(today + 1, None)]);
    })
    .await
    .unwrap();
    let send = |config: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(["tls-report", "send", "--config"])
            .arg(config)
            .output()
    };
    let (a, b) = (configs[0].clone(), configs[1].clone());
    let (out_a, out_b) = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let one = s.spawn(|| send(&a).unwrap());
            let two = s.spawn(|| send(&b).unwrap());
            (one.join().unwrap(), two.join().unwrap())
        })
    })
    .await
    .unwrap();
    let outs: Vec<String> = [&out_a, &out_b]
        .iter()
        .map(|o| {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect();
    let queued = outs.iter().filter(|o| o.contains("queued as")).count();
    assert_eq!(queued, 1, "{outs:?}");
    assert!(
        outs.iter()
            .any(|o| o.contains("No TLS-RPT sessions waiting to be reported.")),
        "{outs:?}"
    );
    let got = wait_for_mailbox_async(&fdata, "tlsrpt@fabrikam.test", 2, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_after = wait_for_mailbox_async(&fdata, "tlsrpt@fabrikam.test", 2, WAIT).await;
    assert_eq!(got_after.len(), 2, "{outs:?}");
    let reports: Vec<_> = got.iter().map(|m| python_read_report(m)).collect();
    let ids: std::collections::HashSet<_> = reports
        .iter()
        .map(|r| r["report"]["report-id"].to_string())
        .collect();
    assert_eq!(ids.len(), 2, "report ids are unique");
    let today_report = reports
        .iter()
        .find(|r| r["report"]["policies"][0]["summary"]["total-failure-session-count"] == 0)
        .expect("today's report");
    let summary = &today_report["report"]["policies"][0]["summary"];
    assert_eq!(
        summary["total-successful-session-count"], 2,
        "{today_report}"
    );
    node_a.shutdown().await;
    node_b.shutdown().await;
    sink.shutdown().await;
}
