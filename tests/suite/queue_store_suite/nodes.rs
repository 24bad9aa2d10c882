//! Several nodes on one storage (PostgreSQL): any node accepts, any node delivers, a claim is a
//! lease, a dead node's messages come back when its leases expire, and `recover` never takes
//! what a live node holds. Plus the schema versioning of the database.

use std::time::{Duration, Instant};

use sealpost::pg::{Database, DbError, SCHEMA_VERSION};
use sealpost::queue::{QueueError, QueueState};

use crate::queue_store_suite::harness::{Backend, Harness};
use crate::queue_store_suite::{enqueued, progressed, states, MESSAGE, T0};

/// Leases of the tests that wait for one to expire.
const SHORT_LEASE: Duration = Duration::from_secs(2);

fn open() -> Option<Harness> {
    Harness::open(Backend::Postgres)
}

#[test]
fn two_nodes_claim_each_message_exactly_once() {
    let Some(h) = open() else { return };
    let ids: Vec<String> = (0..40).map(|_| enqueued(&*h.queue).id).collect();
    let nodes = [h.node("node-b"), h.node("node-c")];
    let won: Vec<(usize, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let q = nodes[i % 2].clone();
                let ids = &ids;
                s.spawn(move || {
                    ids.iter()
                        .filter(|id| q.claim(id).unwrap().is_some())
                        .map(|id| (i % 2, id.clone()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut all: Vec<String> = won.iter().map(|(_, id)| id.clone()).collect();
    all.sort();
    assert_eq!(all, ids, "every message claimed exactly once");
    // Each node finishes what it holds, and only that.
    for (node, id) in &won {
        let other = &nodes[1 - node];
        assert!(matches!(
            other.complete(id),
            Err(QueueError::NotActive { .. })
        ));
        nodes[*node].complete(id).unwrap();
    }
    assert!(h.queue.list().unwrap().is_empty());
}

#[test]
fn an_expired_lease_is_picked_up_by_another_node() {
    let Some(h) = Harness::open_with_lease(Backend::Postgres, SHORT_LEASE) else {
        return;
    };
    let dying = h.node("node-dies");
    let survivor = h.node("node-b");
    let env = enqueued(&*survivor);
    let (claimed, message) = dying.claim(&env.id).unwrap().unwrap();
    let checkpointed = progressed(claimed, T0);
    dying.checkpoint(&checkpointed, &message).unwrap();
    // Held and renewed: not waiting for anyone else, past the lease too.
    std::thread::sleep(SHORT_LEASE * 2);
    assert!(survivor.incoming_ids().unwrap().is_empty());
    assert_eq!(survivor.waiting_size(&env.id), None);
    assert!(survivor.claim(&env.id).unwrap().is_none(), "a live lease");

    // The node dies: nothing renews its lease any more.
    let died = Instant::now();
    drop(dying);
    let deadline = died + Duration::from_secs(30);
    while !survivor.incoming_ids().unwrap().contains(&env.id) {
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        died.elapsed() >= SHORT_LEASE / 2,
        "came back after {:?}, before its lease could expire",
        died.elapsed()
    );
    assert_eq!(survivor.waiting_size(&env.id), Some(MESSAGE.len() as u64));
    let (again, body) = survivor.claim(&env.id).unwrap().unwrap();
    assert_eq!(again, checkpointed, "the progress the dead node recorded");
    assert_eq!(body, MESSAGE);
    // The dead node restarts: what the survivor holds is not its own any more.
    let restarted = h.node("node-dies");
    assert_eq!(restarted.recover().unwrap().requeued, 0);
    assert!(matches!(
        restarted.complete(&env.id),
        Err(QueueError::NotActive { .. })
    ));
    survivor.complete(&env.id).unwrap();
    assert!(h.queue.list().unwrap().is_empty());
}

/// A claim committed in the database whose answer never reached the node (the connection broke
/// after the commit): the node does not know it holds the message, so it must not renew that
/// lease, and the message comes back when the lease expires.
#[test]
fn a_claim_the_node_never_heard_of_is_not_renewed() {
    let Some(h) = Harness::open_with_lease(Backend::Postgres, SHORT_LEASE) else {
        return;
    };
    let node = h.node("node-lost");
    let other = h.node("node-b");
    let (known, lost) = (enqueued(&*node), enqueued(&*node));
    node.claim(&known.id).unwrap().unwrap();
    // What the lost answer's UPDATE did, written behind the node's back.
    h.sql(&format!(
        "UPDATE queue_message SET state = 'active', lease_node = 'node-lost', \
         lease_until = clock_timestamp() + interval '2 seconds' WHERE id = '{}'",
        lost.id
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !other.incoming_ids().unwrap().contains(&lost.id) {
        assert!(
            Instant::now() < deadline,
            "the unknown lease was kept alive"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The claim the node knows of is still renewed, past its first expiry.
    assert!(!other.incoming_ids().unwrap().contains(&known.id));
    assert!(other.claim(&known.id).unwrap().is_none(), "a live lease");
    assert!(other.claim(&lost.id).unwrap().is_some());
    node.complete(&known.id).unwrap();
    other.complete(&lost.id).unwrap();
    assert!(h.queue.list().unwrap().is_empty());
}

#[test]
fn recover_does_not_steal_a_live_lease() {
    let Some(h) = open() else { return };
    let (a, b) = (h.node("node-b"), h.node("node-c"));
    let (held, own) = (enqueued(&*a), enqueued(&*a));
    a.claim(&held.id).unwrap().unwrap();
    b.claim(&own.id).unwrap().unwrap();
    // Node c restarts (a new instance with its id): it takes back its own, not node b's.
    let b_restarted = h.node("node-c");
    assert_eq!(b_restarted.recover().unwrap().requeued, 1);
    assert!(b_restarted.claim(&held.id).unwrap().is_none());
    assert_eq!(
        states(&*a),
        [
            (QueueState::Incoming, own.id.clone()),
            (QueueState::Active, held.id.clone())
        ]
    );
    a.complete(&held.id).unwrap();
    assert!(b_restarted.claim(&own.id).unwrap().is_some());
}

#[test]
fn the_schema_is_versioned_and_a_newer_one_refused() {
    let Some(h) = open() else { return };
    let versions =
        h.sql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version");
    let all: Vec<String> = (1..=SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(versions.trim(), all.join(","));
    // Opening again applies nothing twice.
    drop(Database::open(h.pg_settings()).unwrap());
    let versions = h.sql("SELECT count(*) FROM schema_version");
    assert_eq!(versions.trim(), SCHEMA_VERSION.to_string());
    h.sql("INSERT INTO schema_version (version, name) VALUES (999, 'from a newer sealpost')");
    match Database::open(h.pg_settings()) {
        Err(e @ DbError::SchemaTooNew { found: 999, .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("999") && text.contains("upgrade sealpost"),
                "{text}"
            );
        }
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[test]
fn a_stopped_node_leaves_no_lease_behind_in_listings() {
    let Some(h) = open() else { return };
    let env = enqueued(&*h.queue);
    let other = h.node("node-b");
    assert_eq!(other.list().unwrap()[0].envelope, env, "any node lists");
    let (claimed, message) = other.claim(&env.id).unwrap().unwrap();
    other
        .defer(&progressed(claimed, T0 + 60), &message)
        .unwrap();
    let leases = h.sql("SELECT count(*) FROM queue_message WHERE lease_node IS NOT NULL");
    assert_eq!(leases.trim(), "0", "a deferred message holds no lease");
    assert_eq!(h.queue.deferred().unwrap(), [(env.id.clone(), T0 + 60)]);
    assert!(
        h.queue.claim(&env.id).unwrap().is_some(),
        "any node delivers"
    );
}

#[test]
fn enqueues_from_two_nodes_at_once_all_land_and_deliver_once() {
    let Some(h) = open() else { return };
    let nodes = [h.node("node-b"), h.node("node-c")];
    let body = crate::queue_store_suite::large_message(10 * 1024);
    let started = Instant::now();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let q = nodes[i % 2].clone();
                let body = &body;
                s.spawn(move || {
                    (0..50)
                        .map(|_| {
                            let env = crate::queue_store_suite::envelope();
                            q.enqueue(&env, body).unwrap();
                            env.id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let took = started.elapsed();
    eprintln!(
        "200 enqueues of 10 KiB from 2 nodes x 2 threads: {took:?} ({:?} each, committed)",
        took / 200
    );
    assert_eq!(h.queue.counts().unwrap()[0], ("incoming", 200));
    // Both nodes drain the queue; each message is delivered (completed) exactly once.
    let done: usize = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|q| {
                let ids = &ids;
                s.spawn(move || {
                    let mut n = 0;
                    for id in ids {
                        if let Some((_, message)) = q.claim(id).unwrap() {
                            assert_eq!(message.len(), 10 * 1024);
                            q.complete(id).unwrap();
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(done, 200);
    assert!(h.queue.list().unwrap().is_empty());
}
