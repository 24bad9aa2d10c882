//! Spool tests of encryption at rest: nothing in clear on disk, tampering quarantined, version 1
//! files still delivered, a wrong or missing service key never yields a message.

use super::tests::service_key;
use super::*;
use crate::crypto::sealing::CryptoError;
use crate::mail::id::new_queue_id;
use sha2::{Digest, Sha256};

const MARKER: &[u8] = b"QENC-MARKER-41c9";

fn message() -> Vec<u8> {
    let mut m = b"From: bob@fabrikam.test\r\nSubject: ".to_vec();
    m.extend_from_slice(MARKER);
    m.extend_from_slice(b"\r\n\r\nconfidential\r\n");
    m
}

fn envelope() -> Envelope {
    Envelope::new(
        new_queue_id(),
        "bob@fabrikam.test",
        vec!["alice@contoso.test".into()],
        "mx.fabrikam.test",
        "127.0.0.1:40000",
        1_700_000_000,
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, recursively, that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if contains(&fs::read(&path).unwrap(), needle) {
            found.push(path);
        }
    }
    found
}

/// Recompute the END line after an edit, as an attacker with write access could.
fn reseal_checksum(bytes: &mut Vec<u8>) {
    let cut = bytes.len() - (4 + 64 + 1);
    bytes.truncate(cut);
    let digest = hex::encode(Sha256::digest(&bytes[..]));
    bytes.extend_from_slice(format!("END {digest}\n").as_bytes());
}

#[test]
fn queued_and_deferred_messages_never_rest_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), service_key()).unwrap();
    assert!(spool.is_encrypted());
    let env = envelope();
    spool.enqueue(&env, &message()).unwrap();
    assert_eq!(files_containing(dir.path(), MARKER), Vec::<PathBuf>::new());
    let first = fs::read(spool.path(QueueState::Incoming, &env.id)).unwrap();
    assert!(first.starts_with(format::MAGIC));

    let (mut claimed, msg) = spool.claim(&env.id).unwrap().unwrap();
    assert_eq!(msg, message());
    claimed.last_error = Some("451 4.4.1 later".into());
    spool.defer(&claimed, &msg).unwrap();
    assert_eq!(files_containing(dir.path(), MARKER), Vec::<PathBuf>::new());
    // The rewrite used a new content key: the K line changed.
    let second = fs::read(spool.path(QueueState::Deferred, &env.id)).unwrap();
    let k_line = |b: &[u8]| {
        b.split(|&c| c == b'\n')
            .find(|l| l.starts_with(b"K "))
            .map(<[u8]>::to_vec)
    };
    assert!(k_line(&first).is_some());
    assert_ne!(k_line(&first), k_line(&second));
    // The listing still reads the clear envelope and the message's own size.
    let list = spool.list().unwrap();
    assert_eq!(
        list[0].envelope.last_error.as_deref(),
        Some("451 4.4.1 later")
    );
    assert_eq!(list[0].size, message().len() as u64);
    assert_eq!(spool.claim(&env.id).unwrap().unwrap().1, message());
}

/// Claim must quarantine `id` with a reason matching `expected`.
fn assert_quarantined(spool: &Spool, id: &str, expected: impl Fn(&FormatError) -> bool) {
    match spool.claim(id) {
        Err(QueueError::Corrupt { location, reason }) => {
            assert!(expected(&reason), "unexpected reason {reason:?}");
            assert_eq!(location, spool.corrupt.join(id).display().to_string());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(spool.claim(id).unwrap().is_none(), "claimed again");
    assert!(spool.list().unwrap().is_empty());
    assert_eq!(spool.corrupt_ids().unwrap(), [id]);
}

#[test]
fn altered_ciphertext_with_a_recomputed_checksum_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), service_key()).unwrap();
    let env = envelope();
    spool.enqueue(&env, &message()).unwrap();
    let path = spool.path(QueueState::Incoming, &env.id);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() - (4 + 64 + 1) - 10; // inside the sealed message
    bytes[at] ^= 0x01;
    reseal_checksum(&mut bytes);
    fs::write(&path, bytes).unwrap();
    assert_quarantined(&spool, &env.id, |r| {
        *r == FormatError::Decrypt(CryptoError::Chunk(0))
    });
}

#[test]
fn a_file_sealed_under_another_service_key_is_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = Spool::open(dir.path(), service_key()).unwrap();
    let env = envelope();
    sealer.enqueue(&env, &message()).unwrap();
    let other = Spool::open(dir.path(), service_key()).unwrap();
    assert_quarantined(&other, &env.id, |r| {
        matches!(r, FormatError::WrongServiceKey { .. })
    });

    let env = envelope();
    sealer.enqueue(&env, &message()).unwrap();
    let plain = Spool::open_plain(dir.path()).unwrap();
    assert!(matches!(
        plain.claim(&env.id),
        Err(QueueError::Corrupt {
            reason: FormatError::NoServiceKey,
            ..
        })
    ));
}

#[test]
fn a_version_1_file_from_before_the_upgrade_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let env = envelope();
    Spool::open_plain(dir.path())
        .unwrap()
        .enqueue(&env, &message())
        .unwrap();
    let path = dir.path().join("queue/incoming").join(&env.id);
    assert!(fs::read(&path).unwrap().starts_with(format::MAGIC_V1));

    let spool = Spool::open(dir.path(), service_key()).unwrap();
    assert_eq!(spool.list().unwrap()[0].size, message().len() as u64);
    let (claimed, msg) = spool.claim(&env.id).unwrap().unwrap();
    assert_eq!((&claimed, msg.as_slice()), (&env, message().as_slice()));
    // Deferring it rewrites it encrypted.
    spool.defer(&claimed, &msg).unwrap();
    let rewritten = fs::read(spool.path(QueueState::Deferred, &env.id)).unwrap();
    assert!(rewritten.starts_with(format::MAGIC));
    assert!(!contains(&rewritten, MARKER));
}
