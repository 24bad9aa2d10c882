//! Store throughput: deliver (durable) then read back, 10 KB and 1 MB messages, encrypted vs
//! policy "none". Not a timed test: run `cargo bench --bench store` and read the figures.

use std::path::Path;
use std::time::{Duration, Instant};

use sealpost::config::Config;
use sealpost::store::{EncryptedStore, MailStore};

const ROUNDS: usize = 3;

fn config(dir: &Path) -> Config {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    for k in ["a", "b", "availability"] {
        sealpost::crypto::keyfile::generate_key_file(&keys.join(format!("{k}.key"))).expect("key");
    }
    let text = r#"
[server]
hostname = "mx.bench.test"
data_dir = "data"
[[domain]]
name = "bench.test"
encryption_policy = "none"
[[mailbox]]
address = "enc@bench.test"
encryption_policy = "p"
[[mailbox]]
address = "plain@bench.test"
[[encryption_policy]]
name = "p"
root_keys = ["keys/a.key", "keys/b.key"]
availability_key = "keys/availability.key"
"#;
    let path = dir.join("bench.toml");
    std::fs::write(&path, text).expect("config");
    Config::load(&path, None).expect("valid config")
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: <a@bench.test>\r\nSubject: bench\r\n\r\n".to_vec();
    let mut i = 0u64;
    while m.len() < size {
        m.extend_from_slice(
            format!("{i:016x} the quick brown fox jumps over the lazy dog\r\n").as_bytes(),
        );
        i += 1;
    }
    m.truncate(size);
    m
}

/// (write time, read time) for `n` messages into a fresh mailbox.
fn run(store: &EncryptedStore, mailbox: &str, msg: &[u8], n: usize) -> (Duration, Duration) {
    let start = Instant::now();
    let ids: Vec<String> = (0..n)
        .map(|_| store.deliver(mailbox, msg).expect("deliver"))
        .collect();
    let write = start.elapsed();
    let start = Instant::now();
    for id in &ids {
        let got = store.read(mailbox, id).expect("read");
        assert_eq!(got.len(), msg.len());
    }
    (write, start.elapsed())
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))
        .expect("tempdir");
    let config = config(dir.path());
    println!(
        "store benchmark in {} (best of {ROUNDS} rounds)",
        dir.path().display()
    );
    println!(
        "{:>7} {:>10} {:>5} {:>13} {:>13} {:>15} {:>10}",
        "size", "policy", "msgs", "write MiB/s", "read MiB/s", "write+read MiB/s", "msgs/s"
    );
    for (size, n) in [(10 * 1024, 400), (1024 * 1024, 40)] {
        let msg = message(size);
        let mut combined = Vec::new();
        for (label, mailbox) in [("p (AES)", "enc@bench.test"), ("none", "plain@bench.test")] {
            let mut best: Option<(Duration, Duration)> = None;
            for _ in 0..ROUNDS {
                let store = EncryptedStore::open(&config, "bench").expect("open");
                let (w, r) = run(&store, mailbox, &msg, n);
                if best.is_none_or(|(bw, br)| w + r < bw + br) {
                    best = Some((w, r));
                }
            }
            let Some((w, r)) = best else { continue };
            let total = size * n;
            println!(
                "{:>7} {:>10} {:>5} {:>13.1} {:>13.1} {:>15.1} {:>10.0}",
                if size < 1 << 20 { "10 KiB" } else { "1 MiB" },
                label,
                n,
                mib_s(total, w),
                mib_s(total, r),
                mib_s(2 * total, w + r),
                n as f64 / (w + r).as_secs_f64()
            );
            combined.push(mib_s(2 * total, w + r));
        }
        if let [enc, plain] = combined[..] {
            println!(
                "{:>7} encryption costs {:.1}% of write+read throughput",
                "",
                (1.0 - enc / plain) * 100.0
            );
        }
    }
}
