//! PKCS#11 tokens: each module is loaded and initialised once per process, each token is logged
//! in once (a session kept open holds the login), and operations borrow a session from a small
//! pool, so a busy server neither logs in nor opens a session per operation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::{KeyError, Pkcs11Config, Pkcs11Uri};

/// Sessions kept idle for reuse; more may be open at once under load.
const POOL_SIZE: usize = 8;

/// A logged-in token.
pub struct Token {
    label: String,
    ctx: Pkcs11,
    slot: Slot,
    /// Holds the user login for the life of the process (PKCS#11 logins are per application
    /// and end when the last session closes).
    _login: Mutex<Session>,
    pool: Mutex<Vec<Session>>,
    /// Set once the token refused RSA-OAEP with SHA-256 (it offers SHA-1 only).
    raw_oaep: AtomicBool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("label", &self.label).finish()
    }
}

type TokenMap = HashMap<(PathBuf, String), Arc<Token>>;

fn modules() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(Default::default)
}

fn tokens() -> &'static Mutex<TokenMap> {
    static TOKENS: OnceLock<Mutex<TokenMap>> = OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

/// The module at `path`, loaded and initialised on first use.
fn module(path: &PathBuf) -> Result<Pkcs11, KeyError> {
    let mut map = modules().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = map.get(path) {
        return Ok(ctx.clone());
    }
    let fail = |e: &dyn std::fmt::Display| KeyError::Module {
        module: path.display().to_string(),
        problem: e.to_string(),
    };
    let ctx = Pkcs11::new(path).map_err(|e| fail(&e))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(fail(&e)),
    }
    map.insert(path.clone(), ctx.clone());
    Ok(ctx)
}

