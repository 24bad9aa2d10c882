//! `sealpost decrypt --identity CERT --key KEY`: a reader opens a protected message through the
//! licensing service its publishing license names, proving who it is with its S/MIME
//! certificate, or from the use-license cache without any network. `--user NAME --service URL`
//! does the same for one of the tenant's own users with a password, which goes only to the
//! service the reader names itself (never to one a message names).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use zeroize::Zeroizing;

use super::cache::{self, Entry};
use super::{fail, read_input, write_output, DecryptArgs};
use crate::auth::Credentials;
use crate::crypto::rms::{
    self, extract_container, format_expiry, license_sha256, parse_container, License, Rights,
    RmsError, TenantPublicKey, UseLicense,
};
use crate::crypto::smime::{decrypt_message, DecryptError, DecryptKey};
use crate::licensing::client::{self, ClientError, PasswordProof, ServiceUrl};

/// Exit code: the licensing service refused a use license (its reason is shown).
pub const EXIT_REFUSED: u8 = 14;
/// Exit code: the licensing service could not be reached (network, TLS verification, timeout,
/// or an answer that is neither a use license nor a refusal).
pub const EXIT_UNREACHABLE: u8 = 15;
/// Exit code: the message names no licensing service (only the tenant key opens it), or a
/// password is needed and none was given.
const EXIT_NO_SERVICE: u8 = 2;
/// Exit code: the message names another licensing service than `--service` (the password is
/// not sent).
pub const EXIT_OTHER_SERVICE: u8 = 16;

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

/// A reader: the S/MIME certificate and key that prove who it is (and open the content key),
/// the CAs the licensing service's certificate must chain to, and where use licenses are cached.
pub(crate) struct Reader {
    /// The reader's key (with its certificate, for a certificate reader).
    pub key: DecryptKey,
    proof: Proof,
    ca: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
}

/// How the reader proves who it is.
enum Proof {
    /// Its certificate and key as TLS client certificate.
    Certificate {
        identity: PathBuf,
        key_path: PathBuf,
    },
    /// A `[[user]]` name and password, sent only to `service`, with the key's public half.
    Password {
        user: String,
        password: Option<Zeroizing<String>>,
        service: ServiceUrl,
    },
}

/// A protected message opened by its reader.
pub(crate) struct Opened {
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The reader, as the use license names it.
    pub principal: String,
    /// What the use license grants.
    pub rights: Rights,
    pub valid_until: SystemTime,
    /// Where the use license came from.
    pub source: Source,
    /// Why a fresh use license could not be cached, if it could not.
    pub not_cached: Option<String>,
}

/// Where a use license came from.
pub(crate) enum Source {
    /// The cache file at this path; the URL of the service that issued it.
    Cache { path: PathBuf, issued_by: String },
    /// The licensing service at this URL (the one the publishing license names), just now.
    Service { url: String },
}

/// Why a reader could not open a protected message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The input is no protected message (an S/MIME one may still open with the reader's key).
    #[error("this is not an RMS-style protected message")]
    NotProtected,
    /// The message, or the use license applied to it, is unusable.
    #[error(transparent)]
    Rms(RmsError),
    /// The publishing license (version 1) names no licensing service.
    #[error(
        "this message names no licensing service (its publishing license is version 1): a \
         reader cannot open it with --identity; the administrators' path is --tenant-key"
    )]
    NoService,
    /// The identity certificate has no email address to be the principal.
    #[error("{0}: the identity certificate names no email address")]
    NoEmail(String),
    /// A password reader's message names another service than the one it trusts.
    #[error(
        "the message names the licensing service {named}, not {trusted} (--service): the \
         password goes only to the service you name, so it was not sent"
    )]
    OtherService { named: String, trusted: String },
    /// The service must be asked and no password was given.
    #[error(
        "no password: give it with --password-file FILE or in SEALPOST_PASSWORD (no cached \
         use license opens this message)"
    )]
    NoPassword,
    /// The licensing service refused, could not be reached, or could not be asked.
    #[error(transparent)]
    Client(ClientError),
    /// The service answered with a use license that does not verify.
    #[error("the use license from {url} does not verify: {error}")]
    Unverified { url: String, error: RmsError },
}

