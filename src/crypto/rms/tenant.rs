//! Tenant keys: RSA key pairs (2048 bits or more) in PKCS#8 PEM files named `<key-id>.pem`, an
//! `active` file naming the key that protects new messages; older keys still open messages.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PrivateDecryptingKey, PublicEncryptingKey};
use zeroize::Zeroizing;

use super::RmsError;
use crate::keys::{KeyError, RsaPrivateKey};

/// A key-layer failure as an RMS error: the key cannot be used.
pub(crate) fn key_error(e: KeyError) -> RmsError {
    RmsError::Key(e.to_string())
}

/// One tenant key: the RSA key pair for signing licenses and unwrapping content keys, in a file
/// or in a PKCS#11 token (then the private half never leaves the token).
pub struct TenantKey {
    id: [u8; 32],
    private: RsaPrivateKey,
    encrypting: PublicEncryptingKey,
    /// PKCS#1 RSAPublicKey DER, for verifying signatures.
    public_pkcs1: Vec<u8>,
    created: Option<String>,
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKey")
            .field("id", &self.id_hex())
            .field("bits", &self.bits())
            .field("location", &self.location())
            .finish()
    }
}

fn key_err(path: &Path, problem: impl std::fmt::Display) -> RmsError {
    RmsError::Key(format!("{}: {problem}", path.display()))
}

impl TenantKey {
    /// Builds a key from PKCS#8 DER (RSA, 2048 to 8192 bits).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<TenantKey, RmsError> {
        let bad = |e: &dyn std::fmt::Display| {
            let bits = crate::crypto::keys::rsa_pkcs8_bits(pkcs8);
            RmsError::Key(crate::crypto::keys::rsa_refusal(bits, e))
        };
        let signing = KeyPair::from_pkcs8(pkcs8).map_err(|e| bad(&e))?;
        let decrypting = PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(|e| bad(&e))?;
        if decrypting.key_size_bits() < 2048 {
            return Err(bad(&"key too small"));
        }
        TenantKey::from_private(RsaPrivateKey::file(signing, decrypting))
    }

    /// Builds a key around a private key wherever it lives (file or token); the id and the
    /// public half come from the key's public key, which must be RSA of 2048 to 8192 bits.
    pub fn from_private(private: RsaPrivateKey) -> Result<TenantKey, RmsError> {
        let spki = private.public_spki_der().map_err(key_error)?;
        let public = TenantPublicKey::from_spki_der(&spki)?;
        let encrypting = PublicEncryptingKey::from_der(&spki)
            .map_err(|_| RmsError::Key("cannot read the RSA public key".into()))?;
        Ok(TenantKey {
            id: public.id,
            private,
            encrypting,
            public_pkcs1: public.pkcs1,
            created: None,
        })
    }

    /// Reads a PEM (`PRIVATE KEY`) or DER PKCS#8 file. A `Created:` line before the PEM block
    /// gives the creation time shown by `keys tenant list`.
    pub fn from_file(path: &Path) -> Result<TenantKey, RmsError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| key_err(path, e))?);
        let (der, created) = if bytes.first() == Some(&0x30) {
            (Zeroizing::new(bytes.to_vec()), None)
        } else {
            parse_pem(&bytes).map_err(|p| key_err(path, p))?
        };
        let mut key = TenantKey::from_pkcs8(&der).map_err(|e| key_err(path, e))?;
        key.created = created;
        Ok(key)
    }

    /// The key id: SHA-256 of the public key's SubjectPublicKeyInfo DER.
    pub fn id(&self) -> &[u8; 32] {
        &self.id
    }

    /// The key id in lower-case hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    pub fn bits(&self) -> usize {
        self.encrypting.key_size_bits()
    }

    /// "file" or the `pkcs11:` URI of the token key.
    pub fn location(&self) -> String {
        self.private.location()
    }

    /// The private key (file or token): for checks that the token keeps it.
    pub fn private_key(&self) -> &RsaPrivateKey {
        &self.private
    }

    pub(super) fn set_created(&mut self, created: Option<String>) {
        self.created = created;
    }

    /// The creation time written in the key file, if any.
    pub fn created(&self) -> Option<&str> {
        self.created.as_deref()
    }

    pub(crate) fn encrypting(&self) -> &PublicEncryptingKey {
        &self.encrypting
    }

    pub(crate) fn public_pkcs1(&self) -> &[u8] {
        &self.public_pkcs1
    }

    /// The public half, for readers that verify licenses.
    pub fn public(&self) -> TenantPublicKey {
        TenantPublicKey {
            id: self.id,
            spki_der: self
                .encrypting
                .as_der()
                .map(|d| d.as_ref().to_vec())
                .unwrap_or_default(),
            pkcs1: self.public_pkcs1.clone(),
        }
    }

    /// Whether `signature` is this key's RSASSA-PSS-SHA256 signature of `bytes`.
    pub fn verifies(&self, bytes: &[u8], signature: &[u8]) -> bool {
        verify_pss(&self.public_pkcs1, bytes, signature)
    }

    /// Signs `bytes` with RSASSA-PSS (SHA-256, MGF1-SHA-256, salt 32): the license signature.
    pub(crate) fn sign_pss(&self, bytes: &[u8]) -> Result<Vec<u8>, RmsError> {
        self.private.sign_pss_sha256(bytes).map_err(key_error)
    }

    /// Unwraps an RSA-OAEP-SHA256 wrapped content key (inside the token for a token key).
    /// Any failure reads as "does not unwrap", except an unreachable token.
    pub(crate) fn unwrap_oaep(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, RmsError> {
        self.private
            .decrypt_oaep_sha256(wrapped)
            .map_err(|e| match e {
                KeyError::Crypto(_) => {
                    RmsError::Corrupted("the content key does not unwrap".into())
                }
                other => key_error(other),
            })
    }
}

