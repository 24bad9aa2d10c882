//! Spool tests over real files in temporary directories.

use super::*;
use crate::mail::id::new_queue_id;
use crate::queue::envelope::RecipientStatus;
use std::os::unix::fs::PermissionsExt;
use tempfile::TempDir;

const MESSAGE: &[u8] = b"From: bob@fabrikam.test\r\nSubject: hi\r\n\r\nHello.\r\n";
const T0: i64 = 1_700_000_000;

/// A fresh service key (its keystore directory is gone again; the key lives on in memory).
pub(super) fn service_key() -> Arc<ServiceKey> {
    let keystore = tempfile::tempdir().unwrap();
    Arc::new(ServiceKey::load_or_create(keystore.path()).unwrap())
}

/// An encrypting spool, as the server opens it.
fn spool() -> (TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), service_key()).unwrap();
    (dir, spool)
}

/// The same directory opened again, with the same key (a restart).
fn reopen(dir: &TempDir, spool: &Spool) -> Spool {
    Spool::open_with(dir.path(), spool.key.clone()).unwrap()
}

fn envelope() -> Envelope {
    Envelope::new(
        new_queue_id(),
        "bob@fabrikam.test",
        vec!["alice@contoso.test".into(), "carol@contoso.test".into()],
        "mx.fabrikam.test",
        "127.0.0.1:40000",
        T0,
    )
}

fn enqueued(spool: &Spool) -> Envelope {
    let env = envelope();
    spool.enqueue(&env, MESSAGE).unwrap();
    env
}