impl ReadError {
    /// The exit code of `sealpost decrypt` (see its --help).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            ReadError::NotProtected => 3,
            ReadError::Rms(e) | ReadError::Unverified { error: e, .. } => e.exit_code(),
            ReadError::NoService | ReadError::NoPassword => EXIT_NO_SERVICE,
            ReadError::NoEmail(_) => 9,
            ReadError::OtherService { .. } => EXIT_OTHER_SERVICE,
            ReadError::Client(e) => match e {
                ClientError::Refused { .. } => EXIT_REFUSED,
                ClientError::Unreachable { .. } | ClientError::BadAnswer { .. } => EXIT_UNREACHABLE,
                ClientError::Url { .. } => 7,
                ClientError::Setup(_) => 9,
            },
        }
    }
}

impl Reader {
    /// Loads the reader's key and certificate.
    pub(crate) fn load(
        identity: &Path,
        key_path: &Path,
        ca: Option<&Path>,
        cache_dir: Option<&Path>,
    ) -> Result<Reader, DecryptError> {
        Ok(Reader {
            key: DecryptKey::from_pem(key_path, Some(identity))?,
            proof: Proof::Certificate {
                identity: identity.to_path_buf(),
                key_path: key_path.to_path_buf(),
            },
            ca: ca.map(Path::to_path_buf),
            cache_dir: cache_dir.map(Path::to_path_buf),
        })
    }

    /// A reader proving itself as `user` with `password` (needed only when the service must be
    /// asked) to the licensing service at `service`, with its RSA key `key`.
    pub(crate) fn with_password(
        user: &str,
        password: Option<Zeroizing<String>>,
        service: ServiceUrl,
        key: DecryptKey,
        ca: Option<&Path>,
        cache_dir: Option<&Path>,
    ) -> Reader {
        Reader {
            key,
            proof: Proof::Password {
                user: user.trim().to_ascii_lowercase(),
                password,
                service,
            },
            ca: ca.map(Path::to_path_buf),
            cache_dir: cache_dir.map(Path::to_path_buf),
        }
    }

    /// Who the reader is: its certificate's email address, or its user name.
    fn principal(&self) -> Result<String, ReadError> {
        match &self.proof {
            Proof::Certificate { identity, .. } => self
                .key
                .certificate()
                .and_then(|c| c.emails().first())
                .map(|e| e.to_ascii_lowercase())
                .ok_or_else(|| ReadError::NoEmail(identity.display().to_string())),
            Proof::Password { user, .. } => Ok(user.clone()),
        }
    }

    /// Asks the service at `url` for a use license, proving who the reader is.
    async fn request(
        &self,
        url: &ServiceUrl,
        license: &[u8],
        signature: &[u8],
    ) -> Result<client::Answer, ReadError> {
        let setup = |e: String| ReadError::Client(ClientError::Setup(e));
        match &self.proof {
            Proof::Certificate { identity, key_path } => {
                let tls_key = crate::tls::load_certified_key(identity, key_path)
                    .map_err(|e| setup(e.to_string()))?;
                let tls = client::client_config(self.ca.as_deref(), &tls_key)
                    .map_err(ReadError::Client)?;
                client::request_use_license(url, tls, license, signature)
                    .await
                    .map_err(ReadError::Client)
            }
            Proof::Password { user, password, .. } => {
                let password = password.as_ref().ok_or(ReadError::NoPassword)?;
                let proof = PasswordProof {
                    credentials: Credentials {
                        username: user.clone(),
                        password: password.to_string(),
                    },
                    reader_key_pem: self.key.public_key_pem().map_err(setup)?,
                };
                let tls = client::password_client_config(self.ca.as_deref())
                    .map_err(ReadError::Client)?;
                client::request_use_license_as(url, tls, license, signature, Some(&proof))
                    .await
                    .map_err(ReadError::Client)
            }
        }
    }

