//! `sealpost queue hold` and `queue release` against running servers: a message deferred by
//! `sealpost serve` (its next hop down) is held with the CLI, and from then on nothing delivers
//! it — not the server's retries, not `queue flush` once the next hop is back — until `queue
//! release`, after which it is delivered within a couple of seconds. On the spool with one
//! server; on PostgreSQL with two nodes, the hold made through node A's configuration and the
//! message then left to node B. A message held for longer than the queue lifetime and released
//! while its next hop is still down is tried again and retried, not bounced.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sealpost::store::MailStore;
use support::domains::{
    free_port, message, open_store, queue_list_json, sealpost, wait_for_mailbox, DomainSpec,
    ServeProcess,
};
use support::pg_nodes::{queue_rows, storage_toml};
use support::plain_smtp::PlainClient;
use support::postgres::Cluster;

const FROM: &str = "alice@contoso.test";
const TO: &str = "bob@fabrikam.test";
const WAIT: Duration = Duration::from_secs(20);
/// Longer than the runner's scan interval (1 s) plus the test domains' retry_max (2 s): a
/// message that could be delivered would be by then.
const QUIET: Duration = Duration::from_secs(4);

fn arg(config: &Path) -> String {
    config.display().to_string()
}

/// Sends one message for fabrikam through the server on `port`; its queue id.
fn send(port: u16, marker: &str) -> String {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut client = PlainClient::connect(addr, WAIT).expect("connect");
    let reply = client
        .send_mail(FROM, TO, &message(FROM, TO, marker))
        .expect("reply");
    assert_eq!(reply.code, 250, "{reply}");
    client.quit();
    reply
        .text
        .split_whitespace()
        .last()
        .expect("id")
        .to_string()
}