/// Whether `signature` is a valid RSASSA-PSS-SHA256 signature of `bytes` by the RSA public key
/// `pkcs1` (an `RSAPublicKey` DER, 2048 to 8192 bits).
pub(crate) fn verify_pss(pkcs1: &[u8], bytes: &[u8], signature: &[u8]) -> bool {
    use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PSS_2048_8192_SHA256};
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, pkcs1)
        .verify(bytes, signature)
        .is_ok()
}

/// A tenant's public key: all a reader needs to verify publishing and use licenses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPublicKey {
    id: [u8; 32],
    spki_der: Vec<u8>,
    pkcs1: Vec<u8>,
}

impl TenantPublicKey {
    /// From a DER `SubjectPublicKeyInfo` holding an RSA key of 2048 to 8192 bits.
    pub fn from_spki_der(der: &[u8]) -> Result<TenantPublicKey, RmsError> {
        use der::Decode;
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| RmsError::Key(format!("bad public key: {e}")))?;
        if spki.algorithm.oid != pkcs1::ALGORITHM_OID {
            return Err(RmsError::Key(format!(
                "not an RSA public key (algorithm {})",
                spki.algorithm.oid
            )));
        }
        let pkcs1 = spki.subject_public_key.raw_bytes().to_vec();
        let key = PublicEncryptingKey::from_der(der).map_err(|_| {
            RmsError::Key("RSA public keys of 2048 to 8192 bits are accepted".into())
        })?;
        if key.key_size_bits() < 2048 {
            return Err(RmsError::Key("RSA public key below 2048 bits".into()));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
        Ok(TenantPublicKey {
            id,
            spki_der: der.to_vec(),
            pkcs1,
        })
    }

    /// From a PEM `PUBLIC KEY` block (as `openssl pkey -pubout` writes).
    pub fn from_pem(text: &str) -> Result<TenantPublicKey, RmsError> {
        let (label, der) = der::pem::decode_vec(text.trim().as_bytes())
            .map_err(|e| RmsError::Key(format!("bad PEM: {e}")))?;
        if label != "PUBLIC KEY" {
            return Err(RmsError::Key(format!("unexpected PEM label {label}")));
        }
        TenantPublicKey::from_spki_der(&der)
    }

    /// SHA-256 of the SubjectPublicKeyInfo DER: the tenant key id.
    pub fn id(&self) -> &[u8; 32] {
        &self.id
    }

    /// The modulus size.
    pub fn bits(&self) -> usize {
        PublicEncryptingKey::from_der(&self.spki_der).map_or(0, |k| k.key_size_bits())
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key as a PEM `PUBLIC KEY` block (what `openssl dgst -verify` reads).
    pub fn to_pem(&self) -> String {
        der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &self.spki_der)
            .unwrap_or_default()
    }

    /// Whether `signature` is this key's RSASSA-PSS-SHA256 signature of `bytes`.
    pub fn verifies(&self, bytes: &[u8], signature: &[u8]) -> bool {
        verify_pss(&self.pkcs1, bytes, signature)
    }
}

