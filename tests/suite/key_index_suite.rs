//! The key index suite: what every `KeyIndex` backend must do, whatever keeps the rows. Each test
//! runs once on SQLite (`sqlite::<test>`) and once on PostgreSQL (`postgres::<test>`, a real
//! server started by `tests/support/postgres.rs`; without one it says why it skips, and under
//! `CI` it fails), each from an empty index.

#[allow(dead_code)]
use crate::support::postgres as pg;

use std::sync::Arc;

use sealpost::pg::Database;
use sealpost::store::audit::Anchor;
use sealpost::store::backend::postgres::PgTransaction;
use sealpost::store::backend::sqlite::SqliteKeyIndex;
use sealpost::store::backend::{KeyIndex, MailboxKeyRow, PolicyKeyRow, Shredded, WrapRow};
use sealpost::store::index::{self, MessageRow};
use sealpost::store::IndexErrorKind;

/// An empty index of one backend.
trait Harness {
    fn name(&self) -> &'static str;
    /// Runs `f` in one transaction, committed when `commit`, rolled back otherwise.
    fn transaction(&mut self, commit: bool, f: &mut dyn FnMut(&dyn KeyIndex));
    /// Stores a message whose content key is wrapped under mailbox key `mailbox_key_id`: message
    /// rows are not the key index's, but a revocation counts the messages it makes unreadable.
    fn add_message(&mut self, mailbox: &str, mailbox_key_id: i64);
}

struct Sqlite {
    _dir: tempfile::TempDir,
    conn: rusqlite::Connection,
    messages: u32,
}

impl Sqlite {
    fn new() -> Sqlite {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = index::open(&dir.path().join("index.sqlite")).expect("open index");
        Sqlite {
            _dir: dir,
            conn,
            messages: 0,
        }
    }
}

impl Harness for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn transaction(&mut self, commit: bool, f: &mut dyn FnMut(&dyn KeyIndex)) {
        let tx = self.conn.transaction().expect("begin");
        f(&SqliteKeyIndex::new(&tx));
        if commit {
            tx.commit().expect("commit");
        }
    }

    fn add_message(&mut self, mailbox: &str, mailbox_key_id: i64) {
        self.messages += 1;
        let id = format!("{:016X}", self.messages);
        let row = MessageRow {
            seq: 0,
            id: id.clone(),
            mailbox: mailbox.into(),
            received: index::now(),
            size: 1,
            flags: 0,
            blob: format!("{id:0>32}"),
            mailbox_key_id: Some(mailbox_key_id),
            wrapped_key: Some(vec![2; 41]),
            meta: vec![0; 32],
            digest: None,
        };
        index::insert_message(&self.conn, &row).expect("insert message");
    }
}

/// A new database in the test binary's PostgreSQL cluster, its schema applied.
struct Postgres {
    _dir: tempfile::TempDir,
    cluster: &'static pg::Cluster,
    database: String,
    db: Arc<Database>,
    messages: u32,
}

impl Postgres {
    fn new() -> Option<Postgres> {
        let cluster = pg::shared()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let database = cluster.create_database();
        let settings = cluster.settings(&database, &cluster.password_file(dir.path()));
        let db = Database::open(&settings).expect("open the database");
        Some(Postgres {
            _dir: dir,
            cluster,
            database,
            db,
            messages: 0,
        })
    }
}

impl Harness for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn transaction(&mut self, commit: bool, f: &mut dyn FnMut(&dyn KeyIndex)) {
        let tx = PgTransaction::begin(&self.db).expect("begin");
        f(&tx.key_index());
        if commit {
            tx.commit().expect("commit");
        }
    }

    fn add_message(&mut self, mailbox: &str, mailbox_key_id: i64) {
        self.messages += 1;
        let id = format!("{:016X}", self.messages);
        self.cluster.psql(
            &self.database,
            &format!(
                "INSERT INTO store_message (id, mailbox, received, size, blob, mailbox_key_id, \
                 wrapped_key, meta) VALUES ('{id}', '{mailbox}', 0, 1, '{id:0>32}', \
                 {mailbox_key_id}, '\\x02', '\\x00')"
            ),
        );
    }
}

/// Runs `f` in a committed transaction and returns what it returned.
fn commit<R>(h: &mut dyn Harness, f: impl FnOnce(&dyn KeyIndex) -> R) -> R {
    let (mut f, mut out) = (Some(f), None);
    h.transaction(true, &mut |ix| {
        out = Some((f.take().expect("called once"))(ix))
    });
    out.expect("transaction ran")
}

