//! The `rms_protect` action's protector: the tenant keys in `[rms] tenant_key_dir`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::apply::Rms;
use crate::crypto::rms::{license_for, protect_active, TenantKeys};
use crate::rules::{Right, RmsProtect};

/// Template name → principal → rights, from `[[rms.template]]`.
pub type Templates = BTreeMap<String, BTreeMap<String, Vec<Right>>>;

/// Protects with the active tenant key; older keys stay in the directory for reading.
pub struct TenantRms {
    keys: TenantKeys,
    templates: Templates,
    /// `[rms.licensing] url`: named in every publishing license (version 2) when set.
    licensing_url: Option<String>,
}

impl TenantRms {
    pub fn new(keys: TenantKeys, templates: Templates) -> Self {
        TenantRms {
            keys,
            templates,
            licensing_url: None,
        }
    }

    /// Names the licensing service in the licenses written from now on.
    pub fn with_licensing_url(mut self, url: Option<String>) -> Self {
        self.licensing_url = url;
        self
    }

    /// A configured template's rights, under the rule's own (the rule's win per principal).
    fn resolve(&self, action: &RmsProtect) -> RmsProtect {
        let mut resolved = action.clone();
        if let Some(rights) = self.templates.get(&action.template) {
            for (principal, r) in rights {
                resolved
                    .rights
                    .entry(principal.clone())
                    .or_insert_with(|| r.clone());
            }
        }
        resolved
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
        let action = self.resolve(action);
        let license = license_for(
            &action,
            sender,
            recipients,
            message_id.as_deref(),
            SystemTime::now(),
        )
        .with_licensing_url(self.licensing_url.clone());
        protect_active(message, &self.keys, license).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::rms::unprotect;
    use std::path::Path;

    #[test]
    fn configured_templates_give_their_rights_and_rules_override_them() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/tenant");
        let keys = TenantKeys::load_dir(&dir).unwrap();
        let templates: Templates = [(
            "partners-read-only".to_string(),
            [
                (
                    "*@fabrikam.test".to_string(),
                    vec![Right::View, Right::Print],
                ),
                ("ANYONE".to_string(), vec![Right::View, Right::Print]),
            ]
            .into(),
        )]
        .into();
        let rms = TenantRms::new(keys, templates);
        let action = RmsProtect {
            template: "partners-read-only".into(),
            rights: [("ANYONE".to_string(), vec![Right::View])].into(),
            expires_after: None,
        };
        let msg =
            b"From: a@contoso.test\r\nSubject: s\r\nMessage-ID: <x@contoso.test>\r\n\r\nbody\r\n";
        let sealed = rms
            .protect(
                msg,
                "a@contoso.test",
                &["bob@fabrikam.test".into()],
                &action,
            )
            .unwrap();
        let (license, original) = unprotect(
            &sealed,
            &TenantKeys::load_dir(&dir).unwrap(),
            SystemTime::now(),
            false,
        )
        .unwrap();
        assert_eq!(original, msg);
        assert_eq!(license.template, "partners-read-only");
        assert_eq!(
            license.rights_of("bob@fabrikam.test").to_string(),
            "VIEW, PRINT"
        );
        assert_eq!(
            license.rights_of("x@elsewhere.test").to_string(),
            "VIEW",
            "the rule's ANYONE wins over the template's"
        );
        assert_eq!(license.licensing_url, None);
    }

    #[test]
    fn a_configured_licensing_url_is_written_into_the_license() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/tenant");
        let url = "https://127.0.0.1:8443";
        let rms = TenantRms::new(TenantKeys::load_dir(&dir).unwrap(), Templates::new())
            .with_licensing_url(Some(url.into()));
        let action = RmsProtect {
            template: "encrypt-only".into(),
            rights: Default::default(),
            expires_after: None,
        };
        let msg = b"From: a@contoso.test\r\nSubject: s\r\n\r\nbody\r\n";
        let sealed = rms
            .protect(
                msg,
                "a@contoso.test",
                &["bob@fabrikam.test".into()],
                &action,
            )
            .unwrap();
        let keys = TenantKeys::load_dir(&dir).unwrap();
        let (license, original) = unprotect(&sealed, &keys, SystemTime::now(), false).unwrap();
        assert_eq!(original, msg);
        assert_eq!(
            (license.version(), license.licensing_url.as_deref()),
            (2, Some(url))
        );
    }
}
