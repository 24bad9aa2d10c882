//! The message index suite: what every `MessageIndex` backend must do, whatever keeps the rows.
//! Each test runs once on SQLite (`sqlite::<test>`) and once on PostgreSQL (`postgres::<test>`,
//! a real server started by `tests/support/postgres.rs`; without one it says why it skips, and
//! under `CI` it fails), each from an empty index. A "node" is a second, independent handle on
//! the same index (another connection, another pool), as another process or server would hold.

#[allow(dead_code)]
use crate::support::postgres as pg;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealpost::pg::{Database, Heard};
use sealpost::store::backend::pg_changes::{MailboxChanges, CHANNEL};
use sealpost::store::backend::pg_messages::PgIndex;
use sealpost::store::backend::sqlite_index::SqliteIndex;
use sealpost::store::backend::{IndexBackend, MessageIndex};
use sealpost::store::folders::system::{DELETED, SEEN};
use sealpost::store::index::{self, MessageRow};
use sealpost::store::Flags;

/// An empty index of one backend, and as many nodes on it as a test asks for.
trait Harness {
    fn name(&self) -> &'static str;
    fn node(&self) -> Box<dyn IndexBackend>;
}

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Harness for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn node(&self) -> Box<dyn IndexBackend> {
        Box::new(SqliteIndex::open(&self.dir.path().join("index.sqlite")).expect("open index"))
    }
}

struct Postgres {
    dir: tempfile::TempDir,
    cluster: &'static pg::Cluster,
    database: String,
}

impl Postgres {
    fn new() -> Option<Postgres> {
        let cluster = pg::shared()?;
        Some(Postgres {
            dir: tempfile::tempdir().expect("tempdir"),
            cluster,
            database: cluster.create_database(),
        })
    }
}

impl Harness for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn node(&self) -> Box<dyn IndexBackend> {
        let password = self.cluster.password_file(self.dir.path());
        let settings = self.cluster.settings(&self.database, &password);
        let db: Arc<Database> = Database::open(&settings).expect("open the database");
        Box::new(PgIndex::new(db, "node-1", changes()))
    }
}

/// Change tokens as every node of a test database makes them.
fn changes() -> Arc<MailboxChanges> {
    use aws_lc_rs::hmac;
    Arc::new(MailboxChanges::new(hmac::Key::new(
        hmac::HMAC_SHA256,
        b"test change key",
    )))
}

/// Runs `f` in a committed write transaction of `node`.
fn commit<R>(node: &dyn IndexBackend, f: impl FnOnce(&dyn MessageIndex) -> R) -> R {
    let tx = node.write().expect("begin");
    let out = f(&*tx.messages());
    tx.commit().expect("commit");
    out
}

fn row(mailbox: &str, id: &str) -> MessageRow {
    MessageRow {
        seq: 0,
        id: id.into(),
        mailbox: mailbox.into(),
        received: 1_700_000_000,
        size: 10,
        flags: 0,
        blob: format!("{id:0>32}"),
        mailbox_key_id: None,
        wrapped_key: None,
        meta: format!("meta of {id}").into_bytes(),
        digest: Some(vec![7; 32]),
    }
}