/// Runs `f` in a transaction that is rolled back.
fn roll_back<R>(h: &mut dyn Harness, f: impl FnOnce(&dyn KeyIndex) -> R) -> R {
    let (mut f, mut out) = (Some(f), None);
    h.transaction(false, &mut |ix| {
        out = Some((f.take().expect("called once"))(ix))
    });
    out.expect("transaction ran")
}

fn wrap(kind: &str, key_id: &str, byte: u8) -> WrapRow {
    WrapRow {
        kind: kind.into(),
        key_id: key_id.into(),
        wrapped: vec![byte; 40],
    }
}

/// Wraps given out of order: availability first, roots reversed.
fn three_wraps() -> Vec<WrapRow> {
    vec![
        wrap("availability", "cc", 3),
        wrap("root", "bb", 2),
        wrap("root", "aa", 1),
    ]
}

fn new_policy_key(h: &mut dyn Harness, policy: &str) -> PolicyKeyRow {
    commit(h, |ix| ix.insert_policy_key(policy, &three_wraps())).expect("insert policy key")
}

fn new_mailbox_key(h: &mut dyn Harness, mailbox: &str, pk: i64, byte: u8) -> i64 {
    commit(h, |ix| ix.insert_mailbox_key(mailbox, pk, &[byte; 41])).expect("insert mailbox key")
}

fn a_new_policy_key_is_active_with_its_wraps_in_order(h: &mut dyn Harness) {
    let pk = new_policy_key(h, "p");
    assert_eq!(
        (pk.policy.as_str(), pk.generation, pk.state.as_str()),
        ("p", 1, "active")
    );
    commit(h, |ix| {
        assert_eq!(ix.active_policy_key("p").unwrap(), Some(pk.clone()));
        assert_eq!(ix.policy_key(pk.id).unwrap(), Some(pk.clone()));
        assert_eq!(ix.active_policy_key("q").unwrap(), None);
        assert_eq!(ix.policy_key(pk.id + 1000).unwrap(), None);
        assert!(!ix.policy_revoked("p").unwrap());
        assert_eq!(
            ix.wraps(pk.id).unwrap(),
            vec![
                wrap("root", "aa", 1),
                wrap("root", "bb", 2),
                wrap("availability", "cc", 3)
            ],
            "root wraps first, each kind by key id"
        );
        assert!(ix.wraps(pk.id + 1000).unwrap().is_empty());
    });
}

fn generations_count_per_policy_and_ids_strictly_increase(h: &mut dyn Harness) {
    let p1 = new_policy_key(h, "p");
    let q1 = new_policy_key(h, "q");
    let p2 = new_policy_key(h, "p");
    assert_eq!((p1.generation, q1.generation, p2.generation), (1, 1, 2));
    assert!(p1.id < q1.id && q1.id < p2.id, "{p1:?} {q1:?} {p2:?}");
    // Both generations active: the newest is current.
    assert_eq!(
        commit(h, |ix| ix.active_policy_key("p").unwrap()),
        Some(p2.clone())
    );
    commit(h, |ix| ix.retire_policy_key(p2.id)).unwrap();
    assert_eq!(
        commit(h, |ix| ix.active_policy_key("p").unwrap()),
        Some(p1.clone())
    );
    commit(h, |ix| ix.retire_policy_key(p1.id)).unwrap();
    // A retired generation's number is never given again.
    let p3 = new_policy_key(h, "p");
    assert_eq!(p3.generation, 3);
    assert!(p3.id > p2.id);
    let m1 = new_mailbox_key(h, "a@t.test", p3.id, 1);
    let m2 = new_mailbox_key(h, "b@t.test", q1.id, 2);
    let m3 = new_mailbox_key(h, "a@t.test", p3.id, 3);
    assert!(m1 < m2 && m2 < m3, "{m1} {m2} {m3}");
}

fn retiring_destroys_the_wraps_and_keeps_the_row(h: &mut dyn Harness) {
    let pk = new_policy_key(h, "p");
    commit(h, |ix| ix.retire_policy_key(pk.id)).unwrap();
    commit(h, |ix| {
        assert_eq!(ix.active_policy_key("p").unwrap(), None);
        let row = ix.policy_key(pk.id).unwrap().expect("still readable");
        assert_eq!((row.generation, row.state.as_str()), (1, "retired"));
        assert!(ix.wraps(pk.id).unwrap().is_empty());
        assert!(!ix.policy_revoked("p").unwrap(), "retired is not revoked");
    });
}