/// Extracts the `PRIVATE KEY` block and an optional `Created:` line before it.
fn parse_pem(bytes: &[u8]) -> Result<(Zeroizing<Vec<u8>>, Option<String>), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not a PEM file".to_string())?;
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err("the private key is encrypted: decrypt it first".into());
    }
    let start = text
        .find(BEGIN)
        .ok_or("no PEM \"PRIVATE KEY\" (PKCS#8) block found")?;
    let end = text[start..]
        .find(END)
        .map(|i| start + i + END.len())
        .ok_or("PEM block not terminated")?;
    let (label, der) =
        der::pem::decode_vec(&text.as_bytes()[start..end]).map_err(|e| format!("bad PEM: {e}"))?;
    if label != "PRIVATE KEY" {
        return Err(format!("unexpected PEM label {label}"));
    }
    let created = text[..start]
        .lines()
        .find_map(|l| l.trim().strip_prefix("Created:"))
        .map(|c| c.trim().to_string());
    Ok((Zeroizing::new(der), created))
}

/// The tenant keys known to a reader or writer, and which one protects new messages.
#[derive(Debug, Default)]
pub struct TenantKeys {
    keys: Vec<TenantKey>,
    active: Option<usize>,
}

/// The name of the file naming the active key.
pub const ACTIVE_FILE: &str = "active";

impl TenantKeys {
    /// One key, which is also the active one.
    pub fn single(key: TenantKey) -> TenantKeys {
        TenantKeys {
            keys: vec![key],
            active: Some(0),
        }
    }

    /// A directory (`load_dir`) or a single key file.
    pub fn load(path: &Path) -> Result<TenantKeys, RmsError> {
        if path.is_dir() {
            TenantKeys::load_dir(path)
        } else {
            Ok(TenantKeys::single(TenantKey::from_file(path)?))
        }
    }

    /// Every `*.pem` key in `dir`; the active one is named by the `active` file (or, without
    /// one, is the only key). A file whose name is not its key id is refused. A token key
    /// (`*.pkcs11`) is refused here: see [`TenantKeys::load_dir_with`].
    pub fn load_dir(dir: &Path) -> Result<TenantKeys, RmsError> {
        TenantKeys::load_dir_with(dir, None)
    }

