//! `sealpost keys`: generate key material.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

mod dkim;

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Root and availability keys of mailbox encryption policies.
    Root {
        #[command(subcommand)]
        command: RootCommand,
    },
    /// Print the Argon2id hash of a password for `[[user]] password_hash`.
    ///
    /// Reads the password from the first line of standard input (so it stays out of the shell
    /// history and the process list), e.g. `printf '%s' 'secret' | sealpost keys hash-password`.
    HashPassword,
    /// Generate a test PKI: a CA and an RSA-2048 server certificate per host.
    ///
    /// Writes ca.crt, ca.key and <host>.crt, <host>.key into DIR (keys with mode 0600).
    /// `sealpost keys pki --out fixtures/pki` regenerates the fixtures' PKI.
    Pki {
        /// Where to write the files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Host names to issue certificates for.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "mx.contoso.test,mx.fabrikam.test"
        )]
        hosts: Vec<String>,
    },
    /// Issue S/MIME certificates for mail addresses from an existing CA.
    ///
    /// Reads ca.crt and ca.key from --ca-dir and writes <address>.crt and <address>.key into
    /// --out for each address: RSA-2048 keys in PKCS#8 PEM (mode 0600); certificates with the
    /// address as SAN rfc822Name and subject emailAddress, keyUsage keyEncipherment and
    /// digitalSignature, extendedKeyUsage emailProtection, valid 2026-2036.
    /// `sealpost keys smime --ca-dir fixtures/pki --out fixtures/pki/smime` regenerates the
    /// fixtures' S/MIME certificates.
    Smime {
        /// Directory holding the CA's ca.crt and ca.key.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// Where to write the files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Mail addresses to issue certificates for.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "alice@contoso.test,carol@contoso.test,bob@fabrikam.test,dave@fabrikam.test"
        )]
        addresses: Vec<String>,
    },
    /// Tenant keys for RMS-style protected messages (new, list, activate).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// DKIM signing keys (`new` prints the DNS record to publish).
    #[command(subcommand)]
    Dkim(dkim::DkimCommand),
}

