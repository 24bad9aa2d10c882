//! The `rms_protect` action's protector: the tenant keys in `[rms] tenant_key_dir`.

use std::time::SystemTime;

use super::apply::Rms;
use crate::crypto::rms::{license_for, protect_active, TenantKeys};
use crate::rules::RmsProtect;

/// Protects with the active tenant key; older keys stay in the directory for reading.
pub struct TenantRms {
    keys: TenantKeys,
}

impl TenantRms {
    pub fn new(keys: TenantKeys) -> Self {
        TenantRms { keys }
    }
}

impl Rms for TenantRms {
    fn protect(
        &self,
        message: &[u8],
        sender: &str,
        recipients: &[String],
        action: &RmsProtect,
    ) -> Result<Vec<u8>, String> {
        let message_id = mail_parser::MessageParser::default()
            .parse_headers(message)
            .and_then(|m| m.message_id().map(str::to_string));
        let license = license_for(
            action,
            sender,
            recipients,
            message_id.as_deref(),
            SystemTime::now(),
        );
        protect_active(message, &self.keys, license).map_err(|e| e.to_string())
    }
}
