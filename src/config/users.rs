//! `[[user]]` (submission users: password hashes and the envelope senders each owns) and
//! `server.sender_login_mismatch`.

use std::collections::{BTreeMap, BTreeSet};

use super::file::{RawServer, RawUser};
use super::validate::{is_domain, Checker};
use super::{ConfigError, SenderLoginMismatch};

/// The validated users.
pub(super) struct UserSettings {
    /// Lowercase name → argon2 PHC hash.
    pub hashes: BTreeMap<String, String>,
    /// Lowercase name → lowercase addresses it may send as.
    pub addresses: BTreeMap<String, BTreeSet<String>>,
    pub mismatch: SenderLoginMismatch,
    /// Lowercase name → the lowercase mailboxes it reads over IMAP (default: the name).
    pub mailboxes: BTreeMap<String, Vec<String>>,
}

pub(super) fn validate(
    c: &Checker,
    raw: &[RawUser],
    server: &RawServer,
) -> Result<UserSettings, ConfigError> {
    let mismatch = match server.sender_login_mismatch.as_deref().map(str::trim) {
        None | Some("reject") => SenderLoginMismatch::Reject,
        Some("allow") => SenderLoginMismatch::Allow,
        Some(other) => {
            return Err(c.err(
                "server.sender_login_mismatch",
                format!("must be \"reject\" or \"allow\", not {other:?}"),
            ))
        }
    };
    let mut hashes = BTreeMap::new();
    let mut addresses = BTreeMap::new();
    let mut mailboxes = BTreeMap::new();
    for (i, u) in raw.iter().enumerate() {
        let name = u.name.trim().to_ascii_lowercase();
        if name.is_empty() || name.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            return Err(c.err(
                format!("user[{i}].name"),
                format!("not a user name: {:?}", u.name),
            ));
        }
        crate::auth::check_hash(&u.password_hash)
            .map_err(|p| c.err(format!("user[{i}].password_hash"), p))?;
        if hashes
            .insert(name.clone(), u.password_hash.clone())
            .is_some()
        {
            return Err(c.err(format!("user[{i}].name"), format!("{name} is listed twice")));
        }
        let owned = match &u.addresses {
            None => BTreeSet::from([name.clone()]),
            Some(list) if list.is_empty() => return Err(c.err(
                format!("user[{i}].addresses"),
                "empty: list the addresses the user may send as, or leave the key out (the name)",
            )),
            Some(list) => {
                let mut owned = BTreeSet::new();
                for (j, a) in list.iter().enumerate() {
                    let address = a.trim().to_ascii_lowercase();
                    if !is_address(&address) {
                        return Err(c.err(
                            format!("user[{i}].addresses[{j}]"),
                            format!("not an address: {a:?}"),
                        ));
                    }
                    owned.insert(address);
                }
                owned
            }
        };
        let reads = match &u.mailboxes {
            None => vec![name.clone()],
            Some(list) if list.is_empty() => {
                return Err(c.err(
                    format!("user[{i}].mailboxes"),
                    "empty: list the mailboxes the user reads, or leave the key out (the name)",
                ))
            }
            Some(list) => {
                let mut reads: Vec<String> = Vec::new();
                for (j, a) in list.iter().enumerate() {
                    let address = a.trim().to_ascii_lowercase();
                    if !is_address(&address) {
                        return Err(c.err(
                            format!("user[{i}].mailboxes[{j}]"),
                            format!("not an address: {a:?}"),
                        ));
                    }
                    if !reads.contains(&address) {
                        reads.push(address);
                    }
                }
                reads
            }
        };
        mailboxes.insert(name.clone(), reads);
        addresses.insert(name, owned);
    }
    Ok(UserSettings {
        hashes,
        addresses,
        mismatch,
        mailboxes,
    })
}