fn ids(rows: &[MessageRow]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

const A: &str = "a@t.test";
const B: &str = "b@t.test";

fn rows_are_kept_listed_counted_and_updated(h: &dyn Harness) {
    let n = h.node();
    let n = &*n;
    let f1 = commit(n, |ix| ix.insert_message(&row(A, "M1"), "INBOX")).unwrap();
    let f2 = commit(n, |ix| ix.insert_message(&row(B, "M2"), "INBOX")).unwrap();
    let f3 = commit(n, |ix| ix.insert_message(&row(A, "M3"), "INBOX")).unwrap();
    assert!(f1.seq < f2.seq && f2.seq < f3.seq, "{f1:?} {f2:?} {f3:?}");
    assert_eq!((f1.uid, f2.uid, f3.uid), (1, 1, 2), "UIDs count per folder");
    // A rolled-back insert leaves nothing.
    {
        let tx = n.write().unwrap();
        tx.messages()
            .insert_message(&row(A, "M4"), "INBOX")
            .unwrap();
    }
    commit(n, |ix| {
        assert_eq!(ids(&ix.messages(A).unwrap()), ["M1", "M3"]);
        assert_eq!(ids(&ix.all_messages().unwrap()), ["M1", "M2", "M3"]);
        assert_eq!((ix.count(A).unwrap(), ix.count(B).unwrap()), (2, 1));
        assert_eq!(ix.count("c@t.test").unwrap(), 0);
        assert_eq!(ix.mailboxes().unwrap(), [A, B]);
        assert!(ix.message(A, "M2").unwrap().is_none(), "M2 is B's");
        let m2 = ix.message(B, "M2").unwrap().expect("M2");
        let want = MessageRow {
            seq: f2.seq,
            ..row(B, "M2")
        };
        assert_eq!(format!("{m2:?}"), format!("{want:?}"));
        let mut changed = m2.clone();
        changed.blob = "f".repeat(32);
        changed.mailbox_key_id = None;
        changed.wrapped_key = Some(vec![2; 41]);
        changed.meta = vec![9; 48];
        changed.digest = None;
        ix.update_message_crypto(&changed).unwrap();
        let again = ix.message(B, "M2").unwrap().unwrap();
        assert_eq!(format!("{again:?}"), format!("{changed:?}"));
    });
}

fn uids_follow_commit_order_when_two_nodes_file_into_one_folder(h: &dyn Harness) {
    // Many inserts from two nodes at once: every UID once, each node's in increasing order.
    let mut threads = Vec::new();
    for t in 0..2 {
        let node = h.node();
        threads.push(std::thread::spawn(move || {
            (0..12)
                .map(|i| {
                    let m = row(A, &format!("T{t}M{i}"));
                    commit(&*node, |ix| ix.insert_message(&m, "INBOX"))
                        .unwrap()
                        .uid
                })
                .collect::<Vec<u32>>()
        }));
    }
    let mut all = BTreeSet::new();
    for t in threads {
        let uids = t.join().expect("thread");
        assert!(uids.windows(2).all(|w| w[0] < w[1]), "{uids:?}");
        all.extend(uids);
    }
    assert_eq!(all, (1..=24).collect::<BTreeSet<u32>>());

    // A node filing while another's filing is not committed waits for it, and comes after it.
    let (a, b) = (h.node(), h.node());
    let tx = a.write().unwrap();
    let first = tx
        .messages()
        .insert_message(&row(A, "X1"), "INBOX")
        .unwrap();
    assert_eq!(first.uid, 25);
    let committed = Arc::new(AtomicBool::new(false));
    let seen = committed.clone();
    let other = std::thread::spawn(move || {
        let filed = commit(&*b, |ix| ix.insert_message(&row(A, "X2"), "INBOX")).unwrap();
        (filed.uid, seen.load(Ordering::SeqCst))
    });
    std::thread::sleep(Duration::from_millis(300));
    committed.store(true, Ordering::SeqCst);
    tx.commit().unwrap();
    let (uid, after) = other.join().expect("thread");
    assert!(after, "the second node filed before the first committed");
    assert_eq!(uid, 26);
    commit(&*a, |ix| {
        let fid = ix.folder_id(A, "INBOX").unwrap().unwrap();
        assert_eq!(ix.folder_uids(fid).unwrap().1, 27);
        let uids: Vec<u32> = ix
            .folder_messages(fid)
            .unwrap()
            .iter()
            .map(|m| m.uid)
            .collect();
        assert_eq!(uids, (1..=26).collect::<Vec<u32>>());
    });
}

fn a_delivery_tag_is_recorded_once_across_nodes(h: &dyn Harness) {
    let (a, b) = (h.node(), h.node());
    // Held by an open transaction on node a: node b waits, then finds a's delivery.
    for (tag, commit_first) in [(&b"tag-1"[..], true), (&b"tag-2"[..], false)] {
        let b = h.node();
        let tx = a.write().unwrap();
        assert_eq!(tx.messages().insert_delivery(A, tag, "M1").unwrap(), None);
        let other = std::thread::spawn(move || {
            let tx = b.write().unwrap();
            let found = tx.messages().insert_delivery(A, tag, "M2").unwrap();
            if found.is_none() {
                tx.commit().unwrap();
            }
            found
        });
        std::thread::sleep(Duration::from_millis(300));
        if commit_first {
            tx.commit().unwrap();
            assert_eq!(other.join().unwrap().as_deref(), Some("M1"));
        } else {
            drop(tx); // rolled back: the tag is free again, and node b records it
            assert_eq!(other.join().unwrap(), None);
        }
    }
    commit(&*b, |ix| {
        assert_eq!(ix.delivered(A, b"tag-1").unwrap().as_deref(), Some("M1"));
        assert_eq!(ix.delivered(A, b"tag-2").unwrap().as_deref(), Some("M2"));
        assert_eq!(
            ix.delivered(B, b"tag-1").unwrap(),
            None,
            "tags are per mailbox"
        );
        assert_eq!(ix.insert_delivery(B, b"tag-1", "M3").unwrap(), None);
        assert_eq!(
            ix.insert_delivery(A, b"tag-1", "M4").unwrap().as_deref(),
            Some("M1")
        );
    });
    let now = index::now();
    assert_eq!(commit(&*a, |ix| ix.prune_deliveries(now - 60)).unwrap(), 0);
    assert_eq!(commit(&*a, |ix| ix.prune_deliveries(now + 60)).unwrap(), 3);
    assert_eq!(commit(&*a, |ix| ix.delivered(A, b"tag-1")).unwrap(), None);
}

fn flags_modseqs_moves_and_expunge(h: &dyn Harness) {
    let n = h.node();
    let n = &*n;
    let filed: Vec<_> = (1..=3)
        .map(|i| {
            commit(n, |ix| {
                ix.insert_message(&row(A, &format!("M{i}")), "INBOX")
            })
            .unwrap()
        })
        .collect();
    commit(n, |ix| {
        let inbox = ix.folder_id(A, "INBOX").unwrap().unwrap();
        ix.ensure_folder(A, "Archive", None).unwrap();
        let before = ix.folder_messages(inbox).unwrap();
        assert!(before.windows(2).all(|w| w[0].modseq < w[1].modseq));
        let top = before.iter().map(|m| m.modseq).max().unwrap();
        let flags = Flags {
            system: SEEN | DELETED,
            keywords: ["$label1".to_string()].into(),
        };
        ix.write_flags(filed[1].seq, &flags).unwrap();
        let m2 = ix.message_at(inbox, 2).unwrap().expect("UID 2");
        assert_eq!((m2.seq, m2.id.as_str()), (filed[1].seq, "M2"));
        assert_eq!(
            (m2.flags.clone(), m2.received),
            (flags.clone(), 1_700_000_000)
        );
        assert!(ix.message_at(inbox, 9).unwrap().is_none());
        let listed = ix.folder_messages(inbox).unwrap();
        assert_eq!(listed[1].flags, flags);
        assert!(listed[1].modseq > top, "a flag change gets a new modseq");

        // Moved: a new UID in the target folder and a new modseq.
        let uid = ix.file_message(filed[0].seq, A, "Archive").unwrap();
        assert_eq!(uid, 1);
        let archive = ix.folder_id(A, "Archive").unwrap().unwrap();
        let moved = ix.folder_messages(archive).unwrap();
        assert_eq!(moved.len(), 1);
        assert!(moved[0].modseq > listed[1].modseq);
        let uids = |fid| -> Vec<u32> {
            ix.folder_messages(fid)
                .unwrap()
                .iter()
                .map(|m| m.uid)
                .collect()
        };
        assert_eq!(uids(inbox), [2, 3]);

        // Expunge removes \Deleted messages only, one UID when asked.
        assert!(ix.expunge(inbox, Some(3)).unwrap().is_empty());
        assert_eq!(
            ix.expunge(inbox, None).unwrap(),
            [(2, format!("{:0>32}", "M2"))]
        );
        assert_eq!(uids(inbox), [3]);
        ix.write_flags(filed[2].seq, &Flags::from_parts(DELETED, ""))
            .unwrap();
        assert!(ix.expunge(inbox, Some(2)).unwrap().is_empty());
        assert_eq!(ix.expunge(inbox, Some(3)).unwrap().len(), 1);
        assert!(uids(inbox).is_empty());
        assert_eq!(ix.count(A).unwrap(), 1);
        // UIDs are never given again.
        assert_eq!(ix.folder_uids(inbox).unwrap().1, 4);
        assert_eq!(ix.insert_message(&row(A, "M5"), "INBOX").unwrap().uid, 4);
    });
}

fn folders_are_listed_renamed_deleted_and_never_reuse_a_uidvalidity(h: &dyn Harness) {
    let n = h.node();
    let n = &*n;
    commit(n, |ix| {
        let inbox = ix.ensure_folder(A, "INBOX", None).unwrap();
        assert_eq!(ix.ensure_folder(A, "INBOX", None).unwrap(), inbox);
        ix.ensure_folder(A, "Sent", Some("\\Sent")).unwrap();
        for name in ["Work/Plans", "Work", "Archive"] {
            ix.ensure_folder(A, name, None).unwrap();
        }
        ix.ensure_folder(B, "Other", None).unwrap();
        let names =
            |ix: &dyn MessageIndex| -> Vec<(String, Option<String>)> { ix.folder_list(A).unwrap() };
        let own = |s: &str| s.to_string();
        assert_eq!(
            names(ix),
            [
                (own("INBOX"), None),
                (own("Archive"), None),
                (own("Sent"), Some(own("\\Sent"))),
                (own("Work"), None),
                (own("Work/Plans"), None),
            ]
        );
        let validities: BTreeSet<u32> = ["INBOX", "Sent", "Work", "Work/Plans", "Archive"]
            .iter()
            .map(|f| {
                let fid = ix.folder_id(A, f).unwrap().unwrap();
                ix.folder_uids(fid).unwrap().0
            })
            .collect();
        assert_eq!(validities.len(), 5, "each folder its own UIDVALIDITY");
        let highest = *validities.last().unwrap();

        ix.rename_folder(A, "Work", "Projects").unwrap();
        let listed: Vec<String> = names(ix).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            listed,
            ["INBOX", "Archive", "Projects", "Projects/Plans", "Sent"]
        );
        assert!(ix.folder_id(A, "Work").unwrap().is_none());
        assert_eq!(ix.folder_list(B).unwrap(), [(own("Other"), None)]);

        let projects = ix.folder_id(A, "Projects").unwrap().unwrap();
        ix.insert_message(&row(A, "P1"), "Projects").unwrap();
        ix.insert_message(&row(A, "I1"), "INBOX").unwrap();
        assert_eq!(
            ix.delete_folder(projects).unwrap(),
            [format!("{:0>32}", "P1")]
        );
        assert!(ix.folder_id(A, "Projects").unwrap().is_none());
        assert_eq!(ids(&ix.messages(A).unwrap()), ["I1"]);
        let again = ix.ensure_folder(A, "Projects", None).unwrap();
        let (validity, next) = ix.folder_uids(again).unwrap();
        assert!(validity > highest, "{validity} <= {highest}");
        assert_eq!(next, 1);
    });
    // Two nodes making the same folder at once get the one folder.
    let (a, b) = (h.node(), h.node());
    let tx = a.write().unwrap();
    let made = tx.messages().ensure_folder(A, "Shared", None).unwrap();
    let other = std::thread::spawn(move || commit(&*b, |ix| ix.ensure_folder(A, "Shared", None)));
    std::thread::sleep(Duration::from_millis(300));
    tx.commit().unwrap();
    assert_eq!(other.join().unwrap().unwrap(), made);
}

