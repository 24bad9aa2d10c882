//! The licensing service's endpoint, `POST /v1/use-license`: the reader proves who it is, sends
//! the publishing license and its signature from the protected message, and gets a use license
//! holding the content key wrapped to the reader's key, or a refusal with a machine code and a
//! reason. A reader proves itself in one of two ways, never both:
//! - its certificate as TLS client certificate (see [`super::identity`]); the content key is
//!   wrapped to that certificate's key;
//! - for the tenant's own users, `Authorization: Basic` with a `[[user]]` name and password
//!   (argon2, as for SMTP submission; the service speaks only TLS), the name being an address
//!   in one of this server's domains; the request then carries the reader's own RSA public key
//!   (`reader_key`, PEM `PUBLIC KEY`), and the content key is wrapped to it.
//!
//! Request: `{"license": base64, "signature": base64, "reader_key"?: PEM}`. Answer 200:
//! `{"use_license": base64, "tenant_key": PEM, "principal", "rights": [...], "valid_until"}`
//! (`tenant_key` is the public key the use license is signed with); otherwise
//! `{"error": code, "reason": text}` with 400 (bad input), 401 (no proven reader), 403
//! (revoked, expired, no rights), 404 (unknown tenant key or path), 405, 500.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use hyper::{Method, StatusCode};
use rustls_pki_types::UnixTime;
use serde::Deserialize;

use super::access::{message_hash, Access, AccessLog};
use super::decision::{decide, Policy, ReaderKeySource, Refusal, Request};
use super::http::{Handler, ServiceRequest, ServiceResponse};
use super::identity::ReaderTrust;
use super::revocations::RevocationStore;
use crate::auth::Users;
use crate::crypto::rms::{format_expiry, License, TenantKeys};
use crate::mail::DomainSet;

/// The path of the one endpoint.
pub const USE_LICENSE_PATH: &str = "/v1/use-license";

/// What the service decides with.
pub struct LicensingService {
    pub trust: ReaderTrust,
    pub tenant_keys: TenantKeys,
    /// This service's URL, written into every use license.
    pub url: String,
    /// How long a use license is valid (never past the message's expiry).
    pub validity: Duration,
    /// Looked at for every request, so a revocation takes effect for the next one.
    pub revocations: Arc<RevocationStore>,
    /// Where every request that reaches a decision is recorded.
    pub access: Arc<dyn AccessLog>,
    /// The tenant's own users, who may prove themselves with a password; `None`: certificates
    /// only.
    pub passwords: Option<PasswordReaders>,
}

/// Readers who prove themselves with a `[[user]]` name and password.
#[derive(Clone, Debug)]
pub struct PasswordReaders {
    pub users: Users,
    /// A user is a reader only if its name is an address in one of these (the tenant's own).
    pub domains: DomainSet,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    license: String,
    signature: String,
    reader_key: Option<String>,
}

/// A request body, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UseLicenseRequest {
    /// The publishing license bytes, as signed.
    pub license: Vec<u8>,
    pub signature: Vec<u8>,
    /// A password reader's RSA public key (PEM `PUBLIC KEY`).
    pub reader_key: Option<String>,
}

/// How the reader proved who it is.
enum Proof {
    Certificate(String),
    Password(String),
}