/// `local@domain`: a local part without spaces, controls or `@`, and a domain name.
fn is_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control() || ch == '@')
        && is_domain(domain)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError, SenderLoginMismatch};

    const SERVER: &str = "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"d\"\n";

    fn load(server_extra: &str, users: &str) -> Result<Config, ConfigError> {
        let hash = crate::auth::hash_password("pw").unwrap();
        let text = format!("{SERVER}{server_extra}\n{}", users.replace("HASH", &hash));
        Config::from_toml(Path::new("/etc/sealpost/u.toml"), &text, None)
    }

    #[test]
    fn users_own_their_name_by_default_or_the_addresses_listed() {
        let c = load(
            "",
            "[[user]]\nname = \"Alice@Example.test\"\npassword_hash = \"HASH\"\n\
             [[user]]\nname = \"bob@example.test\"\npassword_hash = \"HASH\"\n\
             addresses = [\"Bob@Example.test\", \" sales@EXAMPLE.test \"]\n",
        )
        .unwrap();
        assert_eq!(c.sender_login_mismatch, SenderLoginMismatch::Reject);
        let owned = |u: &str| c.user_addresses[u].iter().cloned().collect::<Vec<_>>();
        assert_eq!(owned("alice@example.test"), ["alice@example.test"]);
        assert_eq!(
            owned("bob@example.test"),
            ["bob@example.test", "sales@example.test"]
        );
        let allow = load("sender_login_mismatch = \"allow\"\n", "").unwrap();
        assert_eq!(allow.sender_login_mismatch, SenderLoginMismatch::Allow);
    }

    #[test]
    fn users_read_their_own_mailbox_by_default_or_the_ones_listed() {
        let c = load(
            "",
            "[[user]]\nname = \"Alice@Example.test\"\npassword_hash = \"HASH\"\n\
             [[user]]\nname = \"bob@example.test\"\npassword_hash = \"HASH\"\n\
             mailboxes = [\"Bob@Example.test\", \"shared@example.test\", \"bob@example.test\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.user_mailboxes["alice@example.test"],
            ["alice@example.test"]
        );
        assert_eq!(
            c.user_mailboxes["bob@example.test"],
            ["bob@example.test", "shared@example.test"]
        );
        for (list, problem) in [("[]", "empty"), ("[\"not an address\"]", "not an address")] {
            let e = load(
                "",
                &format!("[[user]]\nname = \"a@example.test\"\npassword_hash = \"HASH\"\nmailboxes = {list}\n"),
            )
            .unwrap_err();
            assert!(
                e.key.starts_with("user[0].mailboxes") && e.problem.contains(problem),
                "{e}"
            );
        }
        let imap = "[[listener]]\naddress = \"127.0.0.1:1143\"\nprotocol = \"imap\"\n";
        let e = load(imap, "").unwrap_err();
        assert_eq!(e.key, "listener[0].protocol");
        assert!(e.problem.contains("needs a [tls] certificate"), "{e}");
    }

    #[test]
    fn bad_addresses_and_settings_are_named() {
        let user = |addresses: &str| {
            format!("[[user]]\nname = \"a@example.test\"\npassword_hash = \"HASH\"\naddresses = {addresses}\n")
        };
        for (server, users, key, problem) in [
            ("", user("[]"), "user[0].addresses", "empty"),
            (
                "",
                user("[\"a@example.test\", \"nobody\"]"),
                "user[0].addresses[1]",
                "not an address: \"nobody\"",
            ),
            (
                "",
                user("[\"a b@example.test\"]"),
                "user[0].addresses[0]",
                "not an address",
            ),
            (
                "",
                user("[\"a@bad domain\"]"),
                "user[0].addresses[0]",
                "not an address",
            ),
            (
                "sender_login_mismatch = \"warn\"\n",
                String::new(),
                "server.sender_login_mismatch",
                "must be \"reject\" or \"allow\", not \"warn\"",
            ),
        ] {
            let e = load(server, &users).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.problem.contains(problem), "{e}");
        }
    }
}
