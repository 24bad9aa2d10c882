//! Key references: an RSA private key in a file or in a PKCS#11 token (RFC 7512 `pkcs11:` URI).
//! Callers ask a key to sign (RSA-PSS-SHA256) or to unwrap (RSA-OAEP-SHA256) and read its public
//! half; a token key's private half never leaves the token.

mod aes;
mod kek_ref;
mod oaep;
mod token;
mod uri;

use std::path::PathBuf;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256;
use aws_lc_rs::rsa::{KeyPair, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use cryptoki::object::ObjectHandle;
use zeroize::Zeroizing;

pub use kek_ref::KekRef;
pub use token::Token;
pub use uri::{is_pkcs11_uri, Pkcs11Uri};

/// Why a key could not be reached or used. Never carries a PIN.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("bad PKCS#11 URI: {0}")]
    Uri(String),
    #[error("PIN: {0}")]
    Pin(String),
    #[error("PKCS#11 module {module}: {problem}")]
    Module { module: String, problem: String },
    #[error("token {token:?}: {problem}")]
    Token { token: String, problem: String },
    #[error("{0}: no such RSA private key in the token")]
    NotFound(String),
    #[error("a pkcs11: key needs a [pkcs11] section (module, pin_file or pin_env)")]
    NoModule,
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Crypto(String),
}

/// Where the token PIN comes from. The PIN itself is never held in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// A file whose first line is the PIN (must not be readable by group or others).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl PinSource {
    /// Reads the PIN now.
    pub fn read(&self) -> Result<Zeroizing<String>, KeyError> {
        let pin =
            match self {
                PinSource::File(path) => {
                    use std::os::unix::fs::PermissionsExt;
                    let meta = std::fs::metadata(path)
                        .map_err(|e| KeyError::Pin(format!("{}: {e}", path.display())))?;
                    if meta.permissions().mode() & 0o077 != 0 {
                        return Err(KeyError::Pin(format!(
                            "{}: readable by group or others (mode {:o}); chmod 600 it",
                            path.display(),
                            meta.permissions().mode() & 0o777
                        )));
                    }
                    let text = Zeroizing::new(
                        std::fs::read_to_string(path)
                            .map_err(|e| KeyError::Pin(format!("{}: {e}", path.display())))?,
                    );
                    Zeroizing::new(text.lines().next().unwrap_or("").to_string())
                }
                PinSource::Env(name) => Zeroizing::new(std::env::var(name).map_err(|_| {
                    KeyError::Pin(format!("environment variable {name} is not set"))
                })?),
            };
        if pin.is_empty() {
            return Err(KeyError::Pin(format!("{self}: empty")));
        }
        Ok(pin)
    }
}

impl std::fmt::Display for PinSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinSource::File(p) => write!(f, "pin_file {}", p.display()),
            PinSource::Env(v) => write!(f, "pin_env {v}"),
        }
    }
}

/// `[pkcs11]`: the module to load and where its user PIN comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Config {
    pub module: PathBuf,
    pub pin: PinSource,
}

/// An RSA private key (2048 to 8192 bits) that signs and unwraps, wherever it lives.
pub enum RsaPrivateKey {
    File {
        signing: KeyPair,
        decrypting: PrivateDecryptingKey,
    },
    Token {
        token: Arc<Token>,
        handle: ObjectHandle,
        uri: Pkcs11Uri,
    },
}

impl std::fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location())
    }
}

impl RsaPrivateKey {
    /// A key read from a file (already checked for size by the caller).
    pub fn file(signing: KeyPair, decrypting: PrivateDecryptingKey) -> RsaPrivateKey {
        RsaPrivateKey::File {
            signing,
            decrypting,
        }
    }

    /// The key a `pkcs11:` URI names, in the token of `config`.
    pub fn open_token(config: &Pkcs11Config, uri: &Pkcs11Uri) -> Result<RsaPrivateKey, KeyError> {
        let token = Token::open(config, &uri.token)?;
        let handle = token.find_private_key(uri)?;
        Ok(RsaPrivateKey::Token {
            token,
            handle,
            uri: uri.clone(),
        })
    }