fn a_root_wrap_is_replaced_in_place_and_only_a_root_wrap(h: &mut dyn Harness) {
    let pk = new_policy_key(h, "p");
    let other = new_policy_key(h, "q");
    commit(h, |ix| {
        assert!(ix.replace_root_wrap(pk.id, "aa", "dd", &[4; 40]).unwrap());
        assert!(!ix.replace_root_wrap(pk.id, "aa", "ee", &[5; 40]).unwrap());
        assert!(
            !ix.replace_root_wrap(pk.id, "cc", "ee", &[5; 40]).unwrap(),
            "the availability wrap is not a root wrap"
        );
        assert!(!ix
            .replace_root_wrap(pk.id + 1000, "bb", "ee", &[5; 40])
            .unwrap());
        assert_eq!(
            ix.wraps(pk.id).unwrap(),
            vec![
                wrap("root", "bb", 2),
                wrap("root", "dd", 4),
                wrap("availability", "cc", 3)
            ]
        );
        assert_eq!(ix.wraps(other.id).unwrap(), {
            let mut w = three_wraps();
            w.reverse();
            w
        });
    });
}

fn mailbox_keys_current_by_id_and_under_a_policy_key(h: &mut dyn Harness) {
    let pk = new_policy_key(h, "p");
    let a1 = new_mailbox_key(h, "a@t.test", pk.id, 1);
    let b = new_mailbox_key(h, "b@t.test", pk.id, 2);
    let a2 = new_mailbox_key(h, "a@t.test", pk.id, 3);
    let row = |id: i64, mailbox: &str, byte: u8| MailboxKeyRow {
        id,
        mailbox: mailbox.into(),
        policy_key_id: Some(pk.id),
        wrapped: Some(vec![byte; 41]),
        state: "active".into(),
    };
    commit(h, |ix| {
        assert_eq!(
            ix.current_mailbox_key("a@t.test").unwrap(),
            Some(row(a2, "a@t.test", 3)),
            "the newest key is current"
        );
        assert_eq!(
            ix.current_mailbox_key("b@t.test").unwrap(),
            Some(row(b, "b@t.test", 2))
        );
        assert_eq!(ix.current_mailbox_key("c@t.test").unwrap(), None);
        assert_eq!(ix.mailbox_key(a1).unwrap(), Some(row(a1, "a@t.test", 1)));
        assert_eq!(ix.mailbox_key(a2 + 1000).unwrap(), None);
        assert_eq!(
            ix.mailbox_keys_under(pk.id).unwrap(),
            vec![
                row(a1, "a@t.test", 1),
                row(b, "b@t.test", 2),
                row(a2, "a@t.test", 3)
            ]
        );
        assert!(ix.mailbox_keys_under(pk.id + 1000).unwrap().is_empty());
    });
}

