//! `sealpost store`: operate the encrypted mailbox store — rotate, move, reencrypt, revoke,
//! verify, check the audit log, and make root keys.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::ConfigArgs;
use crate::store::ops::{self, Progress};
use crate::store::EncryptedStore;

#[derive(Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Policy keys: rotate or revoke.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Root keys: replace one of a policy's two root keys.
    Root {
        #[command(subcommand)]
        command: RootCommand,
    },
    /// Mailboxes: move one onto another policy.
    Mailbox {
        #[command(subcommand)]
        command: MailboxCommand,
    },
    /// Move every mailbox onto its configured policy, encrypting messages stored in clear.
    ///
    /// Mailboxes under another policy than configured get their key re-wrapped (content is not
    /// touched); messages stored under "none" are encrypted into new blobs and the plain blobs
    /// removed. This is the only store command that rewrites content.
    Reencrypt(ConfigArgs),
    /// Authenticate every message; report failures, unreadable messages and orphan blobs, and
    /// legacy messages not yet bound to their mailbox.
    ///
    /// Exits 1 when any message fails authentication or its blob is missing.
    Verify(ConfigArgs),
    /// The audit log of policy-key unwraps.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Key files.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Make a new policy key and re-wrap every mailbox key under it; the old key is destroyed.
    Rotate {
        #[command(flatten)]
        config: ConfigArgs,
        /// The [[encryption_policy]] name.
        name: String,
    },
    /// Crypto-shred a policy: destroy the wraps of its policy keys (root and availability) and of
    /// every mailbox key under it. Its messages can never be read again.
    ///
    /// Without --confirm, only reports what would become unreadable.
    Revoke {
        #[command(flatten)]
        config: ConfigArgs,
        name: String,
        /// Really destroy the keys.
        #[arg(long)]
        confirm: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RootCommand {
    /// Re-wrap the policy key under a new root key in place of an old one.
    ///
    /// Afterwards, change the policy's root_keys in the configuration to name the new key.
    /// Either key may be a file or a `pkcs11:` URI of a token key (module and PIN from the
    /// config's [pkcs11]), so this also moves a root key into an HSM.
    Rotate {
        #[command(flatten)]
        config: ConfigArgs,
        name: String,
        /// The root key being replaced: a key file or a pkcs11: URI.
        #[arg(long, value_name = "FILE|URI")]
        old: String,
        /// The new root key (see `keys root new`): a key file or a pkcs11: URI.
        #[arg(long, value_name = "FILE|URI")]
        new: String,
    },
}

#[derive(Subcommand, Debug)]
enum MailboxCommand {
    /// Re-wrap one mailbox's key under another configured policy (content is not touched).
    ///
    /// Also change the mailbox's encryption_policy in the configuration, or a later
    /// `store reencrypt` moves it back.
    SetPolicy {
        #[command(flatten)]
        config: ConfigArgs,
        /// The mailbox address.
        address: String,
        /// The policy name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the audit log's hash chain and its anchor in the index; exits 1 on any problem.
    Verify(ConfigArgs),
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Generate a root (or availability) key: 32 random bytes in a new file with mode 0600.
    ///
    /// File format: the line `sealpost-key-v1`, then 64 lowercase hex digits. Refuses to
    /// overwrite an existing file.
    RootNew {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// An indicatif bar on standard error (hidden when it is not a terminal).
pub(super) struct Bar(ProgressBar);

impl Bar {
    pub(super) fn new() -> Bar {
        let bar = ProgressBar::hidden();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{msg:24} [{bar:40}] {pos}/{len} ({eta})") {
            bar.set_style(style.progress_chars("=> "));
        }
        Bar(bar)
    }
}

impl Progress for Bar {
    fn begin(&self, what: &str, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_message(what.to_string());
    }
    fn step(&self) {
        self.0.inc(1);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Opens the store of a configuration, acting as `actor` in the audit log.
pub(super) fn open(config: &ConfigArgs, actor: &str) -> Result<EncryptedStore, ExitCode> {
    let config = config.load_existing(super::DataPart::Store)?;
    EncryptedStore::open(&config, actor).map_err(|e| {
        eprintln!("sealpost: {e}");
        ExitCode::FAILURE
    })
}

macro_rules! open_or_return {
    ($config:expr, $actor:expr) => {
        match open(&$config, $actor) {
            Ok(s) => s,
            Err(code) => return Ok(code),
        }
    };
}

pub fn run(args: StoreArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        StoreCommand::Policy {
            command: PolicyCommand::Rotate { config, name },
        } => {
            let store = open_or_return!(config, "store policy rotate");
            let r = ops::rotate_policy(&store, &name, &Bar::new())?;
            outln!(
                "policy {name}: generation {} -> {}; {} mailbox key(s) re-wrapped, no message rewritten",
                r.old_generation, r.new_generation, r.mailbox_keys
            );
        }
        StoreCommand::Policy {
            command:
                PolicyCommand::Revoke {
                    config,
                    name,
                    confirm,
                },
        } => {
            let store = open_or_return!(config, "store policy revoke");
            let r = ops::revoke_policy(&store, &name, confirm)?;
            if !confirm {
                eprintln!(
                    "sealpost: revoking {name} would destroy {} mailbox key(s) and make {} message(s) \
                     unreadable forever; add --confirm to do it",
                    r.mailbox_keys, r.messages
                );
                return Ok(ExitCode::from(2));
            }
            outln!(
                "policy {name} revoked: {} policy key generation(s) and {} mailbox key(s) destroyed; \
                 {} message(s) became unreadable",
                r.generations, r.mailbox_keys, r.messages
            );
        }
        StoreCommand::Root {
            command:
                RootCommand::Rotate {
                    config,
                    name,
                    old,
                    new,
                },
        } => {
            let loaded = match config.load_existing(super::DataPart::Store) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let key_ref = |text: &str| -> anyhow::Result<crate::keys::KekRef> {
                if !crate::keys::is_pkcs11_uri(text) {
                    return Ok(crate::keys::KekRef::File(PathBuf::from(text)));
                }
                let uri = crate::keys::Pkcs11Uri::parse(text)?;
                let pkcs11 = loaded.pkcs11.clone().ok_or_else(|| {
                    anyhow::anyhow!(
                        "{uri} is a token key: the configuration needs a [pkcs11] section"
                    )
                })?;
                Ok(crate::keys::KekRef::Token { pkcs11, uri })
            };
            let (old, new) = (key_ref(&old)?, key_ref(&new)?);
            let store = open_or_return!(config, "store root rotate");
            let r = ops::rotate_root(&store, &name, &old, &new)?;
            outln!(
                "policy {name}: policy key generation {} re-wrapped under root key {} (was {}); \
                 now name {new} in root_keys",
                r.generation,
                r.new_key_id,
                r.old_key_id,
            );
        }
        StoreCommand::Mailbox {
            command:
                MailboxCommand::SetPolicy {
                    config,
                    address,
                    name,
                },
        } => {
            let store = open_or_return!(config, "store mailbox set-policy");
            let r = ops::set_policy(&store, &address, &name)?;
            outln!("{address}: {} -> {}; no message rewritten", r.from, r.to);
            if r.plain_messages > 0 {
                outln!(
                    "{} message(s) are still stored in clear: run `sealpost store reencrypt`",
                    r.plain_messages
                );
            }
            if store.configured_policy(&address).map(|p| p.to_string()) != Some(name.clone()) {
                outln!(
                    "note: the configuration still assigns another policy to {address}; change it, \
                     or `store reencrypt` moves the mailbox back"
                );
            }
        }
        StoreCommand::Reencrypt(config) => {
            let store = open_or_return!(config, "store reencrypt");
            let r = ops::reencrypt(&store, &Bar::new())?;
            for s in &r.skipped {
                outln!("SKIPPED  {s}");
            }
            outln!(
                "{} mailbox(es) moved onto their configured policy; {} message(s) encrypted; {} skipped",
                r.mailboxes_moved,
                r.messages_encrypted,
                r.skipped.len()
            );
            if !r.skipped.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        StoreCommand::Verify(config) => {
            let store = open_or_return!(config, "store verify");
            let r = ops::verify(&store, &Bar::new())?;
            for f in &r.failures {
                outln!("FAILED  {f}");
            }
            for u in &r.unreadable {
                outln!("UNREADABLE  {u}");
            }
            for o in &r.orphans {
                outln!("ORPHAN  blob {o} (no index entry)");
            }
            let bound = store.rebinding();
            for p in &bound.pending {
                outln!("UNBOUND  {p}");
            }
            if !bound.complete {
                outln!(
                    "legacy messages not yet bound to their mailbox are still accepted; they are \
                     bound when the store opens with their keys available"
                );
            }
            outln!(
                "{} message(s) checked: {} ok, {} failed, {} unreadable; {} orphan blob(s)",
                r.checked,
                r.ok,
                r.failures.len(),
                r.unreadable.len(),
                r.orphans.len()
            );
            if !r.failures.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        StoreCommand::Audit {
            command: AuditCommand::Verify(config),
        } => {
            let store = open_or_return!(config, "store audit verify");
            let mut reports = Vec::new();
            if let Some((path, r)) = ops::verify_earlier_audit_file(&store)? {
                reports.push((
                    format!("{} (this node's, before the shared chain)", path.display()),
                    r,
                ));
            }
            reports.push((store.audit_log().location(), ops::verify_audit(&store)?));
            let mut broken = false;
            for (location, r) in &reports {
                for p in &r.problems {
                    outln!("PROBLEM  {p}");
                }
                outln!(
                    "{location}: {} line(s), {}",
                    r.lines,
                    if r.problems.is_empty() {
                        "chain intact"
                    } else {
                        "chain BROKEN"
                    }
                );
                broken |= !r.problems.is_empty();
            }
            if broken {
                return Ok(ExitCode::FAILURE);
            }
        }
        StoreCommand::Keys {
            command: KeysCommand::RootNew { out },
        } => {
            let id = crate::crypto::keyfile::generate_key_file(&out)
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
            outln!("wrote {} (key id {id}, mode 0600)", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
