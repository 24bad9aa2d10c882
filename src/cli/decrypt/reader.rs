//! `sealpost decrypt --identity CERT --key KEY`: a reader opens a protected message through the
//! licensing service its publishing license names, proving who it is with its S/MIME
//! certificate, or from the use-license cache without any network.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::cache::{self, Entry};
use super::{fail, fail_rms, read_input, write_output, DecryptArgs};
use crate::crypto::rms::{
    self, extract_container, format_expiry, license_sha256, parse_container, License, RmsError,
    TenantPublicKey, UseLicense,
};
use crate::crypto::smime::{decrypt_message, DecryptKey};
use crate::licensing::client::{self, ClientError, ServiceUrl};

/// Exit code: the licensing service refused a use license (its reason is shown).
pub const EXIT_REFUSED: u8 = 14;
/// Exit code: the licensing service could not be reached (network, TLS verification, timeout,
/// or an answer that is neither a use license nor a refusal).
pub const EXIT_UNREACHABLE: u8 = 15;
/// Exit code: the message names no licensing service (only the tenant key opens it).
const EXIT_NO_SERVICE: u8 = 2;

/// Verifies a use license's bytes with the tenant key PEM served alongside it.
type Check<'a> = dyn Fn(&[u8], &str) -> Result<Verified, RmsError> + 'a;

/// A verified use license and the tenant key that signed it.
struct Verified {
    use_license: UseLicense,
    tenant: TenantPublicKey,
}

/// Checks a use license before it is used: it decodes, the tenant key has the id the message's
/// container names and signed it, it is for this publishing license and this reader, and it is
/// still valid.
fn verify(
    bytes: &[u8],
    tenant_pem: &str,
    key_id: &[u8; 32],
    license_hash: &[u8; 32],
    principal: &str,
    now: SystemTime,
) -> Result<Verified, RmsError> {
    let use_license = UseLicense::decode(bytes)?;
    let tenant = TenantPublicKey::from_pem(tenant_pem)?;
    if tenant.id() != key_id {
        return Err(RmsError::WrongTenantKey {
            protected_with: hex::encode(key_id),
            given: vec![tenant.id_hex()],
        });
    }
    use_license.verify(&tenant)?;
    if &use_license.license_sha256 != license_hash {
        return Err(RmsError::Key(
            "the use license is for another message".into(),
        ));
    }
    if !use_license.principal.eq_ignore_ascii_case(principal) {
        return Err(RmsError::ReaderKey(format!(
            "the use license is for {}, not {principal}",
            use_license.principal
        )));
    }
    if now >= use_license.valid_until_at() {
        return Err(RmsError::Expired {
            at: use_license.valid_until_at(),
        });
    }
    Ok(Verified {
        use_license,
        tenant,
    })
}

fn fail_client(e: &ClientError) -> ExitCode {
    eprintln!("sealpost decrypt: {e}");
    ExitCode::from(match e {
        ClientError::Refused { .. } => EXIT_REFUSED,
        ClientError::Unreachable { .. } | ClientError::BadAnswer { .. } => EXIT_UNREACHABLE,
        ClientError::Url { .. } => 7,
        ClientError::Setup(_) => 9,
    })
}