fn rewrapping_moves_a_mailbox_key_under_another_policy_key(h: &mut dyn Harness) {
    let p = new_policy_key(h, "p");
    let q = new_policy_key(h, "q");
    let a = new_mailbox_key(h, "a@t.test", p.id, 1);
    let b = new_mailbox_key(h, "b@t.test", p.id, 2);
    commit(h, |ix| ix.rewrap_mailbox_key(a, q.id, &[9; 41])).unwrap();
    commit(h, |ix| {
        let row = ix.mailbox_key(a).unwrap().unwrap();
        assert_eq!(row.policy_key_id, Some(q.id));
        assert_eq!(row.wrapped, Some(vec![9; 41]));
        assert_eq!(row.state, "active");
        let under = |id| -> Vec<i64> {
            ix.mailbox_keys_under(id)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(under(p.id), vec![b]);
        assert_eq!(under(q.id), vec![a]);
    });
}

fn revoking_a_policy_shreds_its_keys_and_spares_the_others(h: &mut dyn Harness) {
    let p1 = new_policy_key(h, "p");
    let p2 = new_policy_key(h, "p");
    commit(h, |ix| ix.retire_policy_key(p1.id)).unwrap();
    let q = new_policy_key(h, "q");
    let a = new_mailbox_key(h, "a@t.test", p2.id, 1);
    let b = new_mailbox_key(h, "b@t.test", p2.id, 2);
    let c = new_mailbox_key(h, "c@t.test", q.id, 3);
    for (mailbox, key) in [
        ("a@t.test", a),
        ("a@t.test", a),
        ("b@t.test", b),
        ("c@t.test", c),
    ] {
        h.add_message(mailbox, key);
    }

    let shredded = commit(h, |ix| ix.revoke_policy("p")).unwrap();
    assert_eq!(
        shredded,
        Shredded {
            generations: 2,
            mailbox_keys: 2,
            messages: 3
        }
    );
    commit(h, |ix| {
        assert!(ix.policy_revoked("p").unwrap());
        assert_eq!(ix.active_policy_key("p").unwrap(), None);
        for id in [p1.id, p2.id] {
            assert!(ix.wraps(id).unwrap().is_empty(), "wraps of {id} destroyed");
            assert_eq!(ix.policy_key(id).unwrap().unwrap().state, "revoked");
        }
        let row = ix.current_mailbox_key("a@t.test").unwrap().unwrap();
        assert_eq!(row.id, a);
        assert_eq!((row.wrapped, row.state.as_str()), (None, "revoked"));
        assert_eq!(row.policy_key_id, Some(p2.id), "names its policy still");
        assert!(ix.mailbox_keys_under(p2.id).unwrap().is_empty());
        // The other policy is untouched.
        assert!(!ix.policy_revoked("q").unwrap());
        assert_eq!(ix.active_policy_key("q").unwrap(), Some(q.clone()));
        assert_eq!(ix.wraps(q.id).unwrap().len(), 3);
        assert_eq!(
            ix.mailbox_key(c).unwrap().unwrap().wrapped,
            Some(vec![3; 41])
        );
    });
    // A revoked key is not re-wrapped back to life.
    commit(h, |ix| ix.rewrap_mailbox_key(b, q.id, &[7; 41])).unwrap();
    let row = commit(h, |ix| ix.mailbox_key(b).unwrap().unwrap());
    assert_eq!(
        (row.policy_key_id, row.wrapped, row.state.as_str()),
        (Some(p2.id), None, "revoked")
    );
    // Nothing is left to revoke, here or in a policy never used.
    assert_eq!(
        commit(h, |ix| ix.revoke_policy("p")).unwrap(),
        Shredded::default()
    );
    assert_eq!(
        commit(h, |ix| ix.revoke_policy("z")).unwrap(),
        Shredded::default()
    );
    // Ids keep increasing after a revocation.
    let q2 = new_policy_key(h, "q");
    assert!(q2.id > q.id && new_mailbox_key(h, "a@t.test", q2.id, 4) > c);
}

fn a_transaction_sees_its_own_writes_and_a_rolled_back_one_leaves_nothing(h: &mut dyn Harness) {
    let (pk, mk) = roll_back(h, |ix| {
        let pk = ix.insert_policy_key("p", &three_wraps()).unwrap();
        assert_eq!(ix.active_policy_key("p").unwrap(), Some(pk.clone()));
        let mk = ix.insert_mailbox_key("a@t.test", pk.id, &[1; 41]).unwrap();
        assert_eq!(ix.current_mailbox_key("a@t.test").unwrap().unwrap().id, mk);
        assert_eq!(ix.mailbox_keys_under(pk.id).unwrap().len(), 1);
        (pk, mk)
    });
    commit(h, |ix| {
        assert_eq!(ix.active_policy_key("p").unwrap(), None);
        assert_eq!(ix.policy_key(pk.id).unwrap(), None);
        assert_eq!(ix.mailbox_key(mk).unwrap(), None);
        assert!(ix.wraps(pk.id).unwrap().is_empty());
    });

    // A revocation previewed in a rolled-back transaction changes nothing.
    let pk = new_policy_key(h, "p");
    let mk = new_mailbox_key(h, "a@t.test", pk.id, 1);
    h.add_message("a@t.test", mk);
    let preview = roll_back(h, |ix| ix.revoke_policy("p")).unwrap();
    assert_eq!(
        preview,
        Shredded {
            generations: 1,
            mailbox_keys: 1,
            messages: 1
        }
    );
    commit(h, |ix| {
        assert!(!ix.policy_revoked("p").unwrap());
        assert_eq!(ix.active_policy_key("p").unwrap(), Some(pk.clone()));
        assert_eq!(ix.wraps(pk.id).unwrap().len(), 3);
        assert_eq!(
            ix.mailbox_key(mk).unwrap().unwrap().wrapped,
            Some(vec![1; 41])
        );
    });
}

fn the_audit_anchor_is_set_replaced_and_rolled_back(h: &mut dyn Harness) {
    let anchor = |seq: u64| Anchor {
        seq,
        hash: format!("{seq:064x}"),
    };
    assert_eq!(commit(h, |ix| ix.audit_anchor()).unwrap(), None);
    commit(h, |ix| ix.set_audit_anchor(&anchor(1))).unwrap();
    assert_eq!(commit(h, |ix| ix.audit_anchor()).unwrap(), Some(anchor(1)));
    commit(h, |ix| ix.set_audit_anchor(&anchor(2))).unwrap();
    assert_eq!(commit(h, |ix| ix.audit_anchor()).unwrap(), Some(anchor(2)));
    roll_back(h, |ix| ix.set_audit_anchor(&anchor(3))).unwrap();
    assert_eq!(commit(h, |ix| ix.audit_anchor()).unwrap(), Some(anchor(2)));
    // Two appends whose transactions commit out of order: the newer anchor stays.
    commit(h, |ix| ix.set_audit_anchor(&anchor(4))).unwrap();
    commit(h, |ix| ix.set_audit_anchor(&anchor(3))).unwrap();
    assert_eq!(commit(h, |ix| ix.audit_anchor()).unwrap(), Some(anchor(4)));
}

fn a_mailbox_key_under_no_policy_key_is_refused_as_a_conflict(h: &mut dyn Harness) {
    let e = commit(h, |ix| ix.insert_mailbox_key("a@t.test", 4242, &[1; 41])).unwrap_err();
    assert_eq!(e.index_kind(), Some(IndexErrorKind::Conflict), "{e}");
    assert_eq!(
        commit(h, |ix| ix.current_mailbox_key("a@t.test")).unwrap(),
        None
    );
}

/// Two nodes making a generation of one policy at once take turns: the second waits for the
/// first's transaction and then gets the next generation (not a conflict on the same one).
#[test]
fn postgres_nodes_creating_a_generation_of_one_policy_take_turns() {
    let Some(h) = Postgres::new() else { return };
    let first_tx = PgTransaction::begin(&h.db).expect("begin");
    let first = first_tx
        .key_index()
        .insert_policy_key("p", &three_wraps())
        .expect("first");
    let db = h.db.clone();
    let other = std::thread::spawn(move || {
        let tx = PgTransaction::begin(&db).expect("begin");
        let row = tx.key_index().insert_policy_key("p", &three_wraps());
        tx.commit().expect("commit");
        row
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!other.is_finished(), "the second node waits for the first");
    first_tx.commit().expect("commit");
    let second = other.join().expect("thread").expect("second");
    assert_eq!((first.generation, second.generation), (1, 2));
}

/// Two nodes delivering the first message of a mailbox at once: the second waits at the key
/// creation lock until the first committed its key, then finds that key and makes none.
#[test]
fn postgres_nodes_creating_a_mailbox_key_take_turns() {
    let Some(h) = Postgres::new() else { return };
    let first_tx = PgTransaction::begin(&h.db).expect("begin");
    let ix = first_tx.key_index();
    ix.lock_key_creation().expect("lock");
    assert_eq!(ix.current_mailbox_key("a@t.test").unwrap(), None);
    let pk = ix
        .insert_policy_key("p", &three_wraps())
        .expect("policy key");
    let mk = ix.insert_mailbox_key("a@t.test", pk.id, &[1; 41]).unwrap();
    let db = h.db.clone();
    let other = std::thread::spawn(move || {
        let tx = PgTransaction::begin(&db).expect("begin");
        let ix = tx.key_index();
        ix.lock_key_creation().expect("lock");
        let found = ix.current_mailbox_key("a@t.test").unwrap().map(|r| r.id);
        let policy = ix.active_policy_key("p").unwrap().map(|r| r.id);
        tx.commit().expect("commit");
        (found, policy)
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!other.is_finished(), "the second node waits for the first");
    first_tx.commit().expect("commit");
    assert_eq!(other.join().expect("thread"), (Some(mk), Some(pk.id)));
}

/// One `#[test]` per suite function and backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let mut h = crate::key_index_suite::Sqlite::new();
                    eprintln!("key index backend: {}", crate::key_index_suite::Harness::name(&h));
                    crate::key_index_suite::$name(&mut h);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(mut h) = crate::key_index_suite::Postgres::new() {
                        eprintln!("key index backend: {}", crate::key_index_suite::Harness::name(&h));
                        crate::key_index_suite::$name(&mut h);
                    }
                }
            )*
        }
    };
}
suite! {
    a_new_policy_key_is_active_with_its_wraps_in_order,
    generations_count_per_policy_and_ids_strictly_increase,
    retiring_destroys_the_wraps_and_keeps_the_row,
    a_root_wrap_is_replaced_in_place_and_only_a_root_wrap,
    mailbox_keys_current_by_id_and_under_a_policy_key,
    rewrapping_moves_a_mailbox_key_under_another_policy_key,
    revoking_a_policy_shreds_its_keys_and_spares_the_others,
    a_transaction_sees_its_own_writes_and_a_rolled_back_one_leaves_nothing,
    the_audit_anchor_is_set_replaced_and_rolled_back,
    a_mailbox_key_under_no_policy_key_is_refused_as_a_conflict,
}
