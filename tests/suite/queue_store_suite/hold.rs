//! The contract of `hold` and `release` (`postsuper -h` and `-H`), run on every backend like the
//! rest of the suite: a held message stays queued, listed as `hold`, and nothing delivers it —
//! no claim from any instance, no flush, no listing of waiting or due ids — until it is
//! released; `recover` leaves it alone and `delete` removes it.

use sealpost::queue::{
    after_failure, new_queue_id, Clock, Decision, Envelope, QueueError, QueueState, RetryPolicy,
    SystemClock,
};

use crate::queue_store_suite::harness::Harness;
use crate::queue_store_suite::{counts, enqueued, envelope, progressed, states, MESSAGE, T0};

fn held(n: usize) -> (&'static str, usize) {
    ("hold", n)
}

fn now() -> i64 {
    SystemClock.now()
}

/// The envelope of a message released at or after `since` (and not after now), without the
/// time of its release.
fn unreleased(mut env: Envelope, since: i64) -> Envelope {
    let at = env.released_at.take().expect("the release is recorded");
    assert!(
        since <= at && at <= now(),
        "released at {at}, not since {since}"
    );
    env
}

/// A message queued long ago, tried and deferred, then held for longer than the queue lifetime
/// is released: its lifetime starts again at the release, so its next temporary failure is
/// retried instead of expiring it without another chance. The release is recorded durably
/// (seen by another instance, in the listing too) and the message itself is unchanged.
pub fn a_released_message_gets_its_lifetime_again(h: &Harness) {
    let q = &*h.queue;
    let policy = RetryPolicy::default();
    let lifetime = policy.lifetime.as_secs() as i64;
    let mut old = envelope();
    old.received_at = now() - 2 * lifetime;
    old.next_attempt = old.received_at;
    q.enqueue(&old, MESSAGE).unwrap();
    let (claimed, message) = q.claim(&old.id).unwrap().unwrap();
    let deferred = progressed(claimed, old.received_at + 60);
    q.defer(&deferred, &message).unwrap();
    assert!(q.hold(&old.id).unwrap());
    assert_eq!(
        after_failure(
            &policy,
            deferred.attempts + 1,
            deferred.lifetime_start(),
            now()
        ),
        Decision::Expired,
        "without the release the next failure would expire it"
    );

    let before = now();
    assert!(q.release(&old.id).unwrap());
    let listed = &h.reopen().list().unwrap()[0];
    assert_eq!(listed.state, QueueState::Incoming);
    assert_eq!(unreleased(listed.envelope.clone(), before), deferred);
    let (again, body) = h.reopen().claim(&old.id).unwrap().unwrap();
    assert_eq!(body, MESSAGE);
    assert!(again.lifetime_start() >= before);
    assert_eq!(again.received_at, old.received_at, "its arrival stays");
    let failed_at = now();
    assert!(matches!(
        after_failure(&policy, again.attempts + 1, again.lifetime_start(), failed_at),
        Decision::RetryAt(at) if at > failed_at
    ));
    assert_eq!(unreleased(again, before), deferred);
}

pub fn a_held_message_is_never_claimed_until_released(h: &Harness) {
    let q = &*h.queue;
    let (a, b) = (enqueued(q), enqueued(q));
    let (claimed, message) = q.claim(&b.id).unwrap().unwrap();
    let deferred = progressed(claimed, T0 + 60);
    q.defer(&deferred, &message).unwrap();

    assert!(q.hold(&a.id).unwrap(), "incoming is held");
    assert!(q.hold(&b.id).unwrap(), "deferred is held");
    assert!(!q.hold(&a.id).unwrap(), "held twice");
    assert_eq!(
        states(q),
        [
            (QueueState::Hold, a.id.clone()),
            (QueueState::Hold, b.id.clone()),
        ]
    );
    let list = q.list().unwrap();
    assert_eq!((&list[0].envelope, &list[1].envelope), (&a, &deferred));
    assert_eq!(list[0].size, MESSAGE.len() as u64);
    assert_eq!(counts(q)[3], held(2));
    assert_eq!(counts(q).iter().map(|(_, n)| n).sum::<usize>(), 2);

    // Nothing that delivers sees it, in this instance or another on the same storage.
    let other = h.reopen();
    for queue in [q, &*other] {
        assert!(queue.claim(&a.id).unwrap().is_none());
        assert!(queue.claim(&b.id).unwrap().is_none());
        assert!(queue.incoming_ids().unwrap().is_empty());
        assert!(queue.deferred().unwrap().is_empty());
        assert_eq!(queue.waiting_size(&a.id), None);
        assert_eq!(queue.waiting_size(&b.id), None);
    }
    assert_eq!(q.flush().unwrap(), 0, "flush leaves held messages held");
    assert_eq!(states(q)[0].0, QueueState::Hold);
    assert!(matches!(
        q.enqueue(&a, MESSAGE),
        Err(QueueError::Exists { id, .. }) if id == a.id
    ));

    // Released: due at once, with the envelope it had and the time of its release.
    let before = now();
    assert!(other.release(&a.id).unwrap());
    assert!(!other.release(&a.id).unwrap(), "released twice");
    assert_eq!(q.incoming_ids().unwrap(), [a.id.as_str()]);
    assert_eq!(q.waiting_size(&a.id), Some(MESSAGE.len() as u64));
    let (again, body) = q.claim(&a.id).unwrap().unwrap();
    assert_eq!(unreleased(again, before), a);
    assert_eq!(body, MESSAGE);
    assert!(q.release(&b.id).unwrap());
    assert_eq!(q.incoming_ids().unwrap(), [b.id.as_str()]);
    assert!(q.deferred().unwrap().is_empty());
    let (again, body) = q.claim(&b.id).unwrap().unwrap();
    assert_eq!(
        unreleased(again, before),
        deferred,
        "release keeps the envelope"
    );
    assert_eq!(body, MESSAGE);
    assert_eq!(counts(q)[3], held(0));
}

