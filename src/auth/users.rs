//! Submission users: names with argon2 password hashes (PHC strings) from the configuration,
//! and the envelope senders each may use once authenticated.

use std::collections::{BTreeMap, BTreeSet};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;

use super::Credentials;
use crate::mail::Reply;

/// Hashes a password for `[[user]] password_hash` (Argon2id, the crate's default parameters).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| "no random numbers".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks that a string is a PHC password hash argon2 can verify against.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a password hash: {e}"))?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "{} hashes are not accepted; use `sealpost keys hash-password`",
            parsed.algorithm
        ));
    }
    Ok(())
}

/// The users allowed to authenticate.
#[derive(Debug, Default, Clone)]
pub struct Users {
    /// Lowercase name → PHC hash.
    hashes: BTreeMap<String, String>,
}

impl Users {
    pub fn new(hashes: BTreeMap<String, String>) -> Self {
        Users { hashes }
    }

    /// Verifies credentials (slow on purpose: run it off the reactor). Unknown users cost the
    /// same as wrong passwords, so answers do not tell which names exist.
    pub fn verify(&self, creds: &Credentials) -> Result<String, Reply> {
        let name = creds.username.to_ascii_lowercase();
        let failed = || Reply::new(535, [5, 7, 8], "Error: authentication failed");
        let known = self.hashes.get(&name);
        let hash = match known {
            Some(h) => h.clone(),
            None => dummy_hash(),
        };
        let ok = super::argon_pool::verify(&hash, &creds.password);
        if ok && known.is_some() {
            Ok(name)
        } else {
            Err(failed())
        }
    }
}

/// Which envelope senders (MAIL FROM) an authenticated user may use: Postfix's
/// `reject_sender_login_mismatch`. Unauthenticated sessions are not concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderLogins {
    /// Only the addresses a user owns: lowercase user name → lowercase addresses.
    Owned(BTreeMap<String, BTreeSet<String>>),
    /// Any sender (`server.sender_login_mismatch = "allow"`).
    Any,
}

/// Nobody owns anything until told: every authenticated non-null sender is refused.
impl Default for SenderLogins {
    fn default() -> Self {
        SenderLogins::Owned(BTreeMap::new())
    }
}

impl SenderLogins {
    /// Whether `user` may give `sender` in MAIL FROM: an address it owns (ASCII case ignored, as
    /// everywhere addresses are compared) or the null sender (which claims no address; mail
    /// clients send read receipts with it, and Postfix lets it pass too). Otherwise
    /// `553 5.7.1 <sender>: Sender address rejected: not owned by user <user>`.
    pub fn check(&self, user: &str, sender: &str) -> Result<(), Reply> {
        let owners = match self {
            SenderLogins::Any => return Ok(()),
            SenderLogins::Owned(owners) => owners,
        };
        if sender.is_empty() {
            return Ok(());
        }
        let owned = owners
            .get(&user.to_ascii_lowercase())
            .is_some_and(|addresses| addresses.contains(&sender.to_ascii_lowercase()));
        if owned {
            Ok(())
        } else {
            Err(Reply::new(
                553,
                [5, 7, 1],
                format!("<{sender}>: Sender address rejected: not owned by user {user}"),
            ))
        }
    }
}

fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password("no user has this password").unwrap_or_default())
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_wrong_passwords_and_names_fail_alike() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        check_hash(&hash).unwrap();
        assert!(check_hash("plaintext").is_err());
        let users = Users::new([("alice@contoso.test".to_string(), hash)].into());
        let creds = |u: &str, p: &str| Credentials {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(
            users.verify(&creds("Alice@Contoso.test", "correct horse")),
            Ok("alice@contoso.test".into())
        );
        let wrong = users
            .verify(&creds("alice@contoso.test", "battery"))
            .unwrap_err();
        let unknown = users
            .verify(&creds("mallory@contoso.test", "correct horse"))
            .unwrap_err();
        assert_eq!(wrong, unknown);
        assert_eq!(wrong.to_string(), "535 5.7.8 Error: authentication failed");
    }

    #[test]
    fn users_may_send_only_as_the_addresses_they_own() {
        let owners = BTreeMap::from([(
            "alice@contoso.test".to_string(),
            BTreeSet::from([
                "alice@contoso.test".to_string(),
                "sales@contoso.test".to_string(),
            ]),
        )]);
        let logins = SenderLogins::Owned(owners);
        let check =
            |user: &str, sender: &str| logins.check(user, sender).map_err(|r| r.to_string());
        for sender in [
            "alice@contoso.test",
            "ALICE@Contoso.TEST",
            "sales@contoso.test",
            "",
        ] {
            assert_eq!(check("alice@contoso.test", sender), Ok(()), "{sender}");
        }
        assert_eq!(
            check("alice@contoso.test", "bob@contoso.test"),
            Err("553 5.7.1 <bob@contoso.test>: Sender address rejected: not owned by user alice@contoso.test".into())
        );
        // Near misses: another domain, a subdomain, a quoted form, a look-alike (no Unicode folding).
        for sender in [
            "alice@fabrikam.test",
            "alice@sub.contoso.test",
            "\"alice\"@contoso.test",
            "\u{430}lice@contoso.test",
        ] {
            assert!(check("alice@contoso.test", sender).is_err(), "{sender}");
        }
        // A user without an entry owns nothing but the null sender.
        assert!(check("carol@contoso.test", "carol@contoso.test").is_err());
        assert_eq!(check("carol@contoso.test", ""), Ok(()));
        assert!(SenderLogins::default()
            .check("a@b.test", "a@b.test")
            .is_err());
        assert_eq!(
            SenderLogins::Any.check("alice@contoso.test", "bob@x.test"),
            Ok(())
        );
    }
}
