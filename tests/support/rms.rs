//! Messages protected with the fixture tenant key, and the request bodies readers send for
//! them, for the licensing tests.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use sealpost::crypto::rms::{extract_container, license_for, parse_container, protect, TenantKeys};
use sealpost::rules::RmsProtect;

/// The fixture tenant key directory.
pub fn tenant_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/tenant")
}

pub fn tenant() -> TenantKeys {
    TenantKeys::load_dir(&tenant_dir()).unwrap()
}

/// `message` from alice, protected now with the do-not-forward template for `recipients`, its
/// license naming `message_id` and the licensing service `url`.
pub fn protected(message: &[u8], recipients: &[&str], message_id: &str, url: &str) -> Vec<u8> {
    let action = RmsProtect {
        template: "do-not-forward".into(),
        rights: Default::default(),
        expires_after: None,
    };
    let recipients: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    let request = license_for(
        &action,
        "alice@contoso.test",
        &recipients,
        Some(message_id),
        SystemTime::now(),
    )
    .with_licensing_url(Some(url.into()));
    protect(message, tenant().active().unwrap(), request).unwrap()
}

/// The JSON body a reader sends for `message`: its publishing license and signature, and the
/// reader's public key when it proves itself by password.
pub fn request_body(message: &[u8], reader_key: Option<&str>) -> String {
    let container = extract_container(message).unwrap();
    let framed = parse_container(&container).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = serde_json::json!({
        "license": b64.encode(framed.license),
        "signature": b64.encode(framed.signature),
    });
    if let Some(key) = reader_key {
        body["reader_key"] = key.into();
    }
    body.to_string()
}
