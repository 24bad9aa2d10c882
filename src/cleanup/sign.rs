//! The `smime_sign` action's signer: the key of the message's From address (or of its domain)
//! from `[smime] signing_dir`, loaded with the configuration.

use std::sync::Arc;
use std::time::SystemTime;

use super::apply::Signer;
use crate::crypto::smime::{is_encrypted, is_signed, sign_message, SignatureScheme, SigningKeys};
use crate::mail::Reply;
use crate::rules::{self, OnMissingSigningKey, SmimeSign};
use crate::telemetry::Telemetry;

/// Signs with the keys of one signing directory.
pub struct DirectorySigner {
    keys: SigningKeys,
    telemetry: Arc<Telemetry>,
}

impl DirectorySigner {
    pub fn new(keys: SigningKeys, telemetry: Arc<Telemetry>) -> Self {
        DirectorySigner { keys, telemetry }
    }
}

/// The signer's address: the first mailbox of the From header, else the envelope sender.
fn signer_address(message: &[u8], envelope_sender: &str) -> String {
    let head_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 4);
    mail_parser::MessageParser::default()
        .parse_headers(&message[..head_end])
        .and_then(|m| {
            m.from()
                .and_then(|f| f.first())
                .and_then(|a| a.address())
                .map(str::to_string)
        })
        .unwrap_or_else(|| envelope_sender.to_string())
}