/// A refusal before any decision: status, code, the principal to log, and the reason.
type Unproven = (StatusCode, &'static str, String, String);

fn status_of(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::BadLicense(_) | Refusal::BadCertificate(_) => StatusCode::BAD_REQUEST,
        Refusal::UnknownKey { .. } => StatusCode::NOT_FOUND,
        Refusal::Revoked { .. } | Refusal::Expired { .. } | Refusal::NoRights { .. } => {
            StatusCode::FORBIDDEN
        }
        Refusal::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Reads a request body: the publishing license and its signature, decoded, and a password
/// reader's public key. Bounded by the transport's request size; any other shape is a reason
/// for 400.
pub fn parse_request(body: &[u8]) -> Result<UseLicenseRequest, String> {
    let body: RawRequest = serde_json::from_slice(body)
        .map_err(|e| format!("expected {{\"license\", \"signature\"[, \"reader_key\"]}}: {e}"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    match (b64.decode(&body.license), b64.decode(&body.signature)) {
        (Ok(license), Ok(signature)) => Ok(UseLicenseRequest {
            license,
            signature,
            reader_key: body.reader_key,
        }),
        _ => Err("license and signature must be base64".into()),
    }
}

impl LicensingService {
    /// Decides, records the access, and answers. A request whose access cannot be recorded is
    /// refused: nothing is handed out that the log does not show.
    fn use_license(&self, r: &ServiceRequest, now: SystemTime) -> ServiceResponse {
        let (answer, access) = self.decide_request(r, now);
        tracing::info!(client = %r.peer, principal = %access.principal, message = %access.message,
            outcome = %access.outcome, code = %access.code, detail = %access.detail, "licensing request");
        match self.access.record(&access) {
            Ok(()) => answer,
            Err(e) => {
                tracing::error!(error = %e, "access log unwritable: request refused");
                ServiceResponse::refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the access could not be logged, so it is refused",
                )
            }
        }
    }

    /// Who the reader is: its certificate, or a `[[user]]` name and password; never both.
    fn prove(&self, r: &ServiceRequest) -> Result<Proof, Unproven> {
        let unauthenticated = |principal: String, reason: String| {
            (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                principal,
                reason,
            )
        };
        let Some(credentials) = &r.credentials else {
            return self
                .trust
                .principal(&r.client_chain, UnixTime::now())
                .map(Proof::Certificate)
                .map_err(|e| unauthenticated(String::new(), e.to_string()));
        };
        if !r.client_chain.is_empty() {
            return Err((
                StatusCode::BAD_REQUEST,
                "bad-request",
                String::new(),
                "prove who you are with a certificate or a password, not both".into(),
            ));
        }
        let claimed = credentials.username.trim().to_ascii_lowercase();
        let Some(passwords) = &self.passwords else {
            return Err(unauthenticated(
                claimed,
                "this service does not take passwords: present your certificate".into(),
            ));
        };
        let name = passwords
            .users
            .verify(credentials)
            .map_err(|_| unauthenticated(claimed, "wrong user name or password".into()))?;
        if !passwords.domains.contains_address(&name) {
            return Err(unauthenticated(
                name.clone(),
                format!("{name} is not an address of this tenant, so it cannot be a reader"),
            ));
        }
        Ok(Proof::Password(name))
    }

    fn decide_request(&self, r: &ServiceRequest, now: SystemTime) -> (ServiceResponse, Access) {
        let parsed = parse_request(&r.body);
        // The Message-ID the license names (unverified yet), hashed, to say which message.
        let message = parsed
            .as_ref()
            .ok()
            .and_then(|body| License::decode(&body.license).ok())
            .and_then(|l| l.message_id)
            .map(|id| message_hash(&id))
            .unwrap_or_default();
        let refused = |status, code: &str, principal: &str, reason: String| {
            let access = Access::refused(code, principal, &message, r.peer, &reason);
            (ServiceResponse::refused(status, code, reason), access)
        };
        let proof = match self.prove(r) {
            Ok(proof) => proof,
            Err((status, code, principal, reason)) => {
                return refused(status, code, &principal, reason)
            }
        };
        let (principal, by_password) = match &proof {
            Proof::Certificate(p) => (p.as_str(), false),
            Proof::Password(p) => (p.as_str(), true),
        };
        let body = match parsed {
            Ok(body) => body,
            Err(reason) => {
                return refused(StatusCode::BAD_REQUEST, "bad-request", principal, reason)
            }
        };
        let reader = match (&proof, &body.reader_key) {
            (Proof::Certificate(_), None) => {
                ReaderKeySource::Certificate(r.client_chain[0].as_ref())
            }
            (Proof::Password(_), Some(key)) => ReaderKeySource::PublicKey(key.as_bytes()),
            (Proof::Certificate(_), Some(_)) => {
                let reason = "reader_key is only for password readers: the content key goes to \
                              the certificate's key";
                return refused(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    principal,
                    reason.into(),
                );
            }
            (Proof::Password(_), None) => {
                let reason = "a reader proven by password sends its RSA public key as reader_key";
                return refused(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    principal,
                    reason.into(),
                );
            }
        };
        let request = Request {
            license: &body.license,
            signature: &body.signature,
            principal,
            reader,
        };
        let policy = Policy {
            tenant_keys: &self.tenant_keys,
            licensing_url: &self.url,
            validity: self.validity,
        };
        let revocations = self.revocations.current();
        match decide(&request, &policy, &*revocations, now) {
            Ok(granted) => {
                // The signer's public key, for the reader to verify the use license with (its
                // SHA-256 is the key id the protected message names).
                let tenant_key = self
                    .tenant_keys
                    .get(&granted.tenant_key_id)
                    .map(|k| k.public().to_pem());
                let rights = granted.rights.names();
                // Readers proven by password are marked; by certificate is the default.
                let via = if by_password { " (by password)" } else { "" };
                let detail = format!("{}{via}", rights.join(","));
                let access = Access::granted(principal, &message, r.peer, &detail);
                let b64 = base64::engine::general_purpose::STANDARD;
                let answer = ServiceResponse::ok(serde_json::json!({
                    "use_license": b64.encode(granted.encode()),
                    "tenant_key": tenant_key,
                    "principal": principal,
                    "rights": rights,
                    "valid_until": format_expiry(granted.valid_until_at()),
                }));
                (answer, access)
            }
            Err(refusal) => refused(
                status_of(&refusal),
                refusal.code(),
                principal,
                refusal.to_string(),
            ),
        }
    }
}

impl Handler for LicensingService {
    fn handle(&self, r: ServiceRequest) -> ServiceResponse {
        if r.path != USE_LICENSE_PATH {
            return ServiceResponse::refused(
                StatusCode::NOT_FOUND,
                "not-found",
                format!(
                    "no such endpoint: {} (the service answers {USE_LICENSE_PATH})",
                    r.path
                ),
            );
        }
        if r.method != Method::POST {
            return ServiceResponse::refused(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{USE_LICENSE_PATH} takes POST"),
            );
        }
        self.use_license(&r, SystemTime::now())
    }
}