#[derive(Subcommand, Debug)]
enum TenantCommand {
    /// Generate a tenant key: RSA in PKCS#8 PEM, written as DIR/<key-id>.pem (mode 0600), or
    /// with --pkcs11 in a token, leaving DIR/<key-id>.pkcs11 (the URI and the public key).
    ///
    /// The key id is the hex SHA-256 of the public key's SubjectPublicKeyInfo DER. The first
    /// key of a directory becomes the active one; later ones wait for `activate`. A token key
    /// is generated on the token as sensitive and never extractable, with the module and PIN
    /// of the config's [pkcs11]: `sealpost keys tenant new --config contoso.toml --pkcs11
    /// 'pkcs11:token=sealpost;object=contoso-tenant'`.
    New {
        #[command(flatten)]
        place: TenantDir,
        /// Generate the key in this PKCS#11 token object (needs --config with [pkcs11]).
        #[arg(long, value_name = "URI", requires = "config")]
        pkcs11: Option<String>,
        /// RSA modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
    /// List the keys: id, bits, creation time, where each lives (file or token), which is active.
    List {
        #[command(flatten)]
        place: TenantDir,
        /// Print a JSON array (id, bits, created, active) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Make key ID (or a unique prefix of 8+ hex digits) the one that protects new messages.
    ///
    /// Messages protected with the other keys still open as long as their files stay.
    Activate {
        /// The key id.
        id: String,
        #[command(flatten)]
        place: TenantDir,
    },
}

/// Where the tenant keys are: a directory, or the `[rms] tenant_key_dir` of a config.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct TenantDir {
    /// The tenant key directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// A configuration file: its [rms] tenant_key_dir and [pkcs11].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl TenantDir {
    /// The directory, and the `[pkcs11]` settings when a config was given.
    fn resolve(&self) -> anyhow::Result<(PathBuf, Option<crate::keys::Pkcs11Config>)> {
        if let Some(dir) = &self.dir {
            return Ok((dir.clone(), None));
        }
        let Some(file) = &self.config else {
            anyhow::bail!("give --dir or --config");
        };
        let (dir, pkcs11) = crate::config::key_sections(file)?;
        let dir =
            dir.ok_or_else(|| anyhow::anyhow!("{}: rms: no [rms] tenant_key_dir", file.display()))?;
        Ok((dir, pkcs11))
    }
}

#[derive(Subcommand, Debug)]
enum RootCommand {
    /// Write a new random 256-bit key for `[[encryption_policy]] root_keys` or
    /// `availability_key` (mode 0600; keep it outside data_dir), or with --pkcs11 generate an
    /// AES-256 key in a token that never leaves it (module and PIN from --config's [pkcs11]):
    /// `sealpost keys root new --config contoso.toml --pkcs11
    /// 'pkcs11:token=sealpost;object=contoso-root-a'`.
    New {
        /// The key file to create.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "pkcs11",
            conflicts_with = "pkcs11"
        )]
        out: Option<PathBuf>,
        /// Generate the key in this PKCS#11 token object (needs --config with [pkcs11]).
        #[arg(long, value_name = "URI", requires = "config")]
        pkcs11: Option<String>,
        /// The configuration whose [pkcs11] section names the module and the PIN.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::Root {
            command:
                RootCommand::New {
                    out,
                    pkcs11,
                    config,
                },
        } => match (out, pkcs11, config) {
            (Some(out), None, _) => {
                let id = crate::crypto::keyfile::generate_key_file(&out)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
                outln!("wrote {} (key id {id}, mode 0600)", out.display());
                Ok(ExitCode::SUCCESS)
            }
            (None, Some(uri), Some(config)) => {
                let (_, pkcs11) = crate::config::key_sections(&config)?;
                let Some(pkcs11) = pkcs11 else {
                    anyhow::bail!(
                        "{}: pkcs11: --pkcs11 needs a [pkcs11] section (module, pin_file or pin_env)",
                        config.display()
                    );
                };
                let uri = crate::keys::Pkcs11Uri::parse(&uri)?;
                let key_ref = crate::keys::KekRef::Token { pkcs11, uri };
                let kek = crate::store::kek::Kek::generate(&key_ref)?;
                outln!(
                    "generated an AES-256 key in the token, sensitive and not extractable (key id {}); name it in root_keys or availability_key as \"{key_ref}\"",
                    kek.id()
                );
                Ok(ExitCode::SUCCESS)
            }
            _ => anyhow::bail!("give --out FILE, or --pkcs11 URI with --config FILE"),
        },
        KeysCommand::HashPassword => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            let hash = crate::auth::hash_password(password).map_err(anyhow::Error::msg)?;
            outln!("{hash}");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Pki { out, hosts } => {
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            crate::crypto::pki::generate(&out, &hosts)?;
            outln!(
                "wrote ca.crt, ca.key and certificates for {} into {}",
                hosts.join(", "),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Smime {
            ca_dir,
            out,
            addresses,
        } => {
            let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
            if let Some(bad) = addresses.iter().find(|a| !is_address(a)) {
                anyhow::bail!("not a mail address: {bad:?}");
            }
            crate::crypto::keys::generate_smime(
                &out,
                &ca_dir.join("ca.crt"),
                &ca_dir.join("ca.key"),
                &addresses,
            )?;
            outln!(
                "wrote S/MIME certificates and keys for {} into {}",
                addresses.join(", "),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Tenant(cmd) => run_tenant(cmd),
        KeysCommand::Dkim(cmd) => dkim::run(cmd),
    }
}

fn run_tenant(cmd: TenantCommand) -> anyhow::Result<ExitCode> {
    use crate::crypto::rms;
    match cmd {
        TenantCommand::New {
            place,
            pkcs11,
            bits,
        } => {
            let (dir, config) = place.resolve()?;
            let now = std::time::SystemTime::now();
            let (id, file) = match pkcs11 {
                Some(uri) => {
                    let Some(config) = config else {
                        let file = place.config.unwrap_or_default();
                        anyhow::bail!(
                            "{}: pkcs11: --pkcs11 needs a [pkcs11] section (module, pin_file or pin_env)",
                            file.display()
                        );
                    };
                    let uri = crate::keys::Pkcs11Uri::parse(&uri)?;
                    let id = rms::generate_tenant_key_in_token(&dir, &config, &uri, bits, now)?;
                    (id.clone(), format!("{id}.pkcs11"))
                }
                None => {
                    let id = rms::generate_tenant_key(&dir, bits, now)?;
                    (id.clone(), format!("{id}.pem"))
                }
            };
            let key = rms::list_tenant_keys(&dir)?
                .into_iter()
                .find(|k| k.id == id)
                .ok_or_else(|| anyhow::anyhow!("the new key {id} is not listed"))?;
            outln!(
                "wrote tenant key {id} ({bits} bits, {}) to {}{}",
                if key.location == "file" {
                    "file".to_string()
                } else {
                    format!("in {}", key.location)
                },
                dir.join(file).display(),
                if key.active { " (active)" } else { "" }
            );
            if key.location != "file" {
                let r = rms::read_reference(&dir.join(format!("{id}.pkcs11")))?;
                out!("{}", r.public.to_pem());
            }
        }
        TenantCommand::List { place, json } => {
            let (dir, _) = place.resolve()?;
            let keys = rms::list_tenant_keys(&dir)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(ExitCode::SUCCESS);
            }
            for k in keys {
                outln!(
                    "{}  {} bits  created {}  {}{}",
                    k.id,
                    k.bits,
                    k.created.as_deref().unwrap_or("unknown"),
                    k.location,
                    if k.active { "  active" } else { "" }
                );
            }
        }
        TenantCommand::Activate { id, place } => {
            let (dir, _) = place.resolve()?;
            let full = rms::activate_tenant_key(&dir, &id)?;
            outln!("tenant key {full} is now active in {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A plain `local@domain` with nothing that could escape the output directory.
fn is_address(a: &str) -> bool {
    match a.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !a.contains(['/', '\\', '\0'])
                && !a.starts_with('.')
                && !a.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_plain() {
        assert!(is_address("bob@fabrikam.test"));
        assert!(!is_address("bob"));
        assert!(!is_address("../x@y"));
        assert!(!is_address("a b@c"));
        assert!(!is_address("@c"));
    }
}