impl Signer for DirectorySigner {
    fn sign(
        &self,
        message: &[u8],
        sender: &str,
        action: &SmimeSign,
    ) -> Result<Option<Vec<u8>>, Reply> {
        if is_encrypted(message) {
            return Ok(None);
        }
        if is_signed(message) {
            self.telemetry.metrics.smime_signing("already-signed");
            return Ok(None);
        }
        let address = signer_address(message, sender);
        let now = SystemTime::now();
        let key = self.keys.find(&address);
        let problem = match key {
            None => "no signing key for it or its domain".to_string(),
            Some(k) => k.problem_at(now).unwrap_or_default(),
        };
        match key {
            Some(key) if problem.is_empty() => {
                let scheme = match action.signature {
                    rules::SignatureScheme::RsaPkcs1 => SignatureScheme::RsaPkcs1,
                    rules::SignatureScheme::RsaPss => SignatureScheme::RsaPss,
                };
                let signed = sign_message(message, key, scheme, now).map_err(|e| {
                    Reply::new(451, [4, 7, 0], format!("S/MIME signing failed: {e}"))
                })?;
                self.telemetry.metrics.smime_signing("signed");
                Ok(Some(signed))
            }
            _ => match action.on_missing_certificate {
                OnMissingSigningKey::Reject => Err(Reply::new(
                    550,
                    [5, 7, 1],
                    format!("No usable S/MIME signing certificate for {address}"),
                )),
                OnMissingSigningKey::Defer => Err(Reply::new(
                    451,
                    [4, 7, 1],
                    format!("No usable S/MIME signing certificate for {address}, try again later"),
                )),
                OnMissingSigningKey::DeliverUnsigned => {
                    tracing::warn!(from = %address, reason = %problem,
                        "S/MIME signing skipped: message delivered unsigned");
                    self.telemetry.metrics.smime_signing("unsigned");
                    Ok(None)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn signer(dir: &std::path::Path) -> DirectorySigner {
        let smime = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki/smime");
        std::fs::copy(
            smime.join("alice@contoso.test.crt"),
            dir.join("alice@contoso.test.crt"),
        )
        .unwrap();
        let key = dir.join("alice@contoso.test.key");
        std::fs::copy(smime.join("alice@contoso.test.key"), &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let keys = SigningKeys::load_dir(dir, SystemTime::now()).unwrap();
        DirectorySigner::new(keys, Arc::new(Telemetry::default()))
    }

    fn action(on_missing: OnMissingSigningKey) -> SmimeSign {
        SmimeSign {
            on_missing_certificate: on_missing,
            ..Default::default()
        }
    }

    #[test]
    fn signs_as_the_from_address_and_follows_the_rule_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let msg = b"From: Alice <alice@contoso.test>\r\nSubject: s\r\n\r\nbody\r\n";
        let signed = s
            .sign(
                msg,
                "bounces@contoso.test",
                &action(OnMissingSigningKey::Reject),
            )
            .unwrap()
            .unwrap();
        assert!(is_signed(&signed));
        // Signed once only.
        let again = s.sign(
            &signed,
            "alice@contoso.test",
            &action(OnMissingSigningKey::Reject),
        );
        assert_eq!(again, Ok(None));

        let other = b"From: carol@contoso.test\r\nSubject: s\r\n\r\nbody\r\n";
        let e = s
            .sign(
                other,
                "carol@contoso.test",
                &action(OnMissingSigningKey::Reject),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "550 5.7.1 No usable S/MIME signing certificate for carol@contoso.test"
        );
        let e = s
            .sign(
                other,
                "carol@contoso.test",
                &action(OnMissingSigningKey::Defer),
            )
            .unwrap_err();
        assert_eq!(e.code, 451);
        let plain = s.sign(
            other,
            "carol@contoso.test",
            &action(OnMissingSigningKey::DeliverUnsigned),
        );
        assert_eq!(plain, Ok(None));
        let metrics = s.telemetry.metrics.render();
        for line in [
            "smime_signing_total{outcome=\"signed\"} 1",
            "smime_signing_total{outcome=\"already-signed\"} 1",
            "smime_signing_total{outcome=\"unsigned\"} 1",
        ] {
            assert!(metrics.contains(line), "{line} missing: {metrics}");
        }
        // Without a From header, the envelope sender signs.
        let no_from = b"Subject: s\r\n\r\nbody\r\n";
        let signed = s.sign(
            no_from,
            "alice@contoso.test",
            &action(OnMissingSigningKey::Reject),
        );
        assert!(signed.unwrap().is_some());
    }

    /// A rule that lists encryption before signing still signs first, then encrypts the
    /// signed message: bob decrypts it and finds alice's intact signature inside.
    #[test]
    fn sign_then_encrypt_whatever_the_order_of_the_actions() {
        use crate::cleanup::apply::{apply, Original, Protectors};
        use crate::cleanup::smime::DirectorySmime;
        use crate::crypto::smime::{decrypt_message, verify_message, DecryptKey};
        use crate::rules::{evaluate, parse_rule_file, MessageFacts, RuleSet};

        let dir = tempfile::tempdir().unwrap();
        let signer = signer(dir.path());
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki/smime");
        let smime = DirectorySmime::new(fixtures.clone());
        let rule = "name = \"s\"\npriority = 1\n[[actions]]\ntype = \"smime_encrypt\"\n\
                    [[actions]]\ntype = \"smime_sign\"\n";
        let rules = RuleSet::new(vec![
            parse_rule_file(std::path::Path::new("s.toml"), rule).unwrap()
        ]);
        let msg: &[u8] = b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\nSubject: s\r\n\r\nsigned and sealed\r\n";
        let recipients = vec!["bob@fabrikam.test".to_string()];
        let local = crate::mail::DomainSet::new(["contoso.test"]);
        let facts = MessageFacts {
            mail_from: "alice@contoso.test",
            recipients: &recipients,
            message: msg,
            size: msg.len() as u64,
            local_domains: &local,
            authenticated: false,
            inbound_connector: None,
            sender_auth: None,
        };
        let evaluation = evaluate(&rules, &facts);
        let head_len = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let original = Original {
            head: &msg[..head_len],
            whole: Some(msg),
        };
        let protectors = Protectors {
            smime: Some(&smime),
            rms: None,
            signer: Some(&signer),
        };
        let copies = apply(&evaluation, "alice@contoso.test", &original, protectors).unwrap();
        assert_eq!(copies.len(), 1);
        let sealed = copies[0].content.bytes(&original).unwrap().to_vec();
        assert!(is_encrypted(&sealed));
        let key = DecryptKey::from_pem(&fixtures.join("bob@fabrikam.test.key"), None).unwrap();
        let opened = decrypt_message(&sealed, &key).unwrap();
        assert!(is_signed(&opened), "{}", String::from_utf8_lossy(&opened));
        let verified = verify_message(&opened, None, SystemTime::now()).unwrap();
        assert_eq!(verified.signers[0].emails, ["alice@contoso.test"]);
        assert!(String::from_utf8_lossy(&verified.message).contains("signed and sealed"));
    }
}