/// Waits until `queue list --json` shows `id` in `state`.
fn wait_for_state(config: &Path, id: &str, state: &str) {
    let until = Instant::now() + WAIT;
    loop {
        let out = queue_list_json(config);
        let shown = out
            .lines()
            .any(|l| l.contains(id) && l.contains(&format!("\"state\":\"{state}\"")));
        if shown {
            return;
        }
        assert!(Instant::now() < until, "{id} never {state}:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `queue hold <id>`, again while the server happens to be in the middle of an attempt (the
/// refusal says so).
fn hold(config: &Path, id: &str) {
    let until = Instant::now() + WAIT;
    loop {
        let (code, out, err) = sealpost(&["queue", "hold", "--config", &arg(config), id]);
        if code == 0 {
            assert_eq!(out, format!("{id}: held\n"));
            return;
        }
        assert!(
            err.starts_with(&format!("sealpost: {id}: ")) && err.contains("being delivered"),
            "{err}"
        );
        assert!(Instant::now() < until, "never held: {err}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The part shared by both backends, from the message held to its delivery after release.
/// `admin` is the configuration the CLI runs with; fabrikam starts on `fport` meanwhile.
fn flush_and_release(admin: &Path, id: &str, dir: &Path, fport: u16) -> ServeProcess {
    wait_for_state(admin, id, "hold");
    let (code, out, _) = sealpost(&["queue", "list", "--config", &arg(admin)]);
    assert_eq!(code, 0);
    let row = out.lines().find(|l| l.starts_with(id)).expect("listed");
    assert!(
        out.contains("Connection refused"),
        "the last error stays shown:\n{out}"
    );
    assert_eq!(row.split_whitespace().nth(1), Some("hold"), "{out}");

    // The next hop comes back and the queue is flushed: still nothing delivers it.
    let fabrikam = DomainSpec::new("fabrikam", &[TO], fport).write(dir);
    let f_server = ServeProcess::start(&fabrikam, fport);
    let (code, out, err) = sealpost(&["queue", "flush", "--config", &arg(admin)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "0 deferred message(s) made due\n");
    std::thread::sleep(QUIET);
    let f_data = dir.join("fabrikam-data");
    let store = open_store(&f_data, "test");
    assert!(store.list(TO).unwrap().is_empty(), "delivered while held");
    wait_for_state(admin, id, "hold");

    // Wrong ids fail, naming the id; the others on the command line are still done.
    let unknown = sealpost::queue::new_queue_id();
    let (code, _, err) = sealpost(&["queue", "release", "--config", &arg(admin), &unknown]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("sealpost: {unknown}: no held message with this id in the queue\n")
    );
    let (code, _, err) = sealpost(&["queue", "hold", "--config", &arg(admin), &unknown, id]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("sealpost: {unknown}: no waiting message")),
        "{err}"
    );
    assert!(
        err.contains(&format!("sealpost: {id}: no waiting message")),
        "{err}"
    );

    // Released: delivered within a couple of seconds.
    let released = Instant::now();
    let (code, out, err) = sealpost(&["queue", "release", "--config", &arg(admin), id]);
    assert_eq!(
        (code, out.as_str()),
        (0, format!("{id}: released\n").as_str()),
        "{err}"
    );
    let got = wait_for_mailbox(&f_data, TO, 1, Duration::from_secs(5));
    let took = released.elapsed();
    eprintln!("delivered {took:?} after `queue release`");
    assert!(String::from_utf8_lossy(&got[0]).contains("RELEASE-ME"));
    let until = Instant::now() + WAIT;
    while !queue_list_json(admin).is_empty() {
        assert!(Instant::now() < until, "the queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
    f_server
}

#[test]
fn a_held_message_waits_for_release_on_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let (port, fport) = (free_port(), free_port());
    let contoso = DomainSpec::new("contoso", &[FROM], port)
        .route("fabrikam.test", fport)
        .write(dir.path());
    let server = ServeProcess::start(&contoso, port);
    let id = send(port, "RELEASE-ME");
    wait_for_state(&contoso, &id, "deferred");
    hold(&contoso, &id);
    let held = dir.path().join("contoso-data/queue/hold").join(&id);
    assert!(held.is_file(), "{} missing", held.display());
    let _fabrikam = flush_and_release(&contoso, &id, dir.path(), fport);
    assert!(!held.exists());
    drop(server);
}

#[test]
fn a_hold_through_one_node_keeps_another_node_from_delivering() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let database = cluster.create_database();
    let dir = tempfile::tempdir().unwrap();
    let password = cluster.password_file(dir.path());
    let fport = free_port();
    let mut nodes: Vec<(PathBuf, u16)> = Vec::new();
    for node in ["a", "b"] {
        let home = dir.path().join(node);
        std::fs::create_dir_all(&home).unwrap();
        let port = free_port();
        let storage = storage_toml(
            &cluster,
            &database,
            &password,
            &format!("node-{node}"),
            "4s",
        );
        let config = DomainSpec::new("contoso", &[FROM], port)
            .route("fabrikam.test", fport)
            .toml(&storage)
            .write(&home);
        nodes.push((config, port));
    }
    share_service_key(&nodes[0].0, &nodes[1].0);
    let [(a, a_port), (b, b_port)] = [nodes[0].clone(), nodes[1].clone()];
    let a_server = ServeProcess::start(&a, a_port);
    let _b_server = ServeProcess::start(&b, b_port);
    let id = send(a_port, "RELEASE-ME");
    wait_for_state(&a, &id, "deferred");
    hold(&a, &id);
    // A goes away; B, running all along, is the only node that could deliver it.
    a_server.kill9();
    let rows = queue_rows(&cluster, &database);
    assert_eq!(rows, [(id.clone(), "hold".into(), String::new())]);
    let _fabrikam = flush_and_release(&b, &id, dir.path(), fport);
    assert!(queue_rows(&cluster, &database).is_empty());
}

/// Copies the service key of the first node's keystore (made if missing) into the second's:
/// any node opens what another one queued.
fn share_service_key(first: &Path, second: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    let keystore = |c: &Path| c.with_file_name("contoso-data.keystore");
    let key = sealpost::crypto::keyfile::ServiceKey::load_or_create(&keystore(first)).unwrap();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(keystore(second))
        .unwrap();
    std::fs::copy(key.path(), keystore(second).join("service.key")).unwrap();
}

#[test]
fn all_holds_every_waiting_message_and_releases_every_held_one() {
    let dir = tempfile::tempdir().unwrap();
    let contoso = DomainSpec::new("contoso", &[FROM], free_port()).write(dir.path());
    let data = dir.path().join("contoso-data");
    let key = sealpost::crypto::keyfile::ServiceKey::load_or_create(
        &dir.path().join("contoso-data.keystore"),
    )
    .unwrap();
    let spool = sealpost::queue::Spool::open(&data, std::sync::Arc::new(key)).unwrap();
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let env = sealpost::queue::Envelope::new(
                sealpost::queue::new_queue_id(),
                FROM,
                vec![TO.into()],
                "client.test",
                "127.0.0.1:40000",
                0,
            );
            spool.enqueue(&env, &message(FROM, TO, "ALL")).unwrap();
            env.id
        })
        .collect();
    spool.claim(&ids[2]).unwrap().expect("claimed");

    let (code, out, err) = sealpost(&["queue", "hold", "--config", &arg(&contoso), "ALL"]);
    assert_eq!(code, 0, "{err}");
    let expect = format!("{}: held\n{}: held\n2 message(s) held\n", ids[0], ids[1]);
    assert_eq!(out, expect, "the active one is left alone");
    let states: Vec<String> = spool
        .list()
        .unwrap()
        .iter()
        .map(|e| e.state.to_string())
        .collect();
    assert_eq!(states, ["active", "hold", "hold"]);
    let (code, out, err) = sealpost(&["queue", "release", "--config", &arg(&contoso), "ALL"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("2 message(s) released\n"), "{out}");
    assert_eq!(spool.incoming_ids().unwrap(), ids[..2]);
    // Hold through the CLI, then the active one: refused, saying why, and the exit status is 1.
    let (code, _, err) = sealpost(&["queue", "hold", "--config", &arg(&contoso), &ids[2]]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("sealpost: {}: ", ids[2]))
            && err.contains("being delivered; try again when the attempt ends"),
        "{err}"
    );
}

/// The envelope of `id` as `queue list --json` shows it, if listed.
fn listed_envelope(config: &Path, id: &str) -> Option<serde_json::Value> {
    queue_list_json(config)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["envelope"]["id"] == id)
        .map(|v| v["envelope"].clone())
}

/// A message held for longer than the queue lifetime is released while its next hop is still
/// down: its lifetime starts again at the release, so the failed attempt that follows defers it
/// instead of bouncing it, and it is delivered once the next hop is back.
#[test]
fn a_message_held_past_its_lifetime_is_tried_again_after_release_not_bounced() {
    let dir = tempfile::tempdir().unwrap();
    let (port, fport) = (free_port(), free_port());
    let mut spec = DomainSpec::new("contoso", &[FROM], port).route("fabrikam.test", fport);
    spec.lifetime = Some("6s");
    let contoso = spec.write(dir.path());
    let _server = ServeProcess::start(&contoso, port);
    let sent = Instant::now();
    let id = send(port, "HELD-LONG");
    wait_for_state(&contoso, &id, "deferred");
    hold(&contoso, &id);
    let attempts = listed_envelope(&contoso, &id).expect("held")["attempts"]
        .as_u64()
        .expect("attempts");
    std::thread::sleep(Duration::from_secs(8).saturating_sub(sent.elapsed()));

    // Released with the next hop still down: tried again, failed, and waiting for the next
    // attempt, not bounced.
    let (code, out, err) = sealpost(&["queue", "release", "--config", &arg(&contoso), &id]);
    assert_eq!((code, out), (0, format!("{id}: released\n")), "{err}");
    let until = Instant::now() + WAIT;
    let envelope = loop {
        let env = listed_envelope(&contoso, &id).expect("bounced after the release");
        if env["attempts"].as_u64() > Some(attempts) {
            break env;
        }
        assert!(Instant::now() < until, "never tried again: {env}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(envelope["released_at"].as_i64().is_some(), "{envelope}");
    let data = dir.path().join("contoso-data");
    let store = open_store(&data, "test");
    let bounced = store
        .list(FROM)
        .unwrap()
        .iter()
        .filter_map(|m| store.read(FROM, &m.id).ok())
        .any(|m| String::from_utf8_lossy(&m).contains("Undelivered Mail"));
    assert!(!bounced, "bounced for its time on hold");

    // The next hop comes back: delivered.
    let fabrikam = DomainSpec::new("fabrikam", &[TO], fport).write(dir.path());
    let _f_server = ServeProcess::start(&fabrikam, fport);
    let (code, _, err) = sealpost(&["queue", "flush", "--config", &arg(&contoso)]);
    assert_eq!(code, 0, "{err}");
    let got = wait_for_mailbox(&dir.path().join("fabrikam-data"), TO, 1, WAIT);
    assert!(String::from_utf8_lossy(&got[0]).contains("HELD-LONG"));
}
