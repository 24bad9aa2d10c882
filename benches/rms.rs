//! RMS-style protection throughput: protecting and opening 10 KB and 1 MB messages with the
//! fixture RSA-2048 tenant key, in messages per second on one thread. Run with
//! `cargo bench --bench rms`.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use sealpost::crypto::rms::{license_for, protect, unprotect, TenantKeys};
use sealpost::rules::RmsProtect;

/// A plain-text message of about `size` bytes with the usual routing headers.
fn message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\nSubject: [protect] bench\r\n\
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/tenant");
    let keys = TenantKeys::load_dir(&dir).expect("fixture tenant keys");
    let tenant = keys.active().expect("an active tenant key");
    let action = RmsProtect {
        template: "do-not-forward".into(),
        rights: Default::default(),
        expires_after: None,
    };
    let recipients = vec!["bob@fabrikam.test".to_string()];
    let min = Duration::from_secs(2);
    println!(
        "RMS-style protection (RSA-{} tenant key, AES-256-CBC, one thread, {}s per case)",
        tenant.bits(),
        min.as_secs()
    );
    for (label, size) in [("10 KB", 10_000), ("1 MB", 1_000_000)] {
        let msg = message(size);
        let now = SystemTime::now();
        let req = license_for(&action, "alice@contoso.test", &recipients, None, now);
        let (p, n) = rate(min, || {
            let out = protect(&msg, tenant, req.clone()).expect("protect");
            std::hint::black_box(out);
        });
        println!("  protect   {label:>6}: {p:9.1} messages/s ({n} runs)");
        let sealed = protect(&msg, tenant, req.clone()).expect("protect");
        let (u, n) = rate(min, || {
            let (_, plain) = unprotect(&sealed, &keys, now, false).expect("unprotect");
            assert_eq!(plain.len(), msg.len());
            std::hint::black_box(plain);
        });
        println!("  unprotect {label:>6}: {u:9.1} messages/s ({n} runs)");
    }
}
