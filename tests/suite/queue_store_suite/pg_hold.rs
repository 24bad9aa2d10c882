//! Hold on PostgreSQL beyond the common contract: a hold made through one node keeps every node
//! from claiming, a message left active by a node that stopped can be held, and a database at
//! schema 3 (before hold existed) is migrated to 4 with its rows kept.

use std::time::{Duration, Instant};

use sealpost::pg::{Database, MIGRATIONS, SCHEMA_VERSION};
use sealpost::queue::{QueueError, QueueState};

use crate::queue_store_suite::harness::{Backend, Harness};
use crate::queue_store_suite::{enqueued, states};

#[test]
fn a_hold_on_one_node_keeps_every_node_from_claiming() {
    let Some(h) = Harness::open_with_lease(Backend::Postgres, Duration::from_secs(2)) else {
        return;
    };
    let (a, b) = (h.node("node-a"), h.node("node-b"));
    let env = enqueued(&*a);
    assert!(b.hold(&env.id).unwrap());
    assert!(a.claim(&env.id).unwrap().is_none());
    assert!(a.incoming_ids().unwrap().is_empty());
    assert_eq!(states(&*a), [(QueueState::Hold, env.id.clone())]);
    let state = h.sql(&format!(
        "SELECT state, lease_node IS NULL FROM queue_message WHERE id = '{}'",
        env.id
    ));
    assert_eq!(state.trim(), "hold|t");
    assert!(a.release(&env.id).unwrap());
    assert!(
        b.claim(&env.id).unwrap().is_some(),
        "released on a, claimed on b"
    );
    // Busy names the node delivering it.
    match a.hold(&env.id) {
        Err(QueueError::Busy { location, .. }) => {
            assert!(location.contains("node-b"), "{location}")
        }
        other => panic!("{other:?}"),
    }

    // A node that stops leaves its message active until the lease expires: waiting again then,
    // so it can be held (and its lease is cleared).
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !a.incoming_ids().unwrap().contains(&env.id) {
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(a.hold(&env.id).unwrap());
    let state = h.sql(&format!(
        "SELECT state, lease_node IS NULL, lease_until IS NULL FROM queue_message \
         WHERE id = '{}'",
        env.id
    ));
    assert_eq!(state.trim(), "hold|t|t");
    assert_eq!(h.node("node-b").recover().unwrap().requeued, 0);
    assert_eq!(states(&*a), [(QueueState::Hold, env.id)]);
}

#[test]
fn a_database_at_schema_3_is_migrated_to_the_newest_with_its_rows() {
    let Some(cluster) = crate::queue_store_suite::pg::shared() else {
        return;
    };
    let database = cluster.create_database();
    let dir = tempfile::tempdir().unwrap();
    let settings = cluster.settings(&database, &cluster.password_file(dir.path()));
    // The schema as sealpost left it before this version: migrations 1 to 3, with rows.
    let mut sql = String::from(
        "CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now());",
    );
    for m in MIGRATIONS.iter().filter(|m| m.version <= 3) {
        sql.push_str(m.sql);
        sql.push_str(&format!(
            ";\nINSERT INTO schema_version (version, name) VALUES ({}, '{}');\n",
            m.version, m.name
        ));
    }
    cluster.psql(&database, &sql);
    let check = cluster.psql(
        &database,
        "SELECT conname FROM pg_constraint WHERE conrelid = 'queue_message'::regclass \
         AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%deferred%'",
    );
    assert_eq!(
        check.trim(),
        "queue_message_state_check",
        "the name 004 drops"
    );
    cluster.psql(
        &database,
        "INSERT INTO queue_message (id, state, envelope, next_attempt, size, body) VALUES \
         ('A1', 'incoming', '\\x7b7d', 0, 1, '\\x01'), \
         ('A2', 'deferred', '\\x7b7d', 5, 2, '\\x02')",
    );

    let db = Database::open(&settings).unwrap();
    drop(db);
    let versions = cluster.psql(
        &database,
        "SELECT string_agg(version::text || ':' || name, ',' ORDER BY version) FROM schema_version",
    );
    let all: Vec<String> = MIGRATIONS
        .iter()
        .map(|m| format!("{}:{}", m.version, m.name))
        .collect();
    assert_eq!(versions.trim(), all.join(","));
    assert!(all[3] == "4:queue hold" && SCHEMA_VERSION >= 4, "{all:?}");
    let rows = cluster.psql(
        &database,
        "SELECT string_agg(id || ':' || state || ':' || next_attempt || ':' || size, ',' \
         ORDER BY id) FROM queue_message",
    );
    assert_eq!(rows.trim(), "A1:incoming:0:1,A2:deferred:5:2");
    // The widened check allows 'hold' and still refuses anything else.
    cluster.psql(
        &database,
        "UPDATE queue_message SET state = 'hold' WHERE id = 'A1'",
    );
    let bogus = cluster.psql(
        &database,
        "DO $$ BEGIN UPDATE queue_message SET state = 'bogus' WHERE id = 'A2'; \
         RAISE EXCEPTION 'accepted'; EXCEPTION WHEN check_violation THEN RAISE NOTICE 'ok'; \
         END $$; SELECT state FROM queue_message WHERE id = 'A2'",
    );
    assert_eq!(bogus.trim(), "deferred");
    // Opening again applies nothing twice.
    drop(Database::open(&settings).unwrap());
    let n = cluster.psql(&database, "SELECT count(*) FROM schema_version");
    assert_eq!(n.trim(), SCHEMA_VERSION.to_string());
}