    /// Opens the protected `message`: with a cached use license that verifies, else with one
    /// the licensing service its publishing license names grants (and caches it). Each cached
    /// use license that is ignored is passed to `note` with the reason.
    pub(crate) async fn open(
        &self,
        message: &[u8],
        note: &mut dyn FnMut(String),
    ) -> Result<Opened, ReadError> {
        let container = match extract_container(message) {
            Ok(c) => c,
            Err(RmsError::NotProtected) => return Err(ReadError::NotProtected),
            Err(e) => return Err(ReadError::Rms(e)),
        };
        let framed = parse_container(&container).map_err(ReadError::Rms)?;
        let license = License::decode(framed.license).map_err(ReadError::Rms)?;
        let url = license.licensing_url.clone().ok_or(ReadError::NoService)?;
        let service = ServiceUrl::parse(&url).map_err(ReadError::Client)?;
        if let Proof::Password {
            service: trusted, ..
        } = &self.proof
        {
            if !same_service(&service, trusted) {
                return Err(ReadError::OtherService {
                    named: url,
                    trusted: trusted.url.clone(),
                });
            }
        }
        let principal = self.principal()?;
        let hash = license_sha256(framed.license);
        let cache_path = self
            .cache_dir
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
        let opened = |v: &Verified, source: Source| {
            let (_, plain) = rms::unprotect_with_use_license(
                message,
                &v.use_license,
                &self.key,
                &v.tenant,
                SystemTime::now(),
            )?;
            Ok::<_, RmsError>(Opened {
                plaintext: Zeroizing::new(plain),
                principal: principal.clone(),
                rights: v.use_license.rights,
                valid_until: v.use_license.valid_until_at(),
                source,
                not_cached: None,
            })
        };

        // The cache first: a verifying, unexpired entry opens the message with no network.
        if let Some(path) = &cache_path {
            match cached(path, &check) {
                Ok(Some(v)) => {
                    let source = Source::Cache {
                        path: path.clone(),
                        issued_by: v.use_license.licensing_url.clone(),
                    };
                    match opened(&v, source) {
                        Ok(o) => return Ok(o),
                        Err(e) => note(format!(
                            "ignoring the cached use license {}: {e}",
                            path.display()
                        )),
                    }
                }
                Ok(None) => {}
                Err(reason) => note(format!(
                    "ignoring the cached use license {}: {reason}",
                    path.display()
                )),
            }
        }

        let answer = self
            .request(&service, framed.license, framed.signature)
            .await?;
        let v = check(&answer.use_license, &answer.tenant_key).map_err(|error| {
            ReadError::Unverified {
                url: url.clone(),
                error,
            }
        })?;
        let mut opened =
            opened(&v, Source::Service { url: url.clone() }).map_err(ReadError::Rms)?;
        if let Some(path) = &cache_path {
            let entry = Entry::new(
                &principal,
                &url,
                &format_expiry(opened.valid_until),
                &answer.use_license,
                &answer.tenant_key,
            );
            if let Err(e) = cache::store(path, &entry) {
                opened.not_cached = Some(format!("{e:#}"));
            }
        }
        Ok(opened)
    }
}

/// Runs the reader's path of `sealpost decrypt`.
pub(super) fn run(
    args: &DecryptArgs,
    identity: &Path,
    key_path: &Path,
) -> anyhow::Result<ExitCode> {
    let cache_dir = args.license_cache.clone().or_else(cache::default_dir);
    let reader = match Reader::load(identity, key_path, args.ca.as_deref(), cache_dir.as_deref()) {
        Ok(r) => r,
        Err(e) => return Ok(fail(&e)),
    };
    read(args, &reader)
}

