//! The store half of `sealpost bench keys`: policy-key unwraps per second by a root key in a file
//! and in a token (AES Key Wrap, what a cold cache costs), and messages written and read back per
//! second by a store whose policy has file roots or token roots (the policy key is unwrapped once
//! and cached, so the token is off the message path).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::config::Config;
use crate::crypto::keyfile::generate_key_file;
use crate::crypto::sealing::SecretKey;
use crate::keys::{KekRef, PinSource, Pkcs11Config, Pkcs11Uri};
use crate::store::kek::Kek;
use crate::store::{EncryptedStore, MailStore};

const MAILBOX: &str = "bench@bench.test";

/// Prints both tables for a file root and a new root in `pkcs11`'s token `token`.
pub fn run(
    base: &Path,
    pkcs11: &Pkcs11Config,
    token: &str,
    operations: usize,
    messages: usize,
) -> anyhow::Result<()> {
    let dir = base.join("store-bench");
    std::fs::create_dir_all(dir.join("keys"))?;
    for k in ["root-a", "root-b", "availability"] {
        generate_key_file(&dir.join(format!("keys/{k}.key")))?;
    }
    let token_ref = |object: &str| -> anyhow::Result<KekRef> {
        Ok(KekRef::Token {
            pkcs11: pkcs11.clone(),
            uri: Pkcs11Uri::parse(&format!("pkcs11:token={token};object={object}"))?,
        })
    };
    let file_root = Kek::open(&KekRef::File(dir.join("keys/root-a.key")))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let token_a = token_ref("bench-root-a")?;
    let token_root = Kek::generate(&token_a)?;
    Kek::generate(&token_ref("bench-root-b")?)?;

    outln!();
    outln!(
        "{:<6} {:>18} {:>16}  root key",
        "where",
        "policy unwraps/s",
        "policy wraps/s"
    );
    for (name, kek, what) in [
        ("file", &file_root, "AES-256 key file".to_string()),
        ("token", &token_root, token_a.to_string()),
    ] {
        let policy_key = SecretKey::generate()?;
        let wrapped = kek.wrap(&policy_key).map_err(|e| anyhow::anyhow!("{e}"))?;
        let start = Instant::now();
        for _ in 0..operations {
            let k = kek
                .unwrap_key(&wrapped)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(k.as_bytes() == policy_key.as_bytes(), "wrong key unwrapped");
        }
        let unwraps = operations as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..operations {
            kek.wrap(&policy_key).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let wraps = operations as f64 / start.elapsed().as_secs_f64();
        outln!("{name:<6} {unwraps:>18.0} {wraps:>16.0}  {what}");
    }

    outln!();
    outln!(
        "{:<6} {:>9} {:>14} {:>13}  store (10 KB messages, one policy key, cached)",
        "roots",
        "messages",
        "write msg/s",
        "read msg/s"
    );
    let pin = match &pkcs11.pin {
        PinSource::File(f) => format!("pin_file = \"{}\"", f.display()),
        PinSource::Env(v) => format!("pin_env = \"{v}\""),
    };
    let message = bench_message();
    for (name, roots) in [
        (
            "file",
            ["keys/root-a.key".to_string(), "keys/root-b.key".to_string()],
        ),
        (
            "token",
            [
                format!("pkcs11:token={token};object=bench-root-a"),
                format!("pkcs11:token={token};object=bench-root-b"),
            ],
        ),
    ] {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nhostname = \"mx.bench.test\"\ndata_dir = \"data-{name}\"\n\
                 [[domain]]\nname = \"bench.test\"\nencryption_policy = \"p\"\n\
                 [[mailbox]]\naddress = \"{MAILBOX}\"\n\
                 [[encryption_policy]]\nname = \"p\"\nroot_keys = [\"{}\", \"{}\"]\n\
                 availability_key = \"keys/availability.key\"\n\
                 [pkcs11]\nmodule = \"{}\"\n{pin}\n",
                roots[0],
                roots[1],
                pkcs11.module.display()
            ),
        )?;
        let config = Config::load(&config, None)?;
        let store = EncryptedStore::open(&config, "bench").context("opening the store")?;
        let start = Instant::now();
        let ids = (0..messages)
            .map(|_| store.deliver(MAILBOX, &message))
            .collect::<Result<Vec<_>, _>>()?;
        let writes = messages as f64 / start.elapsed().as_secs_f64();
        let store = EncryptedStore::open(&config, "bench").context("opening the store")?;
        let start = Instant::now();
        for id in &ids {
            let back = store.read(MAILBOX, id)?;
            anyhow::ensure!(back == message, "message {id} read back changed");
        }
        let reads = messages as f64 / start.elapsed().as_secs_f64();
        outln!("{name:<6} {messages:>9} {writes:>14.0} {reads:>13.0}");
    }
    Ok(())
}

fn bench_message() -> Vec<u8> {
    let mut m = b"From: a@bench.test\r\nTo: bench@bench.test\r\nSubject: bench\r\n\r\n".to_vec();
    while m.len() < 10_000 {
        m.extend_from_slice(b"0123456789 the quick brown fox jumps over the lazy dog 0123456\r\n");
    }
    m
}
