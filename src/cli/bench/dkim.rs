//! `sealpost bench relay --dkim`: which DKIM key contoso signs the relayed mail with, set on the
//! loaded fixture configs before the servers start.

use clap::ValueEnum;

use crate::config::Config;
use crate::sender_auth::dkim_sign::generate_pem;
use crate::sender_auth::{DkimKey, KeyAlgorithm, Signer, Signers};

/// DKIM signing at contoso during the relay bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DkimMode {
    /// The fixture's RSA-2048 key (selector s2026), as in contoso.toml.
    Rsa,
    /// A fresh Ed25519 key; fabrikam is given its key record.
    Ed25519,
    /// No signing (fabrikam's DMARC check passes on SPF alone).
    Off,
}

impl DkimMode {
    pub fn describe(self) -> &'static str {
        match self {
            DkimMode::Rsa => "DKIM RSA-2048",
            DkimMode::Ed25519 => "DKIM Ed25519",
            DkimMode::Off => "no DKIM",
        }
    }
}

/// Applies `mode` to the loaded configs: contoso (index 0) signs, fabrikam (index 1) checks.
pub fn apply(mode: DkimMode, configs: &mut [Config]) -> anyhow::Result<()> {
    let [contoso, fabrikam] = configs else {
        anyhow::bail!("expected the two fixture configs");
    };
    match mode {
        DkimMode::Rsa => anyhow::ensure!(
            contoso.dkim.for_domain("contoso.test").is_some(),
            "the fixtures' contoso.toml has no [[dkim]] key for contoso.test"
        ),
        DkimMode::Off => contoso.dkim = Signers::default(),
        DkimMode::Ed25519 => {
            let key = DkimKey::from_pem(generate_pem(KeyAlgorithm::Ed25519)?.as_bytes())?;
            let record = key.dns_record();
            contoso.dkim = Signers::new(vec![Signer::new("contoso.test", "bench", key, &[])]);
            let txt = &mut fabrikam.sender_auth.settings.static_txt;
            *txt = txt
                .clone()
                .with_record("bench._domainkey.contoso.test", &record)
                .map_err(|e| anyhow::anyhow!("the Ed25519 key record: {e}"))?;
        }
    }
    Ok(())
}
