//! Operations through the real binary: a message relayed contoso → fabrikam over STARTTLS shows
//! in `/metrics` and `/healthz` of the admin endpoint, and `sealpost trace` follows it across both
//! servers' trace logs (which never hold the Message-ID in clear or any content).

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::admin::{http, metric, metrics_until, wait_listening};
use support::domains::{
    free_port, message, sealpost, send, wait_for_mailbox_async, DomainSpec, ServeProcess,
};

const WAIT: Duration = Duration::from_secs(20);

const TAG_EXTERNAL: &str = "name = \"tag-external\"\npriority = 10\n[conditions]\n\
    recipient_scope = \"external\"\n[[actions]]\ntype = \"add_header\"\n\
    name = \"X-Sealpost-External\"\nvalue = \"yes\"\n";

/// contoso and fabrikam as `sealpost serve` processes, each with an admin endpoint; contoso sends
/// fabrikam.test through the verify-name connector `to-fabrikam` and tags external mail with a
/// rule, fabrikam takes contoso.test through the inbound connector `from-contoso`.
struct Relay {
    dir: tempfile::TempDir,
    contoso_config: PathBuf,
    fabrikam_config: PathBuf,
    contoso_addr: SocketAddr,
    contoso_admin: SocketAddr,
    fabrikam_admin: SocketAddr,
    fabrikam_data: PathBuf,
    _servers: [ServeProcess; 2],
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start_relay() -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let (cport, fport, cadmin, fadmin) = (free_port(), free_port(), free_port(), free_port());
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("10-tag.toml"), TAG_EXTERNAL).unwrap();
    let contoso = DomainSpec::new("contoso", &["alice@contoso.test"], cport)
        .route("fabrikam.test", fport)
        .toml(&format!("[admin]\nlisten = \"127.0.0.1:{cadmin}\"\n"))
        .toml(&format!("[rules]\ndir = \"{}\"\n", rules.display()))
        .toml(&format!(
            "[[connector.outbound]]\nname = \"to-fabrikam\"\nrecipient_domains = [\"fabrikam.test\"]\n\
             smart_hosts = [\"127.0.0.1:{fport}\"]\ntls = \"verify-name\"\n\
             tls_names = [\"mx.fabrikam.test\"]\nca_file = \"{{pki}}/ca.crt\"\n"
        ));
    let fabrikam = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport)
        .route("contoso.test", cport)
        .toml(&format!("[admin]\nlisten = \"127.0.0.1:{fadmin}\"\n"))
        .toml(
            "[[connector.inbound]]\nname = \"from-contoso\"\nsender_domains = [\"contoso.test\"]\n\
             require_tls = true\n",
        );
    let (contoso_config, fabrikam_config) = (contoso.write(dir.path()), fabrikam.write(dir.path()));
    let f = ServeProcess::start(&fabrikam_config, fport);
    let c = ServeProcess::start(&contoso_config, cport);
    wait_listening(loopback(fadmin), WAIT);
    wait_listening(loopback(cadmin), WAIT);
    Relay {
        fabrikam_data: dir.path().join("fabrikam-data"),
        dir,
        contoso_config,
        fabrikam_config,
        contoso_addr: loopback(cport),
        contoso_admin: loopback(cadmin),
        fabrikam_admin: loopback(fadmin),
        _servers: [f, c],
    }
}