/// Runs the reader's path.
pub(super) fn run(
    args: &DecryptArgs,
    identity: &Path,
    key_path: &Path,
) -> anyhow::Result<ExitCode> {
    let key = match DecryptKey::from_pem(key_path, Some(identity)) {
        Ok(k) => k,
        Err(e) => return Ok(fail(&e)),
    };
    let input = read_input(args.input.as_deref())?;
    let container = match extract_container(&input) {
        Ok(c) => c,
        // Not protected: an S/MIME message for this certificate opens as with --cert.
        Err(RmsError::NotProtected) => {
            return match decrypt_message(&input, &key) {
                Ok(plain) => {
                    write_output(args.out.as_deref(), &Zeroizing::new(plain))?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Ok(fail(&e)),
            }
        }
        Err(e) => return Ok(fail_rms(&e)),
    };
    let framed = match parse_container(&container) {
        Ok(f) => f,
        Err(e) => return Ok(fail_rms(&e)),
    };
    let license = match License::decode(framed.license) {
        Ok(l) => l,
        Err(e) => return Ok(fail_rms(&e)),
    };
    let Some(url) = license.licensing_url.clone() else {
        eprintln!(
            "sealpost decrypt: this message names no licensing service (its publishing license \
             is version 1): a reader cannot open it with --identity; the administrators' path is \
             --tenant-key"
        );
        return Ok(ExitCode::from(EXIT_NO_SERVICE));
    };
    let Some(principal) = key
        .certificate()
        .and_then(|c| c.emails().first())
        .map(|e| e.to_ascii_lowercase())
    else {
        eprintln!(
            "sealpost decrypt: {}: the identity certificate names no email address",
            identity.display()
        );
        return Ok(ExitCode::from(9));
    };
    let hash = license_sha256(framed.license);
    let cache_dir = args.license_cache.clone().or_else(cache::default_dir);
    let cache_path = cache_dir
        .as_deref()
        .map(|d| cache::entry_path(d, &hash, &principal));
    let check = |bytes: &[u8], pem: &str| {
        verify(
            bytes,
            pem,
            &framed.key_id,
            &hash,
            &principal,
            SystemTime::now(),
        )
    };

    // The cache first: a verifying, unexpired entry opens the message with no network at all.
    if let Some(path) = &cache_path {
        match cached(path, &check) {
            Ok(Some(v)) => {
                match rms::unprotect_with_use_license(
                    &input,
                    &v.use_license,
                    &key,
                    &v.tenant,
                    SystemTime::now(),
                ) {
                    Ok((_, plain)) => {
                        let plain = Zeroizing::new(plain);
                        eprintln!(
                            "use license from the cache {} (issued by {}, valid until {})",
                            path.display(),
                            v.use_license.licensing_url,
                            format_expiry(v.use_license.valid_until_at())
                        );
                        eprintln!("{principal} holds: {}", v.use_license.rights);
                        write_output(args.out.as_deref(), &plain)?;
                        return Ok(ExitCode::SUCCESS);
                    }
                    Err(e) => eprintln!(
                        "sealpost decrypt: ignoring the cached use license {}: {e}",
                        path.display()
                    ),
                }
            }
            Ok(None) => {}
            Err(reason) => eprintln!(
                "sealpost decrypt: ignoring the cached use license {}: {reason}",
                path.display()
            ),
        }
    }

    let service = match ServiceUrl::parse(&url) {
        Ok(s) => s,
        Err(e) => return Ok(fail_client(&e)),
    };
    let tls_key = match crate::tls::load_certified_key(identity, key_path) {
        Ok(k) => k,
        Err(e) => return Ok(fail_client(&ClientError::Setup(e.to_string()))),
    };
    let tls = match client::client_config(args.ca.as_deref(), &tls_key) {
        Ok(t) => t,
        Err(e) => return Ok(fail_client(&e)),
    };
    let answer = super::super::runtime()?.block_on(client::request_use_license(
        &service,
        tls,
        framed.license,
        framed.signature,
    ));
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return Ok(fail_client(&e)),
    };
    let v = match check(&answer.use_license, &answer.tenant_key) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sealpost decrypt: the use license from {url} does not verify");
            return Ok(fail_rms(&e));
        }
    };
    let plain = match rms::unprotect_with_use_license(
        &input,
        &v.use_license,
        &key,
        &v.tenant,
        SystemTime::now(),
    ) {
        Ok((_, plain)) => Zeroizing::new(plain),
        Err(e) => return Ok(fail_rms(&e)),
    };
    let valid_until = format_expiry(v.use_license.valid_until_at());
    eprintln!("use license from {url} (valid until {valid_until})");
    eprintln!("{principal} holds: {}", v.use_license.rights);
    if let Some(path) = &cache_path {
        let entry = Entry::new(
            &principal,
            &url,
            &valid_until,
            &answer.use_license,
            &answer.tenant_key,
        );
        if let Err(e) = cache::store(path, &entry) {
            eprintln!("warning: the use license was not cached: {e:#}");
        }
    }
    write_output(args.out.as_deref(), &plain)?;
    Ok(ExitCode::SUCCESS)
}

/// The cached entry at `path`, verified: `Ok(None)` when there is none, `Err` (why it is
/// ignored) when it is unusable, expired or does not verify.
fn cached(path: &Path, check: &Check<'_>) -> Result<Option<Verified>, String> {
    let Some(entry) = cache::load(path)? else {
        return Ok(None);
    };
    let bytes = entry
        .use_license_bytes()
        .ok_or_else(|| "the use license is not base64".to_string())?;
    match check(&bytes, &entry.tenant_key) {
        Ok(v) => Ok(Some(v)),
        Err(RmsError::Expired { at }) => Err(format!("it expired on {}", format_expiry(at))),
        Err(e) => Err(e.to_string()),
    }
}