    /// Like `load_dir`, with token keys (`<key-id>.pkcs11` reference files) opened in the
    /// PKCS#11 module of `pkcs11`.
    pub fn load_dir_with(
        dir: &Path,
        pkcs11: Option<&crate::keys::Pkcs11Config>,
    ) -> Result<TenantKeys, RmsError> {
        let mut keys = Vec::new();
        for path in pem_files(dir)? {
            let key = if is_reference(&path) {
                super::tenant_token::open_reference(&path, pkcs11)?
            } else {
                TenantKey::from_file(&path)?
            };
            let stem = path.file_stem().map(|s| s.to_string_lossy().to_lowercase());
            if stem.as_deref() != Some(key.id_hex().as_str()) {
                return Err(key_err(
                    &path,
                    format!("the file name is not the key id {}", key.id_hex()),
                ));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(key_err(
                dir,
                "no tenant keys (*.pem, *.pkcs11) in this directory",
            ));
        }
        let active = match read_active(dir)? {
            Some(id) => Some(keys.iter().position(|k| k.id_hex() == id).ok_or_else(|| {
                key_err(
                    &dir.join(ACTIVE_FILE),
                    format!("names {id}, which is not here"),
                )
            })?),
            None if keys.len() == 1 => Some(0),
            None => None,
        };
        Ok(TenantKeys { keys, active })
    }

    /// The key that protects new messages.
    pub fn active(&self) -> Option<&TenantKey> {
        self.active.and_then(|i| self.keys.get(i))
    }

    /// The key with this id.
    pub fn get(&self, id: &[u8; 32]) -> Option<&TenantKey> {
        self.keys.iter().find(|k| k.id() == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &TenantKey> {
        self.keys.iter()
    }

    /// The hex ids of all keys.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(TenantKey::id_hex).collect()
    }
}

fn is_reference(path: &Path) -> bool {
    path.extension()
        .is_some_and(|x| x == super::tenant_token::REFERENCE_EXT)
}

/// The key files of `dir`: private keys (`*.pem`) and token key references (`*.pkcs11`).
fn pem_files(dir: &Path) -> Result<Vec<PathBuf>, RmsError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| key_err(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| (p.extension().is_some_and(|x| x == "pem") || is_reference(p)) && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn read_active(dir: &Path) -> Result<Option<String>, RmsError> {
    let path = dir.join(ACTIVE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_lowercase())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(key_err(&path, e)),
    }
}

/// A line of `keys tenant list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantKeyInfo {
    pub id: String,
    pub bits: usize,
    pub created: Option<String>,
    pub active: bool,
    /// "file", or the `pkcs11:` URI of the token that holds the key.
    pub location: String,
}

/// Lists the keys in `dir`. Token keys are listed from their reference files (the token is not
/// opened).
pub fn list_tenant_keys(dir: &Path) -> Result<Vec<TenantKeyInfo>, RmsError> {
    let active = read_active(dir)?;
    let mut out = Vec::new();
    for path in pem_files(dir)? {
        let (id, bits, created, location) = if is_reference(&path) {
            let r = super::tenant_token::read_reference(&path)?;
            let bits = r.public.bits();
            (r.public.id_hex(), bits, r.created, r.uri.to_string())
        } else {
            let k = TenantKey::from_file(&path)?;
            let created = k.created().map(str::to_string);
            (k.id_hex(), k.bits(), created, k.location())
        };
        out.push(TenantKeyInfo {
            active: active.as_deref() == Some(id.as_str()),
            id,
            bits,
            created,
            location,
        });
    }
    if out.is_empty() {
        return Err(key_err(
            dir,
            "no tenant keys (*.pem, *.pkcs11) in this directory",
        ));
    }
    if active.is_none() && out.len() == 1 {
        out[0].active = true;
    }
    Ok(out)
}

/// Generates an RSA key of `bits` (2048, 3072 or 4096) into `dir/<key-id>.pem` (PKCS#8 PEM,
/// mode 0600) and returns its id. The first key of a directory becomes the active one.
pub fn generate_tenant_key(dir: &Path, bits: usize, now: SystemTime) -> Result<String, RmsError> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => {
            return Err(RmsError::Key(format!(
                "{other} bits: choose 2048, 3072 or 4096"
            )))
        }
    };
    let pair =
        KeyPair::generate(size).map_err(|_| RmsError::Crypto("RSA key generation".into()))?;
    let der = pair
        .as_der()
        .map_err(|_| RmsError::Crypto("encoding the key".into()))?;
    let key = TenantKey::from_pkcs8(der.as_ref())?;
    let pem = Zeroizing::new(
        der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, der.as_ref())
            .map_err(|e| RmsError::Crypto(format!("PEM: {e}")))?,
    );
    let text = Zeroizing::new(format!(
        "sealpost tenant key {}\nCreated: {}\nBits: {bits}\n{}",
        key.id_hex(),
        super::format_time(now),
        pem.as_str()
    ));
    std::fs::create_dir_all(dir).map_err(|e| key_err(dir, e))?;
    let path = dir.join(format!("{}.pem", key.id_hex()));
    crate::crypto::pki::write_file(&path, text.as_bytes(), 0o600).map_err(|e| key_err(&path, e))?;
    activate_if_first(dir, &key.id_hex())?;
    Ok(key.id_hex())
}

/// Makes `id` the active key when the directory has none yet.
pub(super) fn activate_if_first(dir: &Path, id: &str) -> Result<(), RmsError> {
    if read_active(dir)?.is_none() {
        activate_tenant_key(dir, id)?;
    }
    Ok(())
}

/// Makes the key `id` (hex, or a unique prefix of at least 8 digits) the active one.
/// Returns the full id.
pub fn activate_tenant_key(dir: &Path, id: &str) -> Result<String, RmsError> {
    let id = id.trim().to_lowercase();
    if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RmsError::Key(format!(
            "{id:?} is not a key id (64 hex digits, or a unique prefix of 8 or more)"
        )));
    }
    let matches: Vec<PathBuf> = pem_files(dir)?
        .into_iter()
        .filter(|p| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy().to_lowercase().starts_with(&id))
        })
        .collect();
    let path = match matches.as_slice() {
        [one] => one,
        [] => return Err(key_err(dir, format!("no tenant key {id}"))),
        _ => return Err(key_err(dir, format!("{id} names several keys"))),
    };
    let full = if is_reference(path) {
        super::tenant_token::read_reference(path)?.public.id_hex()
    } else {
        TenantKey::from_file(path)?.id_hex()
    };
    let tmp = dir.join(format!(".{ACTIVE_FILE}.{}.tmp", std::process::id()));
    let active = dir.join(ACTIVE_FILE);
    crate::crypto::pki::write_file(&tmp, format!("{full}\n").as_bytes(), 0o644)
        .and_then(|_| std::fs::rename(&tmp, &active))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            key_err(&active, e)
        })?;
    Ok(full)
}