    /// Generates a key pair of `bits` in the token (sensitive, private, never extractable).
    pub fn generate_in_token(
        config: &Pkcs11Config,
        uri: &Pkcs11Uri,
        bits: usize,
    ) -> Result<RsaPrivateKey, KeyError> {
        let token = Token::open(config, &uri.token)?;
        let handle = token.generate_rsa(uri, bits)?;
        Ok(RsaPrivateKey::Token {
            token,
            handle,
            uri: uri.clone(),
        })
    }

    /// "file" or the key's `pkcs11:` URI.
    pub fn location(&self) -> String {
        match self {
            RsaPrivateKey::File { .. } => "file".into(),
            RsaPrivateKey::Token { uri, .. } => uri.to_string(),
        }
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn public_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        match self {
            RsaPrivateKey::File { decrypting, .. } => decrypting
                .public_key()
                .as_der()
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| KeyError::Crypto("cannot encode the public key".into())),
            RsaPrivateKey::Token { token, handle, .. } => {
                let (n, e) = token.rsa_public(*handle)?;
                rsa_spki_der(&n, &e)
            }
        }
    }

    /// RSASSA-PSS (SHA-256, MGF1-SHA-256, salt 32) of `data`.
    pub fn sign_pss_sha256(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            RsaPrivateKey::File { signing, .. } => {
                let mut signature = vec![0u8; signing.public_modulus_len()];
                signing
                    .sign(
                        &aws_lc_rs::signature::RSA_PSS_SHA256,
                        &aws_lc_rs::rand::SystemRandom::new(),
                        data,
                        &mut signature,
                    )
                    .map_err(|_| KeyError::Crypto("RSA-PSS signature".into()))?;
                Ok(signature)
            }
            RsaPrivateKey::Token { token, handle, .. } => token.sign_pss_sha256(*handle, data),
        }
    }

    /// RSAES-OAEP (SHA-256, MGF1-SHA-256, no label) decryption of `ciphertext`.
    pub fn decrypt_oaep_sha256(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match self {
            RsaPrivateKey::File { decrypting, .. } => {
                let oaep = OaepPrivateDecryptingKey::new(decrypting.clone())
                    .map_err(|_| KeyError::Crypto("RSA-OAEP key".into()))?;
                let mut out = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
                let n = oaep
                    .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
                    .map_err(|_| KeyError::Crypto("RSA-OAEP decryption".into()))?
                    .len();
                out.truncate(n);
                Ok(out)
            }
            RsaPrivateKey::Token { token, handle, .. } => {
                token.decrypt_oaep_sha256(*handle, ciphertext)
            }
        }
    }

    /// Whether a token key's RSA-OAEP padding is removed in sealpost (the token offers OAEP with
    /// SHA-1 only and decrypts with raw RSA).
    pub fn token_oaep_padding_in_host(&self) -> bool {
        match self {
            RsaPrivateKey::File { .. } => false,
            RsaPrivateKey::Token { token, .. } => token.oaep_padding_in_host(),
        }
    }

    /// For a token key, which secret attributes the token refuses to reveal (see
    /// [`Token::secret_attributes_refused`]); `None` for a file key.
    pub fn token_secret_attributes_refused(
        &self,
    ) -> Option<Result<Vec<(&'static str, bool)>, KeyError>> {
        match self {
            RsaPrivateKey::File { .. } => None,
            RsaPrivateKey::Token { token, handle, .. } => {
                Some(token.secret_attributes_refused(*handle))
            }
        }
    }
}

/// SubjectPublicKeyInfo DER of the RSA public key (n, e), unsigned big-endian.
pub fn rsa_spki_der(n: &[u8], e: &[u8]) -> Result<Vec<u8>, KeyError> {
    use der::Encode;
    let bad = |e: der::Error| KeyError::Crypto(format!("encoding the public key: {e}"));
    let pkcs1 = pkcs1::RsaPublicKey {
        modulus: der::asn1::UintRef::new(n).map_err(bad)?,
        public_exponent: der::asn1::UintRef::new(e).map_err(bad)?,
    }
    .to_der()
    .map_err(bad)?;
    let spki = spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: pkcs1::ALGORITHM_OID,
            parameters: Some(der::asn1::Null.into()),
        },
        subject_public_key: der::asn1::BitString::from_bytes(&pkcs1).map_err(bad)?,
    };
    spki.to_der().map_err(bad)
}