impl Token {
    /// The token labelled `label` in the configured module, logged in with the configured PIN.
    /// The first call per token logs in; later calls share that login.
    pub fn open(config: &Pkcs11Config, label: &str) -> Result<Arc<Token>, KeyError> {
        let key = (config.module.clone(), label.to_string());
        let mut map = tokens().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = map.get(&key) {
            return Ok(token.clone());
        }
        let ctx = module(&config.module)?;
        let token_err = |problem: String| KeyError::Token {
            token: label.to_string(),
            problem,
        };
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| token_err(format!("listing slots: {e}")))?;
        let slot = slots
            .into_iter()
            .find(|s| ctx.get_token_info(*s).is_ok_and(|i| i.label() == label))
            .ok_or_else(|| {
                token_err(format!(
                    "no token with this label in {}",
                    config.module.display()
                ))
            })?;
        let pin = config.pin.read()?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| token_err(format!("opening a session: {e}")))?;
        let auth = AuthPin::from(pin.as_str());
        match session.login(UserType::User, Some(&auth)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(P11Error::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(token_err("the PIN was refused (CKR_PIN_INCORRECT)".into()))
            }
            Err(P11Error::Pkcs11(RvError::PinLocked, _)) => {
                return Err(token_err("the user PIN is locked (CKR_PIN_LOCKED)".into()))
            }
            Err(e) => return Err(token_err(format!("login failed: {e}"))),
        }
        let token = Arc::new(Token {
            label: label.to_string(),
            ctx,
            slot,
            _login: Mutex::new(session),
            pool: Mutex::new(Vec::new()),
            raw_oaep: AtomicBool::new(false),
        });
        map.insert(key, token.clone());
        Ok(token)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether this token's RSA-OAEP refused SHA-256, so the padding is removed in sealpost.
    pub fn oaep_padding_in_host(&self) -> bool {
        self.raw_oaep.load(Ordering::Relaxed)
    }

    /// Runs `f` with a pooled session (opening one if none is idle).
    pub(super) fn with_session<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Session) -> Result<T, P11Error>,
    ) -> Result<T, KeyError> {
        let idle = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let session = match idle {
            Some(s) => s,
            None => self
                .ctx
                .open_rw_session(self.slot)
                .map_err(|e| self.err(what, &e))?,
        };
        let result = f(&session);
        let broken = matches!(
            result,
            Err(P11Error::Pkcs11(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::DeviceError,
                _
            ))
        );
        if !broken {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL_SIZE {
                pool.push(session);
            }
        }
        result.map_err(|e| self.err(what, &e))
    }

    pub(super) fn err(&self, what: &str, e: &P11Error) -> KeyError {
        if let P11Error::Pkcs11(
            RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange,
            _,
        ) = e
        {
            return KeyError::Crypto(format!("{what}: the token refused the data"));
        }
        KeyError::Token {
            token: self.label.clone(),
            problem: format!("{what}: {e}"),
        }
    }

    /// The one RSA private key the URI names.
    pub fn find_private_key(&self, uri: &Pkcs11Uri) -> Result<ObjectHandle, KeyError> {
        let found = self.with_session("finding the key", |s| {
            s.find_objects(&private_template(uri))
        })?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(KeyError::NotFound(uri.to_string())),
            _ => Err(KeyError::Token {
                token: self.label.clone(),
                problem: format!("{uri} names {} keys; add id= to choose one", found.len()),
            }),
        }
    }

    /// The modulus and public exponent of an RSA key (public attributes of the private key).
    pub fn rsa_public(&self, key: ObjectHandle) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
        let attrs = self.with_session("reading the public key", |s| {
            s.get_attributes(
                key,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
        })?;
        let (mut n, mut e) = (None, None);
        for a in attrs {
            match a {
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                _ => {}
            }
        }
        match (n, e) {
            (Some(n), Some(e)) => Ok((n, e)),
            _ => Err(KeyError::Token {
                token: self.label.clone(),
                problem: "the key does not show its modulus and public exponent".into(),
            }),
        }
    }

    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt, inside the token.
    pub fn sign_pss_sha256(&self, key: ObjectHandle, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mechanism = Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32.into(),
        });
        self.with_session("RSA-PSS signature", |s| s.sign(&mechanism, key, data))
    }

    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (empty label) with the token's key. A token
    /// that refuses SHA-256 for its OAEP mechanism decrypts with raw RSA instead and the padding
    /// is removed here (`oaep::decode_sha256`); the key stays in the token either way.
    pub fn decrypt_oaep_sha256(
        &self,
        key: ObjectHandle,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        const WHAT: &str = "RSA-OAEP decryption";
        if !self.raw_oaep.load(Ordering::Relaxed) {
            let params = PkcsOaepParams::new(
                MechanismType::SHA256,
                PkcsMgfType::MGF1_SHA256,
                PkcsOaepSource::empty(),
            );
            let mechanism = Mechanism::RsaPkcsOaep(params);
            let mut refused = false;
            let result = self.with_session(WHAT, |s| {
                let r = s.decrypt(&mechanism, key, ciphertext);
                refused = matches!(
                    r,
                    Err(P11Error::Pkcs11(
                        RvError::ArgumentsBad
                            | RvError::MechanismParamInvalid
                            | RvError::MechanismInvalid,
                        Function::DecryptInit
                    ))
                );
                r
            });
            if !refused {
                return result.map(Zeroizing::new);
            }
            self.raw_oaep.store(true, Ordering::Relaxed);
            tracing::warn!(
                token = %self.label,
                "the token refuses RSA-OAEP with SHA-256: decrypting with raw RSA in the token \
                 and removing the OAEP padding in sealpost (the private key stays in the token)"
            );
        }
        let block = Zeroizing::new(
            self.with_session(WHAT, |s| s.decrypt(&Mechanism::RsaX509, key, ciphertext))?,
        );
        super::oaep::decode_sha256(&block, ciphertext.len())
            .ok_or_else(|| KeyError::Crypto(format!("{WHAT}: the data does not decrypt")))
    }

    /// Generates an RSA key pair of `bits` on the token, labelled and identified as `uri` says;
    /// the private half is sensitive, private and never extractable. Refuses a label or id that
    /// is already taken.
    pub fn generate_rsa(&self, uri: &Pkcs11Uri, bits: usize) -> Result<ObjectHandle, KeyError> {
        if !(2048..=8192).contains(&bits) {
            return Err(KeyError::Refused(format!(
                "{bits}-bit RSA key; 2048 to 8192 bits are accepted"
            )));
        }
        self.ensure_unused(uri)?;
        let mut naming = Vec::new();
        if let Some(label) = &uri.object {
            naming.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            naming.push(Attribute::Id(id.clone()));
        }
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Encrypt(true),
            Attribute::Verify(true),
            Attribute::ModulusBits((bits as u64).into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        ];
        public.extend(naming.iter().cloned());
        let mut private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(true),
            Attribute::Sign(true),
        ];
        private.extend(naming);
        let (_, key) = self.with_session("RSA key generation", |s| {
            s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        })?;
        Ok(key)
    }

    /// Refuses a label or id that already names an object of the token.
    pub(super) fn ensure_unused(&self, uri: &Pkcs11Uri) -> Result<(), KeyError> {
        let taken = self.with_session("looking for an existing key", |s| {
            s.find_objects(&object_template(uri))
        })?;
        if taken.is_empty() {
            return Ok(());
        }
        Err(KeyError::Token {
            token: self.label.clone(),
            problem: format!("{uri} already names an object; choose another object="),
        })
    }

    /// The private-key attributes a copy of the key would need, and whether the token refuses
    /// each: `(attribute, refused)`. Used to show that the key cannot be read out.
    pub fn secret_attributes_refused(
        &self,
        key: ObjectHandle,
    ) -> Result<Vec<(&'static str, bool)>, KeyError> {
        use cryptoki::object::AttributeInfo;
        let names = [
            ("CKA_PRIVATE_EXPONENT", AttributeType::PrivateExponent),
            ("CKA_PRIME_1", AttributeType::Prime1),
            ("CKA_PRIME_2", AttributeType::Prime2),
            ("CKA_VALUE", AttributeType::Value),
        ];
        let types: Vec<AttributeType> = names.iter().map(|(_, t)| *t).collect();
        let info = self.with_session("reading attribute information", |s| {
            s.get_attribute_info(key, &types)
        })?;
        Ok(names
            .iter()
            .zip(info)
            .map(|((name, _), i)| (*name, !matches!(i, AttributeInfo::Available(_))))
            .collect())
    }
}

pub(super) fn object_template(uri: &Pkcs11Uri) -> Vec<Attribute> {
    let mut t = Vec::new();
    if let Some(label) = &uri.object {
        t.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        t.push(Attribute::Id(id.clone()));
    }
    t
}

fn private_template(uri: &Pkcs11Uri) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
    ];
    t.extend(object_template(uri));
    t
}
