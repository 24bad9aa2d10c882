//! The contract of `QueueStore` (`src/queue/backend/mod.rs`), run against every backend: each
//! contract test runs once on the filesystem spool (`spool::<test>`) and once on PostgreSQL
//! (`postgres::<test>`), so `cargo test --test suite queue_store_suite::` exercises both, and
//! `cargo test --test suite queue_store_suite::postgres::` one. Every queue backend must pass all of
//! it. The PostgreSQL variant starts a real server (`tests/support/postgres.rs`); without one it
//! says why it skips, and under `CI` it fails.
//!
//! The tests are written against `&dyn QueueStore`; only the [`Harness`] knows how a backend is
//! opened, reopened (a restart, or a second process on the same storage), damaged, and what it
//! keeps at rest. The tests of several nodes on one storage (`nodes`, and `pg_hold` for hold
//! across nodes and the schema migration that allows it) run on the backends that have nodes:
//! PostgreSQL. `hold` holds the contract of `hold` and `release`.

mod claimed;
mod harness;
mod hold;
mod nodes;
#[allow(dead_code)]
use crate::support::postgres as pg;
mod pg_hold;

use harness::{Backend, Harness};
use sealpost::queue::format::Part;
use sealpost::queue::{
    new_queue_id, Envelope, QueueError, QueueState, QueueStore, RecipientStatus,
};

pub(crate) const MESSAGE: &[u8] = b"From: bob@fabrikam.test\r\nSubject: hi\r\n\r\nHello.\r\n";
pub(crate) const T0: i64 = 1_700_000_000;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub(crate) fn envelope() -> Envelope {
    Envelope::new(
        new_queue_id(),
        "bob@fabrikam.test",
        vec!["alice@contoso.test".into(), "carol@contoso.test".into()],
        "mx.fabrikam.test",
        "192.0.2.7:40000",
        T0,
    )
}

pub(crate) fn enqueued(queue: &dyn QueueStore) -> Envelope {
    let env = envelope();
    queue.enqueue(&env, MESSAGE).unwrap();
    env
}

/// Progress as a delivery attempt records it: the first recipient done, the second retried.
pub(crate) fn progressed(mut env: Envelope, next_attempt: i64) -> Envelope {
    env.recipients[0].status = RecipientStatus::Delivered;
    env.recipients[0].last_reply = Some("250 2.0.0 ok".into());
    env.recipients[1].last_reply = Some("451 4.3.0 later".into());
    env.attempts += 1;
    env.next_attempt = next_attempt;
    env.last_error = Some("451 4.3.0 later".into());
    env
}

