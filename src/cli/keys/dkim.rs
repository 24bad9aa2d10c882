//! `sealpost keys dkim new`: a DKIM signing key and the DNS TXT record to publish for it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::sender_auth::dkim_sign::{generate_pem, DkimKey, KeyAlgorithm};

#[derive(Subcommand, Debug)]
pub(super) enum DkimCommand {
    /// Generate a DKIM private key (PKCS#8 PEM, mode 0600; an existing file is not overwritten)
    /// and print the TXT record to publish at <selector>._domainkey.<domain>.
    ///
    /// `sealpost keys dkim new --domain contoso.test --selector s2026 --out
    /// fixtures/keys/dkim/contoso.test.s2026.key`, then `[[dkim]] domain = "contoso.test",
    /// selector = "s2026", private_key = "keys/dkim/contoso.test.s2026.key"`.
    New {
        /// The signing domain (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=).
        #[arg(long)]
        selector: String,
        /// rsa (RSA-2048, rsa-sha256) or ed25519 (ed25519-sha256, RFC 8463).
        #[arg(long, value_enum, default_value_t = Algorithm::Rsa)]
        algorithm: Algorithm,
        /// The private key file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum Algorithm {
    Rsa,
    Ed25519,
}

pub(super) fn run(cmd: DkimCommand) -> anyhow::Result<ExitCode> {
    let DkimCommand::New {
        domain,
        selector,
        algorithm,
        out,
    } = cmd;
    let algorithm = match algorithm {
        Algorithm::Rsa => KeyAlgorithm::Rsa,
        Algorithm::Ed25519 => KeyAlgorithm::Ed25519,
    };
    let pem = generate_pem(algorithm)?;
    let key = DkimKey::from_pem(pem.as_bytes())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&out)
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    outln!("wrote {} ({}, mode 0600)", out.display(), algorithm.tag());
    outln!("publish this TXT record:");
    outln!("{}", zone_line(&domain, &selector, &key.dns_record()));
    Ok(ExitCode::SUCCESS)
}

/// The record as a zone-file line, split into strings of at most 255 bytes (RFC 1035 §3.3).
fn zone_line(domain: &str, selector: &str, record: &str) -> String {
    let name = format!(
        "{selector}._domainkey.{}.",
        domain.trim_end_matches('.').to_ascii_lowercase()
    );
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("{name} IN TXT ( {} )", strings.join(" "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_records_are_split_into_strings() {
        let record = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
        let line = super::zone_line("Contoso.test", "s2026", &record);
        assert!(
            line.starts_with("s2026._domainkey.contoso.test. IN TXT ( \""),
            "{line}"
        );
        assert_eq!(line.matches('"').count(), 4, "{line}");
    }
}