/// Runs the password reader's path of `sealpost decrypt --user NAME --service URL`.
pub(super) fn run_password(
    args: &DecryptArgs,
    user: &str,
    service: &str,
) -> anyhow::Result<ExitCode> {
    let usage = |e: &dyn std::fmt::Display| {
        eprintln!("sealpost decrypt: {e}");
        Ok(ExitCode::from(EXIT_NO_SERVICE))
    };
    let service = match ServiceUrl::parse(service) {
        Ok(s) => s,
        Err(e) => return usage(&format!("--service: {e}")),
    };
    let cache_dir = args.license_cache.clone().or_else(cache::default_dir);
    let key_path =
        match (&args.key, &cache_dir) {
            (Some(key), _) => key.clone(),
            (None, Some(dir)) => {
                let path = super::reader_key::path(dir, user);
                if super::reader_key::load_or_create(&path)? {
                    eprintln!(
                        "made a reader key for {user} at {} (use licenses are wrapped to it)",
                        path.display()
                    );
                }
                path
            }
            (None, None) => return usage(
                &"no --key and no cache directory to keep one in: give --key or --license-cache",
            ),
        };
    let key = match DecryptKey::from_pem(&key_path, None) {
        Ok(k) => k,
        Err(e) => return Ok(fail(&e)),
    };
    let password = match super::user_password(args.password_file.as_deref()) {
        Ok(p) => p,
        Err(e) => return usage(&e),
    };
    let reader = Reader::with_password(
        user,
        password,
        service,
        key,
        args.ca.as_deref(),
        cache_dir.as_deref(),
    );
    read(args, &reader)
}

/// Opens the input as `reader` and writes it out, saying on stderr what the use license grants.
fn read(args: &DecryptArgs, reader: &Reader) -> anyhow::Result<ExitCode> {
    let input = read_input(args.input.as_deref())?;
    let mut note = |n: String| eprintln!("sealpost decrypt: {n}");
    let opened = super::super::runtime()?.block_on(reader.open(&input, &mut note));
    let opened = match opened {
        Ok(o) => o,
        // Not protected: an S/MIME message for this certificate opens as with --cert.
        Err(ReadError::NotProtected) => {
            return match decrypt_message(&input, &reader.key) {
                Ok(plain) => super::write_opened(args, Zeroizing::new(plain)),
                Err(e) => Ok(fail(&e)),
            };
        }
        Err(e) => return Ok(report(&e)),
    };
    let valid_until = format_expiry(opened.valid_until);
    match &opened.source {
        Source::Cache { path, issued_by } => eprintln!(
            "use license from the cache {} (issued by {issued_by}, valid until {valid_until})",
            path.display()
        ),
        Source::Service { url } => eprintln!("use license from {url} (valid until {valid_until})"),
    }
    eprintln!("{} holds: {}", opened.principal, opened.rights);
    if let Some(e) = &opened.not_cached {
        eprintln!("warning: the use license was not cached: {e}");
    }
    write_output(args.out.as_deref(), &opened.plaintext)?;
    Ok(ExitCode::SUCCESS)
}

/// Whether two licensing URLs name the same service (host, port and path; the host in any case).
fn same_service(a: &ServiceUrl, b: &ServiceUrl) -> bool {
    a.host.eq_ignore_ascii_case(&b.host)
        && a.port == b.port
        && a.prefix.trim_end_matches('/') == b.prefix.trim_end_matches('/')
}

fn report(e: &ReadError) -> ExitCode {
    match e {
        ReadError::Unverified { url, error } => {
            eprintln!("sealpost decrypt: the use license from {url} does not verify");
            eprintln!("sealpost decrypt: {error}");
        }
        e => eprintln!("sealpost decrypt: {e}"),
    }
    ExitCode::from(e.exit_code())
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