pub fn a_message_being_delivered_cannot_be_held(h: &Harness) {
    let q = &*h.queue;
    let env = enqueued(q);
    let (claimed, message) = q.claim(&env.id).unwrap().unwrap();
    match q.hold(&env.id) {
        Err(e @ QueueError::Busy { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&env.id) && text.contains("being delivered"),
                "{text}"
            );
        }
        other => panic!("hold of an active message: {other:?}"),
    }
    assert!(matches!(
        h.reopen().hold(&env.id),
        Err(QueueError::Busy { .. })
    ));
    assert_eq!(states(q), [(QueueState::Active, env.id.clone())]);
    assert!(!q.release(&env.id).unwrap(), "active is not held");
    // The attempt ends as usual; then the message can be held.
    let deferred = progressed(claimed, T0 + 60);
    q.defer(&deferred, &message).unwrap();
    assert!(q.hold(&env.id).unwrap());
    assert_eq!(states(q), [(QueueState::Hold, env.id)]);
}

pub fn hold_and_release_of_unknown_or_invalid_ids(h: &Harness) {
    let q = &*h.queue;
    let waiting = enqueued(q);
    assert!(!q.hold(&new_queue_id()).unwrap());
    assert!(!q.release(&new_queue_id()).unwrap());
    assert!(!q.release(&waiting.id).unwrap(), "waiting is not held");
    for bad in ["", "..", "../escape", "a/b"] {
        assert!(matches!(q.hold(bad), Err(QueueError::InvalidId { .. })));
        assert!(matches!(q.release(bad), Err(QueueError::InvalidId { .. })));
    }
    assert_eq!(states(q), [(QueueState::Incoming, waiting.id)]);
}

pub fn delete_removes_a_held_message(h: &Harness) {
    let q = &*h.queue;
    let env = enqueued(q);
    assert!(q.hold(&env.id).unwrap());
    assert!(q.delete(&env.id).unwrap());
    assert!(!q.delete(&env.id).unwrap(), "deleted twice");
    assert!(!q.release(&env.id).unwrap());
    assert!(q.list().unwrap().is_empty());
    assert_eq!(counts(q)[3], held(0));
    assert!(h.reopen().list().unwrap().is_empty(), "gone for good");
}

pub fn recover_leaves_held_messages_alone(h: &Harness) {
    let q = &*h.queue;
    let (kept, active) = (enqueued(q), enqueued(q));
    let big = envelope();
    q.enqueue(&big, &crate::queue_store_suite::large_message(300_000))
        .unwrap();
    assert!(q.hold(&kept.id).unwrap());
    assert!(q.hold(&big.id).unwrap());
    q.claim(&active.id).unwrap().unwrap();

    // A crash and a restart.
    let restarted = h.reopen();
    assert_eq!(restarted.recover().unwrap().requeued, 1);
    let mut expect = vec![
        (QueueState::Incoming, active.id.clone()),
        (QueueState::Hold, kept.id.clone()),
        (QueueState::Hold, big.id.clone()),
    ];
    expect[1..].sort();
    assert_eq!(states(&*restarted), expect);
    assert!(restarted.claim(&kept.id).unwrap().is_none());
    let before = now();
    assert!(restarted.release(&kept.id).unwrap());
    let (again, body) = restarted.claim(&kept.id).unwrap().unwrap();
    assert_eq!((unreleased(again, before), body), (kept, MESSAGE.to_vec()));
    assert!(restarted.release(&big.id).unwrap());
    assert_eq!(
        restarted.claim(&big.id).unwrap().unwrap().1,
        crate::queue_store_suite::large_message(300_000)
    );
}
