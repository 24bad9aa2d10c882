//! `sealpost bench keys`: RSA-OAEP unwraps and RSA-PSS signatures per second with the tenant key
//! in a file and in a PKCS#11 token, side by side. Without `--config`, a SoftHSM2 token is
//! initialised in a temporary directory for the run, and the store's root keys are measured in it
//! too (`keys_store`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};

use crate::crypto::rms::TenantKeys;
use crate::keys::{PinSource, Pkcs11Config, Pkcs11Uri, RsaPrivateKey};

pub struct Params {
    pub operations: usize,
    pub threads: Vec<usize>,
    /// `[pkcs11]` of this config and the key `uri`; `None`: a temporary SoftHSM2 token.
    pub token: Option<(PathBuf, String)>,
    pub module: PathBuf,
    /// Messages written and read per store in the root-key part.
    pub messages: usize,
}

pub fn run(fixtures: &Path, base: &Path, params: Params) -> anyhow::Result<ExitCode> {
    let file_keys = TenantKeys::load_dir(&fixtures.join("keys/tenant"))?;
    let file_key = file_keys
        .active()
        .context("no active tenant key in the fixtures")?;
    let mut temporary = None;
    let (token_key, label) = match &params.token {
        Some((config, uri)) => {
            let (_, pkcs11) = crate::config::key_sections(config)?;
            let pkcs11 =
                pkcs11.with_context(|| format!("{}: no [pkcs11] section", config.display()))?;
            let uri = Pkcs11Uri::parse(uri)?;
            (RsaPrivateKey::open_token(&pkcs11, &uri)?, uri.to_string())
        }
        None => {
            let pkcs11 = temporary_softhsm(base, &params.module)?;
            let uri = Pkcs11Uri::parse("pkcs11:token=sealpost-bench;object=bench-tenant")?;
            let key = RsaPrivateKey::generate_in_token(&pkcs11, &uri, 2048)?;
            temporary = Some(pkcs11);
            (key, format!("{uri} (SoftHSM2, temporary)"))
        }
    };
    outln!(
        "{:<6} {:>7} {:>18} {:>16}  key",
        "where",
        "threads",
        "RSA-OAEP unwrap/s",
        "RSA-PSS sign/s"
    );
    for threads in &params.threads {
        for (name, key, what) in [
            (
                "file",
                file_key.private_key(),
                "fixtures/keys/tenant (2048 bits)".to_string(),
            ),
            ("token", &token_key, label.clone()),
        ] {
            let (unwraps, signs) = measure(key, params.operations, *threads)?;
            outln!("{name:<6} {threads:>7} {unwraps:>18.0} {signs:>16.0}  {what}");
        }
    }
    if token_key.token_oaep_padding_in_host() {
        outln!(
            "note: this token offers RSA-OAEP with SHA-1 only; the token decrypts with raw RSA \
             and sealpost removes the OAEP-SHA256 padding (the key stays in the token)"
        );
    }
    match temporary {
        Some(pkcs11) => super::keys_store::run(
            base,
            &pkcs11,
            "sealpost-bench",
            params.operations,
            params.messages,
        )?,
        None => {
            outln!("(store root keys are measured only in a temporary token: run without --config)")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Operations per second for unwrapping and for signing, `operations` of each over `threads`.
fn measure(key: &RsaPrivateKey, operations: usize, threads: usize) -> anyhow::Result<(f64, f64)> {
    let spki = key.public_spki_der()?;
    let public = PublicEncryptingKey::from_der(&spki)
        .map_err(|_| anyhow::anyhow!("cannot read the public key"))?;
    let oaep =
        OaepPublicEncryptingKey::new(public).map_err(|_| anyhow::anyhow!("not an RSA-OAEP key"))?;
    let content_key = [0x5au8; 32];
    let mut wrapped = vec![0u8; oaep.ciphertext_size()];
    let n = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, &content_key, &mut wrapped, None)
        .map_err(|_| anyhow::anyhow!("RSA-OAEP wrap"))?
        .len();
    wrapped.truncate(n);
    let license = vec![0x42u8; 400];
    let signature = key.sign_pss_sha256(&license)?;
    anyhow::ensure!(
        crate::crypto::rms::TenantPublicKey::from_spki_der(&spki)?.verifies(&license, &signature),
        "the signature does not verify"
    );
    let unwrap_rate = timed(operations, threads, || {
        let out = key.decrypt_oaep_sha256(&wrapped)?;
        anyhow::ensure!(out.as_slice() == content_key, "unwrapped the wrong key");
        Ok(())
    })?;
    let sign_rate = timed(operations, threads, || {
        key.sign_pss_sha256(&license)?;
        Ok(())
    })?;
    Ok((unwrap_rate, sign_rate))
}

fn timed(
    operations: usize,
    threads: usize,
    op: impl Fn() -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    let threads = threads.max(1);
    let per_thread = operations.div_ceil(threads).max(1);
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| (0..per_thread).try_for_each(|_| op())))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread panicked")))
        })
    })?;
    Ok((per_thread * threads) as f64 / start.elapsed().as_secs_f64())
}

/// A SoftHSM2 token "sealpost-bench" (PIN in a 0600 file) in `base`, with `SOFTHSM2_CONF` set
/// for this process before the module is loaded.
fn temporary_softhsm(base: &Path, module: &Path) -> anyhow::Result<Pkcs11Config> {
    use std::os::unix::fs::PermissionsExt;
    anyhow::ensure!(
        module.is_file(),
        "{}: no PKCS#11 module (apt-get install softhsm2, or give --config and --pkcs11)",
        module.display()
    );
    let tokens = base.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = base.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pin = "1234";
    let out = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "sealpost-bench"])
        .args(["--pin", pin, "--so-pin", "5678"])
        .output()
        .context("softhsm2-util (apt-get install softhsm2)")?;
    anyhow::ensure!(
        out.status.success(),
        "softhsm2-util --init-token: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let pin_file = base.join("user.pin");
    std::fs::write(&pin_file, format!("{pin}\n"))?;
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600))?;
    Ok(Pkcs11Config {
        module: module.to_path_buf(),
        pin: PinSource::File(pin_file),
    })
}
