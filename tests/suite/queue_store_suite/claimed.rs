//! The contract of `enqueue_claimed`: a new message stored as claimed by this instance, as if a
//! claim had followed its enqueue at once. Nobody else can claim it; it is durable at once, and
//! after a crash `recover` requeues it like any claimed message.

use sealpost::queue::format::Part;
use sealpost::queue::{QueueError, QueueState};

use crate::queue_store_suite::harness::Harness;
use crate::queue_store_suite::{counts, enqueued, envelope, expect_counts, states, MESSAGE};

pub fn a_message_enqueued_as_claimed_is_returned_and_claimed_by_nobody_else(h: &Harness) {
    let q = &*h.queue;
    let env = envelope();
    let header: &[u8] = b"Received: from x\r\n";
    let (stored, message) = q
        .enqueue_claimed(&env, &[Part::Bytes(header), Part::Bytes(MESSAGE)])
        .unwrap();
    assert_eq!(stored, env);
    assert_eq!(message, [header, MESSAGE].concat());
    assert_eq!(states(q), [(QueueState::Active, env.id.clone())]);
    assert!(q.claim(&env.id).unwrap().is_none(), "claimed already");
    assert!(
        h.reopen().claim(&env.id).unwrap().is_none(),
        "by another instance"
    );
    assert!(q.incoming_ids().unwrap().is_empty());
    assert_eq!(q.waiting_size(&env.id), None, "not waiting");
    // Its id is taken in every sense, like an enqueued message's.
    assert!(matches!(
        q.enqueue(&env, MESSAGE),
        Err(QueueError::Exists { .. })
    ));
    assert!(matches!(
        q.enqueue_claimed(&env, &[Part::Bytes(MESSAGE)]),
        Err(QueueError::Exists { .. })
    ));
    q.complete(&env.id).unwrap();
    assert_eq!(counts(q), expect_counts(0, 0, 0, 0));
}

pub fn a_message_enqueued_as_claimed_is_requeued_by_recover_after_a_crash(h: &Harness) {
    let q = &*h.queue;
    let waiting = enqueued(q);
    let env = envelope();
    q.enqueue_claimed(&env, &[Part::Bytes(MESSAGE)]).unwrap();
    // The crash: this instance is gone without another call; a new one starts.
    let restarted = h.reopen();
    assert_eq!(restarted.recover().unwrap().requeued, 1);
    let mut ids = restarted.incoming_ids().unwrap();
    ids.sort();
    let mut expected = vec![waiting.id.clone(), env.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    let (again, body) = restarted.claim(&env.id).unwrap().unwrap();
    assert_eq!((again, body.as_slice()), (env, MESSAGE));
}