fn names(dir: &Path) -> Vec<String> {
    let mut v = dir_names(dir).unwrap();
    v.sort();
    v
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Write a damaged version of a good queue file straight into incoming/.
fn plant(spool: &Spool, damage: impl FnOnce(&mut Vec<u8>)) -> String {
    let env = envelope();
    let mut bytes = format::encode(&env, MESSAGE, spool.key.as_deref()).unwrap();
    damage(&mut bytes);
    fs::write(spool.path(QueueState::Incoming, &env.id), bytes).unwrap();
    env.id
}

#[test]
fn open_creates_private_directories() {
    let (dir, spool) = spool();
    assert_eq!(spool.root(), dir.path().join("queue"));
    for sub in ["tmp", "incoming", "active", "deferred", "hold", "corrupt"] {
        let path = dir.path().join("queue").join(sub);
        assert!(path.is_dir(), "{sub} missing");
        assert_eq!(mode(&path), 0o700, "{sub}");
    }
    // Reopening an existing spool is fine and keeps its content; a spool from before hold/
    // existed gets it.
    let env = enqueued(&spool);
    fs::remove_dir(dir.path().join("queue").join("hold")).unwrap();
    let again = reopen(&dir, &spool);
    assert_eq!(again.incoming_ids().unwrap(), [env.id]);
    assert_eq!(mode(&dir.path().join("queue").join("hold")), 0o700);
}

#[test]
fn hold_and_release_move_the_file_between_incoming_and_hold() {
    let (_dir, spool) = spool();
    let env = enqueued(&spool);
    let bytes = fs::read(spool.path(QueueState::Incoming, &env.id)).unwrap();
    assert!(spool.hold(&env.id).unwrap());
    assert!(!spool.path(QueueState::Incoming, &env.id).exists());
    let held = spool.path(QueueState::Hold, &env.id);
    assert_eq!(fs::read(&held).unwrap(), bytes, "moved, not rewritten");
    assert_eq!(spool.counts().unwrap()[3], ("hold", 1));
    // Released: rewritten once, with the release in its envelope, and moved back.
    assert!(spool.release(&env.id).unwrap());
    assert!(!held.exists());
    let released = fs::read(spool.path(QueueState::Incoming, &env.id)).unwrap();
    let (mut envelope, message) =
        crate::queue::format::decode(released, spool.key.as_deref()).unwrap();
    assert!(envelope.released_at.take().is_some());
    let (before, original) = crate::queue::format::decode(bytes, spool.key.as_deref()).unwrap();
    assert_eq!((envelope, message), (before, original));
    assert!(names(&spool.tmp).is_empty(), "nothing left in tmp/");
}

#[test]
fn enqueue_then_list_shows_incoming_with_envelope() {
    let (_dir, spool) = spool();
    let env = enqueued(&spool);
    let list = spool.list().unwrap();
    assert_eq!(
        list,
        [QueueEntry {
            state: QueueState::Incoming,
            envelope: env.clone(),
            size: MESSAGE.len() as u64
        }]
    );
    let path = spool.path(QueueState::Incoming, &env.id);
    assert_eq!(mode(&path), 0o600);
    assert!(names(&spool.tmp).is_empty(), "tmp file left behind");
    assert_eq!(spool.incoming_ids().unwrap(), [env.id.as_str()]);
    assert_eq!(QueueState::Incoming.to_string(), "incoming");
}

#[test]
fn enqueue_refuses_duplicate_and_invalid_ids() {
    let (_dir, spool) = spool();
    let env = enqueued(&spool);
    assert!(matches!(
        spool.enqueue(&env, MESSAGE),
        Err(QueueError::Exists { .. })
    ));
    let mut bad = envelope();
    bad.id = "../escape".into();
    assert!(matches!(
        spool.enqueue(&bad, MESSAGE),
        Err(QueueError::InvalidId { .. })
    ));
    assert!(matches!(
        spool.claim("../../etc/passwd"),
        Err(QueueError::InvalidId { .. })
    ));
    assert!(matches!(
        spool.delete("a/b"),
        Err(QueueError::InvalidId { .. })
    ));
}

#[test]
fn claim_defer_list_and_deferred_carry_updated_recipients() {
    let (_dir, spool) = spool();
    let env = enqueued(&spool);
    let (mut claimed, message) = spool.claim(&env.id).unwrap().unwrap();
    assert_eq!(claimed, env);
    assert_eq!(message, MESSAGE);
    assert_eq!(names(&spool.active), [env.id.as_str()]);
    assert!(spool.incoming_ids().unwrap().is_empty());
    assert_eq!(spool.list().unwrap()[0].state, QueueState::Active);

    claimed.recipients[0].status = RecipientStatus::Delivered;
    claimed.recipients[0].last_reply = Some("250 2.0.0 ok".into());
    claimed.recipients[1].last_reply = Some("451 4.3.0 later".into());
    claimed.attempts = 1;
    claimed.next_attempt = T0 + 60;
    claimed.last_error = Some("451 4.3.0 later".into());
    spool.defer(&claimed, &message).unwrap();

    assert!(names(&spool.active).is_empty());
    assert!(names(&spool.tmp).is_empty());
    assert_eq!(spool.deferred().unwrap(), [(env.id.clone(), T0 + 60)]);
    let list = spool.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, QueueState::Deferred);
    assert_eq!(list[0].envelope, claimed);
    assert_eq!(list[0].envelope.pending().count(), 1);

    // A deferred message can be claimed again directly, with its updated envelope.
    let (again, _) = spool.claim(&env.id).unwrap().unwrap();
    assert_eq!(again.recipients[0].status, RecipientStatus::Delivered);
    assert_eq!(again.attempts, 1);
}

#[test]
fn defer_and_complete_require_an_active_message() {
    let (_dir, spool) = spool();
    let env = enqueued(&spool);
    assert!(matches!(
        spool.defer(&env, MESSAGE),
        Err(QueueError::NotActive { .. })
    ));
    assert!(matches!(
        spool.complete(&env.id),
        Err(QueueError::NotActive { .. })
    ));
    // Nothing was resurrected or moved by the failed calls.
    assert_eq!(spool.incoming_ids().unwrap(), [env.id.as_str()]);
    assert!(names(&spool.active).is_empty() && names(&spool.deferred).is_empty());
}

#[test]
fn checkpoint_keeps_the_message_active_and_survives_a_restart() {
    let (dir, spool) = spool();
    let env = enqueued(&spool);
    assert!(matches!(
        spool.checkpoint(&env, MESSAGE),
        Err(QueueError::NotActive { .. })
    ));
    let (mut claimed, message) = spool.claim(&env.id).unwrap().unwrap();
    claimed.recipients[0].status = RecipientStatus::Delivered;
    claimed.recipients[0].last_reply = Some("stored as 1".into());
    spool.checkpoint(&claimed, &message).unwrap();
    assert_eq!(names(&spool.active), [env.id.as_str()]);
    assert!(names(&spool.tmp).is_empty());

    // A crash now: recovery requeues the message with the progress recorded.
    let restarted = reopen(&dir, &spool);
    assert_eq!(restarted.recover().unwrap().requeued, 1);
    let (again, body) = restarted.claim(&env.id).unwrap().unwrap();
    assert_eq!(again, claimed);
    assert_eq!(body, MESSAGE);
    assert_eq!(again.pending().count(), 1);
}

