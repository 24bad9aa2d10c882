//! The licensing service's endpoint, `POST /v1/use-license`: the reader proves who it is with
//! its certificate (see [`super::identity`]), sends the publishing license and its signature
//! from the protected message, and gets a use license holding the content key wrapped to that
//! same certificate's key, or a refusal with a machine code and a reason.
//!
//! Request: `{"license": base64, "signature": base64}`. Answer 200:
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
use super::decision::{decide, Policy, Refusal, Request};
use super::http::{Handler, ServiceRequest, ServiceResponse};
use super::identity::ReaderTrust;
use super::revocations::RevocationStore;
use crate::crypto::rms::{format_expiry, License, TenantKeys};

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UseLicenseRequest {
    license: String,
    signature: String,
}

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

/// Reads a request body: the publishing license and its signature, decoded. Bounded by the
/// transport's request size; any other shape is a reason for 400.
pub fn parse_request(body: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let body: UseLicenseRequest = serde_json::from_slice(body)
        .map_err(|e| format!("expected {{\"license\", \"signature\"}}: {e}"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    match (b64.decode(&body.license), b64.decode(&body.signature)) {
        (Ok(license), Ok(signature)) => Ok((license, signature)),
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

    fn decide_request(&self, r: &ServiceRequest, now: SystemTime) -> (ServiceResponse, Access) {
        let parsed = parse_request(&r.body);
        // The Message-ID the license names (unverified yet), hashed, to say which message.
        let message = parsed
            .as_ref()
            .ok()
            .and_then(|(license, _)| License::decode(license).ok())
            .and_then(|l| l.message_id)
            .map(|id| message_hash(&id))
            .unwrap_or_default();
        let refused = |status, code: &str, principal: &str, reason: String| {
            let access = Access::refused(code, principal, &message, r.peer, &reason);
            (ServiceResponse::refused(status, code, reason), access)
        };
        let principal = match self.trust.principal(&r.client_chain, UnixTime::now()) {
            Ok(p) => p,
            Err(e) => {
                return refused(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "",
                    e.to_string(),
                )
            }
        };
        let (license, signature) = match parsed {
            Ok(parts) => parts,
            Err(reason) => {
                return refused(StatusCode::BAD_REQUEST, "bad-request", &principal, reason)
            }
        };
        let request = Request {
            license: &license,
            signature: &signature,
            principal: &principal,
            certificate: r.client_chain[0].as_ref(),
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
                let access = Access::granted(&principal, &message, r.peer, &rights.join(","));
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
                &principal,
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
