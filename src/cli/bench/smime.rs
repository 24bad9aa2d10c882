//! `sealpost bench smime`: S/MIME encryption where `serve` does it, between DATA and the queue
//! write: the `smime_encrypt` transport rule evaluated and applied by the cleanup stage with the
//! certificates of a directory (looked up per message, as `serve` does), to one RSA-2048
//! recipient. Messages per second with 1, 2, ... threads, next to the bound `openssl speed` sets
//! on one core: one RSA-2048 public operation plus AES-256 over the message.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;

use super::openssl_speed;
use crate::cleanup::apply::{apply, Content, Original, Protectors};
use crate::cleanup::smime::DirectorySmime;
use crate::crypto::smime::{decrypt_message, DecryptKey};
use crate::mail::DomainSet;
use crate::rules::{evaluate, parse_rule_file, MessageFacts, RuleSet};

pub struct Params {
    pub messages: usize,
    pub size: usize,
    pub threads: Vec<usize>,
    pub gcm: bool,
}

const SENDER: &str = "alice@contoso.test";
const RECIPIENT: &str = "bob@fabrikam.test";

/// Everything one message needs: the rules, the encryptor, the message.
struct Path_ {
    rules: RuleSet,
    smime: DirectorySmime,
    message: Vec<u8>,
    head_len: usize,
    local: DomainSet,
}

impl Path_ {
    fn new(fixtures: &Path, p: &Params) -> anyhow::Result<Self> {
        let algorithm = if p.gcm { "aes256-gcm" } else { "aes256-cbc" };
        let text = format!(
            "name = \"encrypt\"\npriority = 1\n[[actions]]\ntype = \"smime_encrypt\"\n\
             algorithm = \"{algorithm}\"\n"
        );
        let rule = parse_rule_file(Path::new("encrypt.toml"), &text)?;
        let message = super::build_message(p.size);
        let head_len = message
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |i| i + 4);
        Ok(Path_ {
            rules: RuleSet::new(vec![rule]),
            smime: DirectorySmime::new(fixtures.join("pki/smime")),
            message,
            head_len,
            local: DomainSet::new(["contoso.test"]),
        })
    }

    /// The message as the cleanup stage hands it to the queue for RECIPIENT.
    fn encrypt_one(&self) -> anyhow::Result<Vec<u8>> {
        let recipients = [RECIPIENT.to_string()];
        let facts = MessageFacts {
            mail_from: SENDER,
            recipients: &recipients,
            message: &self.message,
            size: self.message.len() as u64,
            local_domains: &self.local,
            authenticated: true,
            inbound_connector: None,
            sender_auth: None,
        };
        let evaluation = evaluate(&self.rules, &facts);
        let original = Original {
            head: &self.message[..self.head_len],
            whole: Some(&self.message),
        };
        let copies = apply(
            &evaluation,
            SENDER,
            &original,
            Protectors {
                smime: Some(&self.smime),
                ..Default::default()
            },
        )
        .map_err(|r| anyhow::anyhow!("refused: {r}"))?;
        match copies.into_iter().next().map(|c| c.content) {
            Some(Content::Whole(bytes)) => Ok(bytes),
            other => anyhow::bail!("the message was not encrypted: {other:?}"),
        }
    }
}

pub fn run(fixtures: &Path, p: Params) -> anyhow::Result<ExitCode> {
    let path = Path_::new(fixtures, &p)?;
    // The bench measures the real thing: the first message must open with bob's key.
    let first = path.encrypt_one()?;
    let key_path: PathBuf = fixtures.join(format!("pki/smime/{RECIPIENT}.key"));
    let key =
        DecryptKey::from_pem(&key_path, None).with_context(|| format!("{}", key_path.display()))?;
    let opened = decrypt_message(&first, &key).context("decrypting the first message")?;
    anyhow::ensure!(
        opened.ends_with(&path.message[path.head_len..]),
        "the decrypted body differs from the original"
    );

    let mut rates = Vec::new();
    for &threads in &p.threads {
        rates.push((threads, measure(&path, p.messages, threads.max(1))?));
    }
    let cipher = if p.gcm { "aes-256-gcm" } else { "aes-256-cbc" };
    let (sign_verify, cbc, gcm) = (
        openssl_speed::rsa2048(3),
        openssl_speed::evp_bytes_per_s("aes-256-cbc", 3),
        openssl_speed::evp_bytes_per_s("aes-256-gcm", 3),
    );
    let aes = if p.gcm { gcm } else { cbc };
    let bound = sign_verify
        .zip(aes)
        .map(|((_, verify), aes)| 1.0 / (1.0 / verify + p.size as f64 / aes));

    println!(
        "smime bench: {} messages of {} bytes, smime_encrypt ({cipher}, RSA-OAEP) to one RSA-2048 \
         certificate, through the cleanup stage, {} cores, load {}",
        p.messages,
        path.message.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        super::compare::load_average()
    );
    for (threads, rate) in &rates {
        let of_bound = bound.map_or(String::new(), |b| {
            format!(
                "  {:.0}% of {threads} x the per-core bound",
                100.0 * rate / (b * *threads as f64)
            )
        });
        println!("  {threads} thread(s): {rate:>9.1} msg/s{of_bound}");
    }
    let mib = |b: f64| b / (1024.0 * 1024.0);
    match (sign_verify, cbc, gcm, bound) {
        (Some((_, verify)), Some(cbc), Some(gcm), Some(bound)) => {
            println!(
                "  openssl speed: rsa2048 {verify:.0} public ops/s; aes-256-cbc {:.0} MiB/s, \
                 aes-256-gcm {:.0} MiB/s (16384-byte blocks)",
                mib(cbc),
                mib(gcm)
            );
            println!(
                "  per-core bound (1 public op + {cipher} of {} bytes): {bound:.1} msg/s",
                p.size
            );
        }
        _ => println!("  bound: openssl speed not available (install openssl for the comparison)"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Messages per second with `threads` threads sharing `messages` messages.
fn measure(path: &Path_, messages: usize, threads: usize) -> anyhow::Result<f64> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    while next.fetch_add(1, Ordering::Relaxed) < messages {
                        path.encrypt_one()?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| anyhow::bail!("a thread panicked"))
        })
    })?;
    Ok(messages as f64 / started.elapsed().as_secs_f64())
}
