//! S/MIME throughput: encrypting 10 KB and 1 MB messages for 1 and 10 recipients, and
//! decrypting a 10 KB one, in messages per second on one thread. Run with
//! `cargo bench --bench smime`; compare the RSA share with `openssl speed rsa2048`.

use std::path::Path;
use std::time::{Duration, Instant};

use sealpost::crypto::keys::generate_smime;
use sealpost::crypto::smime::{
    decrypt_message, encrypt_message, ContentAlgorithm, DecryptKey, KeyTransport, RecipientCert,
    SmimeOptions,
};

/// A plain-text message of about `size` bytes with the usual routing headers.
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\nSubject: [secure] bench\r\n\
Date: Sun, 22 Nov 2026 11:41:37 +0000\r\nMessage-ID: <bench@contoso.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        .to_vec();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size);
    m
}

/// Runs `f` for at least `min` (and at least 5 times); returns operations per second.
fn rate(min: Duration, mut f: impl FnMut()) -> (f64, u32) {
    f(); // warm up
    let start = Instant::now();
    let mut n = 0u32;
    while n < 5 || start.elapsed() < min {
        f();
        n += 1;
    }
    (f64::from(n) / start.elapsed().as_secs_f64(), n)
}

fn main() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
    let dir = tempfile::tempdir().expect("temporary directory");
    let addresses: Vec<String> = (0..10).map(|i| format!("r{i}@fabrikam.test")).collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    generate_smime(
        dir.path(),
        &fixtures.join("ca.crt"),
        &fixtures.join("ca.key"),
        &refs,
    )
    .expect("bench certificates");
    let certs: Vec<RecipientCert> = refs
        .iter()
        .map(|a| RecipientCert::from_pem_file(&dir.path().join(format!("{a}.crt"))).expect("cert"))
        .collect();
    let min = Duration::from_secs(2);

    println!(
        "S/MIME encryption (RSA-2048 recipients, one thread, {}s per case)",
        min.as_secs()
    );
    println!(
        "{:<10} {:>5} {:<24} {:>12} {:>10}",
        "message", "rcpts", "options", "messages/s", "MB/s"
    );
    let option_sets = [
        ("aes256-cbc, rsa-oaep", SmimeOptions::default()),
        (
            "aes256-gcm, rsa-oaep",
            SmimeOptions {
                algorithm: ContentAlgorithm::Aes256Gcm,
                key_transport: KeyTransport::RsaOaep,
            },
        ),
    ];
    for (label, size) in [("10 KB", 10 * 1024), ("1 MB", 1024 * 1024)] {
        let msg = message(size);
        for n in [1usize, 10] {
            for (opts_label, opts) in &option_sets {
                let (per_s, _) = rate(min, || {
                    let out = encrypt_message(&msg, &certs[..n], opts).expect("encrypt");
                    std::hint::black_box(out);
                });
                let mb_s = per_s * size as f64 / (1024.0 * 1024.0);
                println!("{label:<10} {n:>5} {opts_label:<24} {per_s:>12.1} {mb_s:>10.1}");
            }
        }
    }

    println!();
    println!("S/MIME decryption (RSA-2048 private key via aws-lc-rs)");
    let key = DecryptKey::from_pem(
        &dir.path().join("r0@fabrikam.test.key"),
        Some(&dir.path().join("r0@fabrikam.test.crt")),
    )
    .expect("key");
    let msg = message(10 * 1024);
    for (opts_label, opts) in &option_sets {
        for n in [1usize, 10] {
            let sealed = encrypt_message(&msg, &certs[..n], opts).expect("encrypt");
            let (per_s, _) = rate(min, || {
                let out = decrypt_message(&sealed, &key).expect("decrypt");
                std::hint::black_box(out);
            });
            println!("10 KB      {n:>5} {opts_label:<24} {per_s:>12.1}");
        }
    }
}