/// Sends one message alice → bob with `marker` in its Message-ID, subject and body, and waits
/// until bob's mailbox at fabrikam holds it; returns it.
async fn relay_one(relay: &Relay, marker: &str) -> String {
    let (replies, tls) = send(
        relay.contoso_addr,
        "alice@contoso.test",
        &["bob@fabrikam.test"],
        &message("alice@contoso.test", "bob@fabrikam.test", marker),
    )
    .await;
    assert!(replies[0].is_ok(), "{replies:?}");
    assert_eq!(tls, "TLSv1.3");
    let got = wait_for_mailbox_async(&relay.fabrikam_data, "bob@fabrikam.test", 1, WAIT).await;
    String::from_utf8_lossy(&got[0]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_count_a_relayed_message() {
    let relay = start_relay();
    let delivered = relay_one(&relay, "M-metrics").await;
    assert!(delivered.contains("X-Sealpost-External: yes\r\n"));
    let admin = relay.contoso_admin;

    let text = tokio::task::spawn_blocking(move || {
        metrics_until(admin, WAIT, |t| {
            metric(t, "sealpost_messages_delivered_total", &[]).unwrap_or(0.0) >= 1.0
        })
    })
    .await
    .unwrap();
    let at = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Exactly one message came in (no inbound connector at contoso) and went out through the
    // connector.
    assert_eq!(
        at("sealpost_messages_received_total", &[("connector", "none")]),
        1.0
    );
    assert_eq!(
        at(
            "sealpost_messages_delivered_total",
            &[("connector", "to-fabrikam")]
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "sealpost_messages_bounced_total", &[]).unwrap_or(0.0),
        0.0
    );
    // One handshake with the test's client; at least one to fabrikam.
    let tls13 = |direction| {
        at(
            "sealpost_tls_handshakes_total",
            &[("direction", direction), ("version", "TLSv1.3")],
        )
    };
    assert_eq!(tls13("inbound"), 1.0);
    assert!(tls13("outbound") >= 1.0, "{text}");
    assert_eq!(
        at(
            "sealpost_rule_matches_total",
            &[("rule", "tag-external"), ("action", "add_header")]
        ),
        1.0
    );
    assert!(
        at("sealpost_smtp_sessions_total", &[("listener", "smtp")]) >= 1.0,
        "{text}"
    );

    // fabrikam counts the same message as received through its inbound connector and delivered
    // to a local mailbox.
    let admin = relay.fabrikam_admin;
    let ftext = tokio::task::spawn_blocking(move || {
        metrics_until(admin, WAIT, |t| {
            metric(
                t,
                "sealpost_messages_delivered_total",
                &[("connector", "local")],
            )
            .unwrap_or(0.0)
                >= 1.0
        })
    })
    .await
    .unwrap();
    assert_eq!(
        metric(
            &ftext,
            "sealpost_messages_received_total",
            &[("connector", "from-contoso")]
        ),
        Some(1.0),
        "{ftext}"
    );
    assert_eq!(
        metric(
            &ftext,
            "sealpost_messages_delivered_total",
            &[("connector", "local")]
        ),
        Some(1.0)
    );

    // The message was enqueued and completed: at least those two directory fsyncs.
    assert!(at("sealpost_queue_fsyncs_total", &[]) >= 2.0, "{text}");
    // A quiet server has a delivery slot free: the message was claimed as it was queued, not
    // later by the runner.
    assert_eq!(at("sealpost_queue_claims_total", &[("at", "arrival")]), 1.0);
    assert_eq!(
        metric(&text, "sealpost_queue_claims_total", &[("at", "runner")]),
        None,
        "{text}"
    );

    let metrics = http(relay.contoso_admin, "GET", "/metrics");
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/openmetrics-text")),
        "{:?}",
        metrics.headers
    );
    let health = http(relay.contoso_admin, "GET", "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    let health: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["hostname"], "mx.contoso.test");
    assert!(health["queue"].is_object(), "{health}");
    let states: Vec<&str> = health["queue"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for state in ["incoming", "active", "deferred", "hold", "corrupt"] {
        assert!(states.contains(&state), "{health}");
        assert!(
            metrics
                .body
                .contains(&format!("sealpost_queue_messages{{state=\"{state}\"}}")),
            "{state}: {}",
            metrics.body
        );
    }

    let unknown = http(relay.contoso_admin, "GET", "/nope");
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let wrong_method = http(relay.contoso_admin, "POST", "/metrics");
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.body);
    let wrong_method = http(relay.contoso_admin, "GET", "/reload");
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.body);
}

/// `sealpost trace --json` until both hops of the message have reached a final state.
fn trace_json_until_final(relay: &Relay, message_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, out, err) = sealpost(&[
            "trace",
            "--config",
            path(&relay.contoso_config),
            "--config",
            path(&relay.fabrikam_config),
            "--message-id",
            message_id,
            "--json",
        ]);
        if code == 0 {
            let json: serde_json::Value = serde_json::from_str(&out).unwrap();
            let finals = json[0]["hops"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|hop| {
                    hop["records"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["event"] == "state"))
                })
                .count();
            if finals == 2 {
                return json;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no final state in both hops: {code}\n{out}\n{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_follows_a_message_across_both_servers() {
    let relay = start_relay();
    let marker = "M-trace-7f3a";
    let message_id = format!("{marker}@client.test");
    relay_one(&relay, marker).await;
    let relay = tokio::task::spawn_blocking(move || {
        check_trace(&relay, &message_id, marker);
        relay
    })
    .await
    .unwrap();
    drop(relay);
}

fn check_trace(relay: &Relay, message_id: &str, marker: &str) {
    let json = trace_json_until_final(relay, message_id);
    let messages = json.as_array().unwrap();
    assert_eq!(messages.len(), 1, "{json:#}");
    let hops = messages[0]["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 2, "{json:#}");
    assert_eq!(hops[0]["server"], "mx.contoso.test");
    assert_eq!(hops[1]["server"], "mx.fabrikam.test");
    let events = |hop: &serde_json::Value, kind: &str| -> Vec<serde_json::Value> {
        hop["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["event"] == kind)
            .cloned()
            .collect()
    };
    let received = &events(&hops[0], "received")[0];
    assert_eq!(received["from"], "alice@contoso.test");
    assert_eq!(received["tls"]["version"], "TLSv1.3");
    assert_eq!(received["rules"][0], "tag-external:add_header", "{json:#}");
    let out = &events(&hops[0], "delivery");
    let out = out.last().unwrap();
    assert_eq!(out["result"], "delivered", "{json:#}");
    assert_eq!(out["connector"], "to-fabrikam");
    assert_eq!(out["tls"]["version"], "TLSv1.3");
    // The next hop's queue id is the one fabrikam's 250 named.
    let next_id = hops[1]["queue_id"].as_str().unwrap();
    assert!(
        out["detail"].as_str().unwrap().contains(next_id),
        "{json:#}"
    );
    let inbound = &events(&hops[1], "received")[0];
    assert_eq!(inbound["connector"], "from-contoso");
    assert_eq!(inbound["tls"]["version"], "TLSv1.3");
    assert_eq!(events(&hops[1], "delivery")[0]["route"], "local");

    // The text form says the same.
    let (cfg_c, cfg_f) = (path(&relay.contoso_config), path(&relay.fabrikam_config));
    let (code, text, err) = sealpost(&[
        "trace",
        "--config",
        cfg_c,
        "--config",
        cfg_f,
        "--message-id",
        &format!("<{message_id}>"),
    ]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(
        text.starts_with(&format!("Message-ID <{message_id}>")),
        "{text}"
    );
    let contoso_at = text.find("  mx.contoso.test  queue id ").expect(&text);
    let fabrikam_at = text.find("  mx.fabrikam.test  queue id ").expect(&text);
    assert!(contoso_at < fabrikam_at, "{text}");
    assert!(text.contains("rules tag-external:add_header"), "{text}");
    assert!(text.contains("outbound connector to-fabrikam"), "{text}");
    assert!(text.contains("inbound connector from-contoso"), "{text}");
    assert!(text.matches("TLSv1.3 TLS_").count() >= 3, "{text}");
    assert_eq!(text.matches("final state: delivered").count(), 2, "{text}");

    // Filters by envelope address select it; a recipient it never had selects nothing.
    for filter in [
        ["--sender", "ALICE@contoso.test"],
        ["--recipient", "bob@fabrikam.test"],
    ] {
        let (code, out, err) = sealpost(&[
            "trace", "--config", cfg_c, "--config", cfg_f, filter[0], filter[1], "--json",
        ]);
        assert_eq!(code, 0, "{filter:?}: {out}{err}");
        let found: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(found.as_array().unwrap().len(), 1, "{filter:?}: {found:#}");
        assert_eq!(found[0]["hops"].as_array().unwrap().len(), 2);
    }
    let (code, out, _) = sealpost(&[
        "trace",
        "--config",
        cfg_c,
        "--config",
        cfg_f,
        "--recipient",
        "nobody@fabrikam.test",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no traced message matches"), "{out}");

    // The logs keep the Message-ID's hash, never the id or any content.
    let hash = hex::encode(Sha256::digest(message_id.as_bytes()));
    assert_eq!(messages[0]["message_id_sha256"], hash.as_str());
    for name in ["contoso-data", "fabrikam-data"] {
        let log = std::fs::read_to_string(relay.dir.path().join(name).join("trace.jsonl"))
            .unwrap_or_else(|e| panic!("{name}/trace.jsonl: {e}"));
        assert!(log.contains(&hash), "{name}: {log}");
        assert!(!log.contains(marker), "{name} holds the marker: {log}");
        assert!(!log.contains("leading dot"), "{name} holds the body: {log}");
    }
}