#[test]
fn complete_removes_the_active_file() {
    let (_dir, spool) = spool();
    let env = enqueued(&spool);
    spool.claim(&env.id).unwrap().unwrap();
    spool.complete(&env.id).unwrap();
    assert!(spool.list().unwrap().is_empty());
    assert!(names(&spool.active).is_empty());
    assert!(spool.claim(&env.id).unwrap().is_none());
}

#[test]
fn flush_moves_all_deferred_to_incoming() {
    let (_dir, spool) = spool();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let env = enqueued(&spool);
        let (claimed, msg) = spool.claim(&env.id).unwrap().unwrap();
        spool.defer(&claimed, &msg).unwrap();
        ids.push(env.id);
    }
    let untouched = enqueued(&spool);
    assert_eq!(spool.deferred().unwrap().len(), 3);
    assert_eq!(spool.flush().unwrap(), 3);
    assert!(spool.deferred().unwrap().is_empty());
    ids.push(untouched.id);
    assert_eq!(spool.incoming_ids().unwrap(), ids, "oldest first");
    assert_eq!(spool.flush().unwrap(), 0);
}

#[test]
fn delete_finds_the_message_in_any_state() {
    let (_dir, spool) = spool();
    let incoming = enqueued(&spool);
    let active = enqueued(&spool);
    let deferred = enqueued(&spool);
    spool.claim(&active.id).unwrap().unwrap();
    let (d, m) = spool.claim(&deferred.id).unwrap().unwrap();
    spool.defer(&d, &m).unwrap();
    for id in [&incoming.id, &active.id, &deferred.id] {
        assert!(spool.delete(id).unwrap(), "{id}");
        assert!(!spool.delete(id).unwrap(), "{id} deleted twice");
    }
    assert!(spool.list().unwrap().is_empty());
    assert!(!spool.delete(&new_queue_id()).unwrap());
}

#[test]
fn recover_removes_tmp_and_requeues_active() {
    let (dir, spool) = spool();
    let env = enqueued(&spool);
    spool.claim(&env.id).unwrap().unwrap();
    fs::write(spool.tmp.join("0000000000000A000001.new"), b"half a fi").unwrap();
    let stray = enqueued(&spool);

    // A restart: a fresh Spool over the same directory.
    let spool = reopen(&dir, &spool);
    let report = spool.recover().unwrap();
    assert_eq!(
        report,
        RecoveryReport {
            removed_tmp: 1,
            requeued: 1
        }
    );
    assert!(names(&spool.tmp).is_empty());
    assert!(names(&spool.active).is_empty());
    assert_eq!(spool.incoming_ids().unwrap(), [env.id.clone(), stray.id]);
    let (back, msg) = spool.claim(&env.id).unwrap().unwrap();
    assert_eq!((back, msg.as_slice()), (env, MESSAGE));
    assert_eq!(
        spool.recover().unwrap(),
        RecoveryReport {
            removed_tmp: 0,
            requeued: 1
        }
    );
}

#[test]
fn second_claim_of_one_id_gets_none() {
    let (_dir, spool) = spool();
    let env = enqueued(&spool);
    assert!(spool.claim(&env.id).unwrap().is_some());
    assert!(spool.claim(&env.id).unwrap().is_none());
    assert!(spool.claim(&new_queue_id()).unwrap().is_none());
}

#[test]
fn concurrent_claims_hand_each_message_to_exactly_one_claimer() {
    let (_dir, spool) = spool();
    let ids: Vec<String> = (0..50).map(|_| enqueued(&spool).id).collect();
    let wins: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    ids.iter()
                        .filter(|id| spool.claim(id).unwrap().is_some())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(wins.iter().sum::<usize>(), ids.len());
    assert_eq!(names(&spool.active).len(), ids.len());
}