/// One `#[test]` per suite function and backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let h = crate::message_index_suite::Sqlite { dir: tempfile::tempdir().expect("tempdir") };
                    eprintln!("message index backend: {}", crate::message_index_suite::Harness::name(&h));
                    crate::message_index_suite::$name(&h);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(h) = crate::message_index_suite::Postgres::new() {
                        eprintln!("message index backend: {}", crate::message_index_suite::Harness::name(&h));
                        crate::message_index_suite::$name(&h);
                    }
                }
            )*
        }
    };
}
suite! {
    rows_are_kept_listed_counted_and_updated,
    uids_follow_commit_order_when_two_nodes_file_into_one_folder,
    a_delivery_tag_is_recorded_once_across_nodes,
    flags_modseqs_moves_and_expunge,
    folders_are_listed_renamed_deleted_and_never_reuse_a_uidvalidity,
}

/// A change announced in a transaction reaches a connection listening on the database when the
/// transaction commits (once, however often it was announced in it), never when it rolls back,
/// and names the mailbox by its keyed token only.
#[test]
fn postgres_announcements_are_heard_on_commit_only() {
    let Some(h) = Postgres::new() else {
        return;
    };
    let password = h.cluster.password_file(h.dir.path());
    let listener = Database::open(&h.cluster.settings(&h.database, &password)).expect("open");
    let heard = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = heard.clone();
    listener.listen(CHANNEL, move |x| {
        if let Heard::Notification(payload) = x {
            sink.lock().unwrap().push(payload.to_string());
        }
    });
    let node = h.node();
    let announce = |mailbox: &str, commit: bool| {
        let tx = node.write().expect("begin");
        tx.messages().announce(mailbox).expect("announce");
        tx.messages().announce(mailbox).expect("announce");
        if commit {
            tx.commit().expect("commit");
        }
    };
    // Until the listener is in place, announcements go unheard.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while heard.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "never heard an announcement"
        );
        announce("probe@contoso.test", true);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    heard.lock().unwrap().clear();

    announce("rolled-back@contoso.test", false);
    announce("Alice@Contoso.test", true);
    std::thread::sleep(Duration::from_millis(500));
    let got = heard.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![changes().payload("alice@contoso.test")],
        "heard {got:?}"
    );
    assert!(
        !got[0].contains("alice") && !got[0].contains("contoso"),
        "the payload names the mailbox: {}",
        got[0]
    );
}
