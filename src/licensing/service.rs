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

use super::decision::{decide, Policy, Refusal, Request};
use super::http::{Handler, ServiceRequest, ServiceResponse};
use super::identity::ReaderTrust;
use super::revocations::RevocationStore;
use crate::crypto::rms::{format_expiry, TenantKeys};

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UseLicenseRequest {
    license: String,
    signature: String,
}

fn bad_request(reason: impl Into<String>) -> ServiceResponse {
    ServiceResponse::refused(StatusCode::BAD_REQUEST, "bad-request", reason)
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
    fn use_license(&self, r: &ServiceRequest, now: SystemTime) -> ServiceResponse {
        let principal = match self.trust.principal(&r.client_chain, UnixTime::now()) {
            Ok(p) => p,
            Err(e) => {
                return ServiceResponse::refused(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    e.to_string(),
                )
            }
        };
        let (license, signature) = match parse_request(&r.body) {
            Ok(parts) => parts,
            Err(reason) => return bad_request(reason),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
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
        let hash = crate::crypto::rms::license_sha256(&license);
        let message = hex::encode(&hash[..8]);
        match decide(&request, &policy, &*revocations, now) {
            Ok(granted) => {
                tracing::info!(client = %r.peer, %principal, license = %message, "use license issued");
                // The signer's public key, for the reader to verify the use license with (its
                // SHA-256 is the key id the protected message names).
                let tenant_key = self
                    .tenant_keys
                    .get(&granted.tenant_key_id)
                    .map(|k| k.public().to_pem());
                ServiceResponse::ok(serde_json::json!({
                    "use_license": b64.encode(granted.encode()),
                    "tenant_key": tenant_key,
                    "principal": principal,
                    "rights": granted.rights.names(),
                    "valid_until": format_expiry(granted.valid_until_at()),
                }))
            }
            Err(refusal) => {
                tracing::info!(client = %r.peer, %principal, license = %message,
                    code = refusal.code(), reason = %refusal, "use license refused");
                ServiceResponse::refused(status_of(&refusal), refusal.code(), refusal.to_string())
            }
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