/// Claim a damaged file: Corrupt, moved to corrupt/, never returned again.
fn assert_quarantined(spool: &Spool, id: &str, expected: impl Fn(&FormatError) -> bool) {
    match spool.claim(id) {
        Err(QueueError::Corrupt { location, reason }) => {
            assert!(expected(&reason), "unexpected reason {reason:?}");
            let path = spool.corrupt.join(id);
            assert_eq!(location, path.display().to_string());
            assert!(path.is_file());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(spool.claim(id).unwrap().is_none(), "claimed again");
    assert!(!spool.incoming_ids().unwrap().contains(&id.to_string()));
    assert!(names(&spool.active).is_empty());
    assert!(spool.scan().unwrap().unreadable.is_empty());
    assert!(spool.list().unwrap().iter().all(|e| e.envelope.id != id));
    assert!(spool.corrupt_ids().unwrap().contains(&id.to_string()));
}

#[test]
fn truncated_file_is_quarantined() {
    let (_dir, spool) = spool();
    let id = plant(&spool, |b| b.truncate(b.len() - 100));
    assert_quarantined(&spool, &id, |r| matches!(r, FormatError::Truncated { .. }));
}

#[test]
fn flipped_byte_is_quarantined() {
    let (_dir, spool) = spool();
    let id = plant(&spool, |b| {
        let at = b.len() - 80; // inside the message body
        b[at] ^= 0x20;
    });
    assert_quarantined(&spool, &id, |r| *r == FormatError::ChecksumMismatch);
}

#[test]
fn missing_end_marker_is_quarantined() {
    let (_dir, spool) = spool();
    let id = plant(&spool, |b| b.truncate(b.len() - 69));
    assert_quarantined(&spool, &id, |r| *r == FormatError::MissingEndMarker);
}

#[test]
fn bad_magic_is_quarantined() {
    let (_dir, spool) = spool();
    let id = plant(&spool, |b| b[..8].copy_from_slice(b"POSTFIX "));
    assert_quarantined(&spool, &id, |r| *r == FormatError::BadMagic);
}

#[test]
fn file_under_another_id_is_quarantined() {
    let (_dir, spool) = spool();
    let env = envelope();
    let other = new_queue_id();
    fs::write(
        spool.path(QueueState::Incoming, &other),
        format::encode(&env, MESSAGE, spool.key.as_deref()).unwrap(),
    )
    .unwrap();
    assert_quarantined(&spool, &other, |r| {
        matches!(r, FormatError::IdMismatch { .. })
    });
}

#[test]
fn quarantine_keeps_earlier_corrupt_files() {
    let (_dir, spool) = spool();
    let id = plant(&spool, |b| b[0] = b'x');
    assert!(spool.claim(&id).is_err());
    fs::write(spool.path(QueueState::Incoming, &id), b"junk").unwrap();
    assert!(matches!(spool.claim(&id), Err(QueueError::Corrupt { .. })));
    assert_eq!(
        spool.corrupt_ids().unwrap(),
        [id.clone(), format!("{id}.1")]
    );
}

#[test]
fn scan_reports_unreadable_files_and_deferred_makes_them_due() {
    let (_dir, spool) = spool();
    let good = enqueued(&spool);
    let bad = plant(&spool, |b| b.truncate(40));
    let listing = spool.scan().unwrap();
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.entries[0].envelope, good);
    assert_eq!(listing.unreadable.len(), 1);
    assert_eq!(listing.unreadable[0].id, bad);
    assert!(
        listing.unreadable[0].error.to_string().contains(&bad),
        "error names the file"
    );

    fs::rename(
        spool.path(QueueState::Incoming, &bad),
        spool.path(QueueState::Deferred, &bad),
    )
    .unwrap();
    assert_eq!(spool.deferred().unwrap(), [(bad, 0)]);
}

#[test]
fn stray_names_are_ignored() {
    let (_dir, spool) = spool();
    let env = enqueued(&spool);
    fs::write(spool.incoming.join("notes.txt"), b"hello").unwrap();
    assert_eq!(spool.incoming_ids().unwrap(), [env.id]);
    assert_eq!(spool.list().unwrap().len(), 1);
}

#[test]
fn list_reads_headers_only_and_reports_message_size() {
    let (_dir, spool) = spool();
    let env = envelope();
    let big = vec![b'x'; 3 * 1024 * 1024];
    spool.enqueue(&env, &big).unwrap();
    let list = spool.list().unwrap();
    assert_eq!(list[0].size, big.len() as u64);
    // A damaged checksum does not hide the entry from a listing, but a claim refuses it.
    let path = spool.path(QueueState::Incoming, &env.id);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() - 2;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    fs::write(&path, bytes).unwrap();
    assert_eq!(spool.list().unwrap().len(), 1);
    assert!(matches!(
        spool.claim(&env.id),
        Err(QueueError::Corrupt {
            reason: FormatError::ChecksumMismatch,
            ..
        })
    ));
}

#[test]
fn concurrent_enqueues_share_directory_fsyncs_and_each_message_is_in_place() {
    const N: usize = 32;
    let (_dir, spool) = spool();
    let envelopes: Vec<Envelope> = (0..N).map(|_| envelope()).collect();
    let barrier = std::sync::Barrier::new(N);
    std::thread::scope(|s| {
        for e in &envelopes {
            let (spool, barrier) = (&spool, &barrier);
            s.spawn(move || {
                barrier.wait();
                spool.enqueue(e, MESSAGE).unwrap();
                assert!(spool.path(QueueState::Incoming, &e.id).exists());
            });
        }
    });
    let fsyncs = spool.directory_fsyncs();
    assert!(
        (1..N as u64).contains(&fsyncs),
        "{N} concurrent enqueues made {fsyncs} directory fsyncs"
    );
    assert_eq!(spool.incoming_ids().unwrap().len(), N);
    // Alone, each call still syncs.
    let before = spool.directory_fsyncs();
    enqueued(&spool);
    assert_eq!(spool.directory_fsyncs(), before + 1);
}

#[test]
fn a_delivered_message_file_is_written_again_for_the_next_message_and_holds_only_it() {
    use std::os::unix::fs::MetadataExt;
    let (_dir, spool) = spool();
    let first = enqueued(&spool);
    let inode = fs::metadata(spool.path(QueueState::Incoming, &first.id))
        .unwrap()
        .ino();
    spool.claim(&first.id).unwrap().unwrap();
    spool.complete(&first.id).unwrap();
    assert!(!spool.path(QueueState::Active, &first.id).exists());
    assert_eq!(spool.free.len(), 1);
    // Not a message: no listing and no claim sees the pooled file.
    assert!(spool.incoming_ids().unwrap().is_empty());

    // A shorter message takes the same file over; it holds that message and nothing after it.
    let second = envelope();
    spool
        .enqueue(&second, b"Subject: short\r\n\r\nx\r\n")
        .unwrap();
    let path = spool.path(QueueState::Incoming, &second.id);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        meta.ino(),
        inode,
        "the delivered message's file was not used again"
    );
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(spool.free.len(), 0);
    let (envelope, message) = spool.claim(&second.id).unwrap().unwrap();
    assert_eq!(envelope.id, second.id);
    assert_eq!(message, b"Subject: short\r\n\r\nx\r\n");

    // A pooled file removed behind the pool's back (a cleanup of tmp/): a new file is made.
    spool.complete(&second.id).unwrap();
    assert_eq!(spool.remove_staged().unwrap(), 0);
    assert!(dir_names(&spool.tmp).unwrap().is_empty());
    let third = enqueued(&spool);
    assert!(spool.claim(&third.id).unwrap().is_some());
}

#[test]
fn the_pool_of_files_is_bounded_and_the_rest_are_removed() {
    let (_dir, spool) = spool();
    let ids: Vec<String> = (0..recycle::POOL + 5)
        .map(|_| enqueued(&spool).id)
        .collect();
    for id in &ids {
        spool.claim(id).unwrap().unwrap();
        spool.complete(id).unwrap();
    }
    assert_eq!(spool.free.len(), recycle::POOL);
    assert_eq!(dir_names(&spool.tmp).unwrap().len(), recycle::POOL);
    assert!(dir_names(&spool.active).unwrap().is_empty());
    // Startup removes them like anything else left in tmp/.
    let report = spool.recover().unwrap();
    assert_eq!(
        report.removed_tmp, 0,
        "pooled files are not unfinished messages"
    );
    assert!(dir_names(&spool.tmp).unwrap().is_empty());
}