/// Bytes that do not repeat at any chunk size, so a misplaced chunk shows.
pub(crate) fn large_message(len: usize) -> Vec<u8> {
    let mut out = b"Subject: large\r\n\r\n".to_vec();
    let mut x: u32 = 0x9E37_79B9;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(b'A' + (x % 26) as u8);
        if out.len() % 78 == 76 {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.truncate(len);
    out
}

pub(crate) fn counts(queue: &dyn QueueStore) -> Vec<(&'static str, usize)> {
    queue.counts().unwrap()
}

pub(crate) fn expect_counts(
    incoming: usize,
    active: usize,
    deferred: usize,
    corrupt: usize,
) -> Vec<(&'static str, usize)> {
    vec![
        ("incoming", incoming),
        ("active", active),
        ("deferred", deferred),
        ("hold", 0),
        ("corrupt", corrupt),
    ]
}

pub(crate) fn states(queue: &dyn QueueStore) -> Vec<(QueueState, String)> {
    let listing = queue.scan().unwrap();
    assert!(listing.unreadable.is_empty(), "{:?}", listing.unreadable);
    listing
        .entries
        .into_iter()
        .map(|e| (e.state, e.envelope.id))
        .collect()
}

/// The contract, one function per guarantee.
mod contract {
    use super::*;
    pub use crate::queue_store_suite::claimed::*;
    pub use crate::queue_store_suite::hold::*;

    pub fn enqueue_then_claim_returns_the_same_envelope_and_bytes(h: &Harness) {
        let q = &*h.queue;
        let env = enqueued(q);
        assert_eq!(states(q), [(QueueState::Incoming, env.id.clone())]);
        assert_eq!(q.incoming_ids().unwrap(), [env.id.as_str()]);
        let (claimed, message) = q.claim(&env.id).unwrap().expect("claimable");
        assert_eq!(claimed, env);
        assert_eq!(message, MESSAGE);
        assert_eq!(states(q), [(QueueState::Active, env.id.clone())]);
        assert!(q.incoming_ids().unwrap().is_empty());

        // A message made of parts is stored as their concatenation.
        let parts_env = envelope();
        let (head, body) = MESSAGE.split_at(20);
        q.enqueue_parts(&parts_env, &[Part::Bytes(head), Part::Bytes(body)])
            .unwrap();
        let (claimed, message) = q.claim(&parts_env.id).unwrap().unwrap();
        assert_eq!(claimed, parts_env);
        assert_eq!(message, MESSAGE);
    }

    pub fn a_message_survives_a_restart(h: &Harness) {
        let env = enqueued(&*h.queue);
        let restarted = h.reopen();
        assert_eq!(restarted.list().unwrap()[0].envelope, env);
        let (claimed, message) = restarted.claim(&env.id).unwrap().unwrap();
        assert_eq!((claimed, message.as_slice()), (env, MESSAGE));
    }

    pub fn claim_of_an_unknown_or_claimed_id_gets_none(h: &Harness) {
        let q = &*h.queue;
        assert!(q.claim(&new_queue_id()).unwrap().is_none(), "unknown id");
        let env = enqueued(q);
        assert!(q.claim(&env.id).unwrap().is_some());
        assert!(q.claim(&env.id).unwrap().is_none(), "claimed twice");
        let other = h.reopen();
        assert!(
            other.claim(&env.id).unwrap().is_none(),
            "claimed by a second instance"
        );
        assert_eq!(states(q), [(QueueState::Active, env.id)]);
    }

    pub fn concurrent_claims_give_each_message_to_exactly_one(h: &Harness) {
        let ids: Vec<String> = (0..24).map(|_| enqueued(&*h.queue).id).collect();
        let instances = [h.queue.clone(), h.reopen()];
        let won: Vec<Vec<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let q = instances[i % 2].clone();
                    let ids = &ids;
                    s.spawn(move || {
                        ids.iter()
                            .filter(|id| q.claim(id).unwrap().is_some())
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<String> = won.into_iter().flatten().collect();
        all.sort();
        assert_eq!(all, ids, "every message claimed exactly once");
        assert_eq!(counts(&*h.queue), expect_counts(0, ids.len(), 0, 0));
    }

    pub fn defer_then_claim_sees_the_updated_envelope(h: &Harness) {
        let q = &*h.queue;
        let env = enqueued(q);
        let (claimed, message) = q.claim(&env.id).unwrap().unwrap();
        let updated = progressed(claimed, T0 + 600);
        q.defer(&updated, &message).unwrap();
        assert_eq!(states(q), [(QueueState::Deferred, env.id.clone())]);
        assert_eq!(q.list().unwrap()[0].envelope, updated);
        assert_eq!(q.deferred().unwrap(), [(env.id.clone(), T0 + 600)]);
        assert!(q.incoming_ids().unwrap().is_empty());
        // Claimable again whatever its next attempt; the runner decides when.
        let (again, body) = q.claim(&env.id).unwrap().unwrap();
        assert_eq!(again, updated);
        assert_eq!(again.recipients[0].status, RecipientStatus::Delivered);
        assert_eq!(body, MESSAGE);
        assert!(q.deferred().unwrap().is_empty());
    }

    pub fn defer_of_a_message_not_active_is_refused(h: &Harness) {
        let q = &*h.queue;
        let env = enqueued(q);
        let changed = progressed(env.clone(), T0 + 60);
        assert!(
            matches!(q.defer(&changed, MESSAGE), Err(QueueError::NotActive { id, .. }) if id == env.id)
        );
        assert_eq!(states(q), [(QueueState::Incoming, env.id.clone())]);
        assert_eq!(q.list().unwrap()[0].envelope, env, "envelope unchanged");
        let unknown = envelope();
        assert!(matches!(
            q.defer(&unknown, MESSAGE),
            Err(QueueError::NotActive { .. })
        ));
        assert_eq!(q.list().unwrap().len(), 1, "nothing created");
    }

    pub fn checkpoint_keeps_the_message_active(h: &Harness) {
        let q = &*h.queue;
        let env = enqueued(q);
        assert!(matches!(
            q.checkpoint(&env, MESSAGE),
            Err(QueueError::NotActive { .. })
        ));
        assert_eq!(states(q), [(QueueState::Incoming, env.id.clone())]);
        let (claimed, message) = q.claim(&env.id).unwrap().unwrap();
        let updated = progressed(claimed, T0);
        q.checkpoint(&updated, &message).unwrap();
        assert_eq!(states(q), [(QueueState::Active, env.id.clone())]);
        assert_eq!(q.list().unwrap()[0].envelope, updated);
        assert!(q.claim(&env.id).unwrap().is_none(), "still claimed");
        assert_eq!(q.waiting_size(&env.id), None);
        q.complete(&env.id).unwrap();
        assert!(q.list().unwrap().is_empty());
    }

    pub fn complete_removes_and_a_second_complete_is_not_active(h: &Harness) {
        let q = &*h.queue;
        let waiting = enqueued(q);
        assert!(matches!(
            q.complete(&waiting.id),
            Err(QueueError::NotActive { .. })
        ));
        assert_eq!(states(q), [(QueueState::Incoming, waiting.id.clone())]);
        q.claim(&waiting.id).unwrap().unwrap();
        q.complete(&waiting.id).unwrap();
        assert!(q.list().unwrap().is_empty());
        assert_eq!(counts(q), expect_counts(0, 0, 0, 0));
        assert!(q.claim(&waiting.id).unwrap().is_none());
        assert!(matches!(
            q.complete(&waiting.id),
            Err(QueueError::NotActive { id, .. }) if id == waiting.id
        ));
        assert!(h.reopen().list().unwrap().is_empty(), "gone for good");
    }

    pub fn duplicate_enqueue_is_exists_in_every_state(h: &Harness) {
        let q = &*h.queue;
        let env = enqueued(q);
        let other = progressed(env.clone(), T0 + 1);
        let exists = |q: &dyn QueueStore| {
            assert!(matches!(
                q.enqueue(&other, b"other content"),
                Err(QueueError::Exists { id, .. }) if id == env.id
            ));
        };
        exists(q);
        let (claimed, message) = q.claim(&env.id).unwrap().unwrap();
        assert_eq!(claimed, env, "the first enqueue's envelope stands");
        exists(q);
        q.defer(&claimed, &message).unwrap();
        exists(q);
        let (claimed, message) = q.claim(&env.id).unwrap().unwrap();
        assert_eq!((claimed, message.as_slice()), (env, MESSAGE));
        assert_eq!(q.list().unwrap().len(), 1);
    }

    pub fn invalid_ids_are_refused(h: &Harness) {
        let q = &*h.queue;
        let long = "A".repeat(65);
        for bad in [
            "",
            ".",
            "..",
            "../escape",
            "a/b",
            "x y",
            "ID.new",
            long.as_str(),
        ] {
            let invalid = |r: Result<(), QueueError>| {
                assert!(
                    matches!(r, Err(QueueError::InvalidId { .. })),
                    "{bad:?}: {r:?}"
                )
            };
            let mut env = envelope();
            env.id = bad.to_string();
            invalid(q.enqueue(&env, MESSAGE));
            invalid(q.enqueue_parts(&env, &[Part::Bytes(MESSAGE)]));
            invalid(q.defer(&env, MESSAGE));
            invalid(q.checkpoint(&env, MESSAGE));
            invalid(q.complete(bad));
            invalid(q.claim(bad).map(|_| ()));
            invalid(q.delete(bad).map(|_| ()));
            assert_eq!(q.waiting_size(bad), None);
        }
        assert!(q.list().unwrap().is_empty());
        assert_eq!(counts(q), expect_counts(0, 0, 0, 0));
    }

    pub fn scan_list_and_counts_show_each_state(h: &Harness) {
        let q = &*h.queue;
        assert_eq!(counts(q), expect_counts(0, 0, 0, 0));
        let envs: Vec<Envelope> = (0..4).map(|_| enqueued(q)).collect();
        let (claimed, message) = q.claim(&envs[1].id).unwrap().unwrap();
        let deferred = progressed(claimed, T0 + 60);
        q.defer(&deferred, &message).unwrap();
        q.claim(&envs[2].id).unwrap().unwrap();
        assert_eq!(counts(q), expect_counts(2, 1, 1, 0));
        assert_eq!(
            states(q),
            [
                (QueueState::Incoming, envs[0].id.clone()),
                (QueueState::Incoming, envs[3].id.clone()),
                (QueueState::Active, envs[2].id.clone()),
                (QueueState::Deferred, envs[1].id.clone()),
            ]
        );
        let list = q.list().unwrap();
        assert!(list.iter().all(|e| e.size == MESSAGE.len() as u64));
        assert_eq!(list[3].envelope, deferred);
        assert_eq!(
            q.incoming_ids().unwrap(),
            [envs[0].id.clone(), envs[3].id.clone()]
        );
        assert_eq!(q.deferred().unwrap(), [(envs[1].id.clone(), T0 + 60)]);
    }

    pub fn flush_makes_deferred_messages_waiting_now(h: &Harness) {
        let q = &*h.queue;
        assert_eq!(q.flush().unwrap(), 0);
        let env = enqueued(q);
        let (claimed, message) = q.claim(&env.id).unwrap().unwrap();
        let updated = progressed(claimed, T0 + 86_400);
        q.defer(&updated, &message).unwrap();
        assert_eq!(q.flush().unwrap(), 1);
        assert!(q.deferred().unwrap().is_empty());
        assert_eq!(q.incoming_ids().unwrap(), [env.id.as_str()]);
        assert_eq!(states(q), [(QueueState::Incoming, env.id.clone())]);
        assert_eq!(q.flush().unwrap(), 0);
        let (again, body) = q.claim(&env.id).unwrap().unwrap();
        assert_eq!(again, updated, "flush keeps the envelope");
        assert_eq!(body, MESSAGE);
    }

    pub fn delete_removes_a_message_in_any_state(h: &Harness) {
        let q = &*h.queue;
        let (incoming, active, deferred) = (enqueued(q), enqueued(q), enqueued(q));
        let (a, message) = q.claim(&active.id).unwrap().unwrap();
        let (d, _) = q.claim(&deferred.id).unwrap().unwrap();
        q.defer(&d, &message).unwrap();
        assert_eq!(counts(q), expect_counts(1, 1, 1, 0));
        for env in [&incoming, &active, &deferred] {
            assert!(q.delete(&env.id).unwrap(), "{}", env.id);
            assert!(!q.delete(&env.id).unwrap(), "deleted twice");
            assert!(q.claim(&env.id).unwrap().is_none());
        }
        assert!(!q.delete(&new_queue_id()).unwrap());
        assert!(q.list().unwrap().is_empty());
        assert_eq!(counts(q), expect_counts(0, 0, 0, 0));
        // The delivery of the deleted active message cannot bring it back.
        assert!(matches!(
            q.defer(&a, &message),
            Err(QueueError::NotActive { .. })
        ));
        assert!(matches!(
            q.checkpoint(&a, &message),
            Err(QueueError::NotActive { .. })
        ));
        assert!(matches!(
            q.complete(&a.id),
            Err(QueueError::NotActive { .. })
        ));
        assert!(q.list().unwrap().is_empty());
    }

    pub fn waiting_size_is_the_message_size_while_waiting(h: &Harness) {
        let q = &*h.queue;
        let env = enqueued(q);
        assert_eq!(q.waiting_size(&env.id), Some(MESSAGE.len() as u64));
        let (claimed, message) = q.claim(&env.id).unwrap().unwrap();
        assert_eq!(q.waiting_size(&env.id), None, "active is not waiting");
        q.defer(&claimed, &message).unwrap();
        assert_eq!(q.waiting_size(&env.id), Some(MESSAGE.len() as u64));
        assert_eq!(q.waiting_size(&new_queue_id()), None);
    }

    pub fn recover_after_a_crash_makes_claimed_messages_claimable_again(h: &Harness) {
        let q = &*h.queue;
        let (a, b, c) = (enqueued(q), enqueued(q), enqueued(q));
        let (claimed, message) = q.claim(&a.id).unwrap().unwrap();
        let checkpointed = progressed(claimed, T0);
        q.checkpoint(&checkpointed, &message).unwrap();
        let (claimed, message) = q.claim(&b.id).unwrap().unwrap();
        let deferred = progressed(claimed, T0 + 60);
        q.defer(&deferred, &message).unwrap();
        // A message being received when the process dies: its staging is never dropped.
        let mut staging = q.stage(None).unwrap();
        staging.write(&large_message(300_000)).unwrap();
        std::mem::forget(staging);

        // The crash: this instance is gone without another call; a new one starts.
        let restarted = h.reopen();
        let report = restarted.recover().unwrap();
        assert_eq!(report.requeued, 1);
        h.assert_nothing_staged();
        assert_eq!(counts(&*restarted), expect_counts(2, 0, 1, 0));
        assert_eq!(
            states(&*restarted),
            [
                (QueueState::Incoming, a.id.clone()),
                (QueueState::Incoming, c.id.clone()),
                (QueueState::Deferred, b.id.clone()),
            ]
        );
        let (again, body) = restarted.claim(&a.id).unwrap().unwrap();
        assert_eq!(
            again, checkpointed,
            "the progress recorded before the crash"
        );
        assert_eq!(body, MESSAGE);
        assert_eq!(restarted.claim(&b.id).unwrap().unwrap().0, deferred);
        assert_eq!(restarted.claim(&c.id).unwrap().unwrap().0, c);
        // Another restart requeues exactly what is active then, and finds nothing staged.
        let third = h.reopen();
        third.complete(&a.id).unwrap();
        let report = third.recover().unwrap();
        assert_eq!((report.requeued, report.removed_tmp), (2, 0));
    }

    pub fn a_large_message_round_trips(h: &Harness) {
        let q = &*h.queue;
        let big = large_message(5 * 1024 * 1024 + 12_345);
        let env = envelope();
        q.enqueue(&env, &big).unwrap();
        assert_eq!(q.waiting_size(&env.id), Some(big.len() as u64));
        assert_eq!(q.list().unwrap()[0].size, big.len() as u64);
        let (claimed, message) = q.claim(&env.id).unwrap().unwrap();
        assert!(message == big, "content differs after claim");
        let updated = progressed(claimed, T0 + 60);
        q.defer(&updated, &message).unwrap();
        let (again, message) = q.claim(&env.id).unwrap().unwrap();
        assert_eq!(again, updated);
        assert!(message == big, "content differs after defer");
        q.complete(&env.id).unwrap();

        // Streamed from staged content behind a new header, as cleanup writes it.
        let mut staging = q.stage(None).unwrap();
        for piece in big.chunks(7_001) {
            staging.write(piece).unwrap();
        }
        let staged = staging.finish().unwrap();
        assert_eq!(staged.len(), big.len() as u64);
        let header = b"Received: from client.test\r\n";
        let tail = staged.tail(0);
        let env = envelope();
        q.enqueue_parts(&env, &[Part::Bytes(header), Part::Stream(&tail)])
            .unwrap();
        drop(staged);
        let (_, message) = q.claim(&env.id).unwrap().unwrap();
        assert_eq!(message.len(), header.len() + big.len());
        assert!(message.starts_with(header) && message[header.len()..] == big[..]);
    }

    pub fn a_damaged_message_is_quarantined(h: &Harness) {
        let q = &*h.queue;
        let good = enqueued(q);
        let bad = envelope();
        q.enqueue(&bad, &large_message(2_000)).unwrap();
        h.damage(&bad.id);
        assert!(matches!(q.claim(&bad.id), Err(QueueError::Corrupt { .. })));
        assert!(q.claim(&bad.id).unwrap().is_none(), "never returned again");
        assert_eq!(states(q), [(QueueState::Incoming, good.id.clone())]);
        assert_eq!(counts(q), expect_counts(1, 0, 0, 1));
        assert!(!q.delete(&bad.id).unwrap(), "quarantined is not queued");
        assert_eq!(q.claim(&good.id).unwrap().unwrap().1, MESSAGE);
    }

    pub fn the_encrypted_queue_keeps_no_plaintext_at_rest(h: &Harness) {
        let q = &*h.queue;
        assert!(q.is_encrypted());
        let marker = b"PLAINTEXT-MARKER-5e1d";
        let mut secret = large_message(200_000);
        secret.extend_from_slice(marker);
        let small = [MESSAGE, marker.as_slice()].concat();
        let (one, two, three) = (envelope(), envelope(), envelope());
        q.enqueue(&one, &secret).unwrap();
        q.enqueue(&two, &small).unwrap();
        q.enqueue(&three, &small).unwrap();
        let (env, message) = q.claim(&two.id).unwrap().unwrap();
        q.defer(&progressed(env, T0 + 60), &message).unwrap();
        let (env, message) = q.claim(&three.id).unwrap().unwrap();
        q.checkpoint(&progressed(env, T0), &message).unwrap();
        let mut staging = q.stage(None).unwrap();
        staging.write(&secret).unwrap();

        let files = h.at_rest();
        let stored: usize = files.iter().map(|(_, b)| b.len()).sum();
        assert!(stored > secret.len(), "only {stored} bytes at rest");
        for (path, bytes) in &files {
            assert!(!contains(bytes, marker), "plaintext in {}", path.display());
            assert!(
                !contains(bytes, b"Subject: large"),
                "plaintext in {}",
                path.display()
            );
        }
        drop(staging);
        assert_eq!(q.claim(&one.id).unwrap().unwrap().1, secret);
    }

    pub fn probe_write_changes_nothing(h: &Harness) {
        let q = &*h.queue;
        assert!(!q.location().is_empty());
        let env = enqueued(q);
        q.probe_write().unwrap();
        assert_eq!(counts(q), expect_counts(1, 0, 0, 0));
        assert_eq!(states(q), [(QueueState::Incoming, env.id)]);
        assert_eq!(h.reopen().recover().unwrap().removed_tmp, 0);
    }
}

/// One `#[test]` per contract function and backend; a backend whose server is missing skips
/// (see [`Harness::open`]).
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod spool {
            $(
                #[test]
                fn $name() {
                    let h = crate::queue_store_suite::Harness::open(crate::queue_store_suite::Backend::Spool).expect("the spool");
                    crate::queue_store_suite::contract::$name(&h);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(h) = crate::queue_store_suite::Harness::open(crate::queue_store_suite::Backend::Postgres) {
                        crate::queue_store_suite::contract::$name(&h);
                    }
                }
            )*
        }
    };
}
suite! {
    enqueue_then_claim_returns_the_same_envelope_and_bytes,
    a_message_survives_a_restart,
    claim_of_an_unknown_or_claimed_id_gets_none,
    concurrent_claims_give_each_message_to_exactly_one,
    defer_then_claim_sees_the_updated_envelope,
    defer_of_a_message_not_active_is_refused,
    checkpoint_keeps_the_message_active,
    complete_removes_and_a_second_complete_is_not_active,
    duplicate_enqueue_is_exists_in_every_state,
    invalid_ids_are_refused,
    scan_list_and_counts_show_each_state,
    flush_makes_deferred_messages_waiting_now,
    delete_removes_a_message_in_any_state,
    waiting_size_is_the_message_size_while_waiting,
    recover_after_a_crash_makes_claimed_messages_claimable_again,
    a_large_message_round_trips,
    a_damaged_message_is_quarantined,
    the_encrypted_queue_keeps_no_plaintext_at_rest,
    probe_write_changes_nothing,
    a_held_message_is_never_claimed_until_released,
    a_message_being_delivered_cannot_be_held,
    hold_and_release_of_unknown_or_invalid_ids,
    delete_removes_a_held_message,
    recover_leaves_held_messages_alone,
    a_released_message_gets_its_lifetime_again,
    a_message_enqueued_as_claimed_is_returned_and_claimed_by_nobody_else,
    a_message_enqueued_as_claimed_is_requeued_by_recover_after_a_crash,
}
