//! Tenant keys kept in a PKCS#11 token. The tenant key directory holds, for such a key, a
//! reference file `<key-id>.pkcs11` instead of a private key: the token URI and the public key,
//! so the key can be listed without the token and checked when the token is opened.
//!
//! ```text
//! sealpost tenant key <key-id>
//! Created: 2026-12-06T13:50:00Z
//! Bits: 2048
//! Token: pkcs11:token=sealpost;object=contoso-tenant
//! -----BEGIN PUBLIC KEY-----
//! ...
//! -----END PUBLIC KEY-----
//! ```

use std::path::Path;
use std::time::SystemTime;

use super::tenant::{key_error, TenantKey, TenantPublicKey};
use super::RmsError;
use crate::keys::{Pkcs11Config, Pkcs11Uri, RsaPrivateKey};

/// The extension of a token key reference file.
pub const REFERENCE_EXT: &str = "pkcs11";

/// A parsed reference file.
#[derive(Debug, Clone)]
pub struct TokenReference {
    pub uri: Pkcs11Uri,
    pub public: TenantPublicKey,
    pub created: Option<String>,
}

fn ref_err(path: &Path, problem: impl std::fmt::Display) -> RmsError {
    RmsError::Key(format!("{}: {problem}", path.display()))
}

/// Reads a reference file (no token needed).
pub fn read_reference(path: &Path) -> Result<TokenReference, RmsError> {
    let text = std::fs::read_to_string(path).map_err(|e| ref_err(path, e))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let uri = field("Token:").ok_or_else(|| ref_err(path, "no \"Token: pkcs11:...\" line"))?;
    let uri = Pkcs11Uri::parse(&uri).map_err(|e| ref_err(path, e))?;
    let start = text
        .find("-----BEGIN PUBLIC KEY-----")
        .ok_or_else(|| ref_err(path, "no PEM \"PUBLIC KEY\" block"))?;
    let public = TenantPublicKey::from_pem(&text[start..]).map_err(|e| ref_err(path, e))?;
    Ok(TokenReference {
        uri,
        public,
        created: field("Created:"),
    })
}

/// Opens the token key a reference file names and checks it is the key the file describes.
pub fn open_reference(path: &Path, pkcs11: Option<&Pkcs11Config>) -> Result<TenantKey, RmsError> {
    let reference = read_reference(path)?;
    let Some(config) = pkcs11 else {
        return Err(ref_err(path, crate::keys::KeyError::NoModule));
    };
    let private = RsaPrivateKey::open_token(config, &reference.uri)
        .map_err(|e| ref_err(path, key_error(e)))?;
    let mut key = TenantKey::from_private(private).map_err(|e| ref_err(path, e))?;
    if key.id() != reference.public.id() {
        return Err(ref_err(
            path,
            format!(
                "the token key {} has id {}, not the id {} this file records",
                reference.uri,
                key.id_hex(),
                reference.public.id_hex()
            ),
        ));
    }
    key.set_created(reference.created);
    Ok(key)
}

/// Generates an RSA key pair of `bits` (2048, 3072 or 4096) in the token `uri` names (sensitive,
/// never extractable), writes `dir/<key-id>.pkcs11` and returns the key id. The first key of a
/// directory becomes the active one.
pub fn generate_tenant_key_in_token(
    dir: &Path,
    config: &Pkcs11Config,
    uri: &Pkcs11Uri,
    bits: usize,
    now: SystemTime,
) -> Result<String, RmsError> {
    if ![2048, 3072, 4096].contains(&bits) {
        return Err(RmsError::Key(format!(
            "{bits} bits: choose 2048, 3072 or 4096"
        )));
    }
    let private = RsaPrivateKey::generate_in_token(config, uri, bits).map_err(key_error)?;
    let key = TenantKey::from_private(private)?;
    let text = format!(
        "sealpost tenant key {}\nCreated: {}\nBits: {bits}\nToken: {uri}\n{}",
        key.id_hex(),
        super::format_time(now),
        key.public().to_pem()
    );
    std::fs::create_dir_all(dir).map_err(|e| ref_err(dir, e))?;
    let path = dir.join(format!("{}.{REFERENCE_EXT}", key.id_hex()));
    crate::crypto::pki::write_file(&path, text.as_bytes(), 0o644).map_err(|e| ref_err(&path, e))?;
    super::tenant::activate_if_first(dir, &key.id_hex())?;
    Ok(key.id_hex())
}
