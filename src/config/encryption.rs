//! Encryption policies in the configuration: `[[encryption_policy]]`, per-domain and per-mailbox
//! assignment, and `[store] keystore_dir`, validated so that no mailbox is silently stored in clear.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::keys::{is_pkcs11_uri, KekRef, Pkcs11Config, Pkcs11Uri, Token};

/// `[[encryption_policy]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncryptionPolicy {
    pub name: String,
    pub root_keys: Vec<String>,
    pub availability_key: String,
}

/// `[store]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub keystore_dir: Option<String>,
}

/// A validated data encryption policy: two root keys (either one unwraps the policy key) and an
/// availability key (used only when both root keys are unavailable). Each is a key file or a
/// `pkcs11:` URI naming an AES key in a token. Key files exist and hold a well-formed key when
/// the configuration is loaded; at least one key of the policy is usable then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionPolicy {
    pub name: String,
    pub root_keys: [KekRef; 2],
    pub availability_key: KekRef,
}

/// The policies as written, and the `[pkcs11]` module their token keys need.
pub(super) struct RawPolicies<'a> {
    pub policies: &'a [RawEncryptionPolicy],
    pub pkcs11: Option<&'a Pkcs11Config>,
}

/// What a mailbox is stored under: a named policy, or explicitly in clear.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyRef {
    /// `encryption_policy = "none"`: stored in clear (still checksummed).
    None,
    /// The name of an `[[encryption_policy]]`.
    Named(String),
}

impl std::fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyRef::None => f.write_str("none"),
            PolicyRef::Named(n) => f.write_str(n),
        }
    }
}

/// `[store]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Where sealpost keeps key material it generates itself (the service key) and the audit log;
    /// never inside data_dir. Default: `<data_dir>.keystore`, a sibling of data_dir.
    pub keystore_dir: PathBuf,
}

/// The validated encryption part of a configuration.
pub(super) struct Encryption {
    pub policies: BTreeMap<String, EncryptionPolicy>,
    pub mailboxes: BTreeMap<String, PolicyRef>,
    pub store: StoreSettings,
}

fn is_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks policies, their key files and every mailbox's assignment.
///
/// `domains` and `mailboxes` are `(index, lowercase name, encryption_policy as written)`.
pub(super) fn validate(
    file: &Path,
    dir: &Path,
    data_dir: &Path,
    raw: RawPolicies<'_>,
    store: Option<&RawStore>,
    domains: &[(usize, String, Option<String>)],
    mailboxes: &[(usize, String, Option<String>)],
) -> Result<Encryption, ConfigError> {
    let err = |key: String, problem: String| ConfigError {
        file: file.to_path_buf(),
        key,
        problem,
    };
    let resolve = |value: &str| {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let mut policies = BTreeMap::new();
    for (i, p) in raw.policies.iter().enumerate() {
        let base = format!("encryption_policy[{i}]");
        if !is_policy_name(&p.name) || p.name == "none" {
            return Err(err(
                format!("{base}.name"),
                format!(
                    "{:?} is not a policy name (lowercase letters, digits, - and _; not \"none\")",
                    p.name
                ),
            ));
        }
        if policies.contains_key(&p.name) {
            return Err(err(
                format!("{base}.name"),
                format!("{} is defined twice", p.name),
            ));
        }
        if p.root_keys.len() != 2 {
            return Err(err(
                format!("{base}.root_keys"),
                format!(
                    "needs exactly two root keys (either one unwraps), found {}",
                    p.root_keys.len()
                ),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut refs = Vec::new();
        let mut unusable = Vec::new();
        let named = p
            .root_keys
            .iter()
            .enumerate()
            .map(|(j, v)| (format!("{base}.root_keys[{j}]"), v.as_str()))
            .chain(std::iter::once((
                format!("{base}.availability_key"),
                p.availability_key.as_str(),
            )));
        for (key, value) in named {
            if is_pkcs11_uri(value) {
                let uri = Pkcs11Uri::parse(value).map_err(|e| err(key.clone(), e.to_string()))?;
                let pkcs11 = raw.pkcs11.ok_or_else(|| {
                    err(
                        key.clone(),
                        format!("{uri} is a token key: add a [pkcs11] section (module, pin_file or pin_env)"),
                    )
                })?;
                if refs
                    .iter()
                    .any(|r| matches!(r, KekRef::Token { uri: u, .. } if *u == uri))
                {
                    return Err(err(
                        key,
                        format!("{value} names the same token key as another key of this policy"),
                    ));
                }
                if let Err(e) =
                    Token::open(pkcs11, &uri.token).and_then(|t| t.find_secret_key(&uri))
                {
                    unusable.push(format!("{key} = {uri}: {e}"));
                }
                refs.push(KekRef::Token {
                    pkcs11: pkcs11.clone(),
                    uri,
                });
                continue;
            }
            let path = resolve(value);
            let id = check_key_file(&path, value, data_dir)
                .map_err(|problem| err(key.clone(), problem))?;
            if !ids.insert(id) {
                return Err(err(
                    key,
                    format!("{value} holds the same key as another key of this policy"),
                ));
            }
            refs.push(KekRef::File(path));
        }
        if unusable.len() == refs.len() {
            return Err(err(
                base.clone(),
                format!(
                    "no key of policy {} is usable: {}",
                    p.name,
                    unusable.join("; ")
                ),
            ));
        }
        for problem in &unusable {
            tracing::warn!(policy = %p.name, "token key unusable now, the policy's other keys stand in: {problem}");
        }
        let [a, b, availability]: [KekRef; 3] = refs
            .try_into()
            .map_err(|_| err(base.clone(), "internal: expected three keys".into()))?;
        policies.insert(
            p.name.clone(),
            EncryptionPolicy {
                name: p.name.clone(),
                root_keys: [a, b],
                availability_key: availability,
            },
        );
    }

    let lookup = |key: String, value: &str| -> Result<PolicyRef, ConfigError> {
        if value == "none" {
            Ok(PolicyRef::None)
        } else if policies.contains_key(value) {
            Ok(PolicyRef::Named(value.to_string()))
        } else {
            let known: Vec<&str> = policies.keys().map(String::as_str).collect();
            Err(err(
                key,
                format!(
                    "no [[encryption_policy]] named {value:?} (defined: {}; or \"none\")",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ))
        }
    };
    let mut domain_policy = BTreeMap::new();
    for (i, name, policy) in domains {
        if let Some(v) = policy {
            let r = lookup(format!("domain[{i}].encryption_policy"), v)?;
            domain_policy.insert(name.clone(), r);
        }
    }
    let mut assigned = BTreeMap::new();
    for (i, address, policy) in mailboxes {
        let r = match policy {
            Some(v) => lookup(format!("mailbox[{i}].encryption_policy"), v)?,
            None => {
                let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
                match domain_policy.get(domain) {
                    Some(r) => r.clone(),
                    None => {
                        return Err(err(
                            format!("mailbox[{i}].encryption_policy"),
                            format!(
                                "{address} has no encryption policy: set encryption_policy on this \
                                 [[mailbox]] or on [[domain]] {domain} (\"none\" stores it in clear)"
                            ),
                        ))
                    }
                }
            }
        };
        assigned.insert(address.clone(), r);
    }

    let keystore_dir = match store.and_then(|s| s.keystore_dir.as_deref()) {
        Some(v) => resolve(v),
        None => {
            let mut name = data_dir.as_os_str().to_os_string();
            name.push(".keystore");
            PathBuf::from(name)
        }
    };
    if keystore_dir.starts_with(data_dir) {
        return Err(err(
            "store.keystore_dir".into(),
            format!(
                "{} is inside data_dir {}: the keystore must be kept apart from the data",
                keystore_dir.display(),
                data_dir.display()
            ),
        ));
    }
    Ok(Encryption {
        policies,
        mailboxes: assigned,
        store: StoreSettings { keystore_dir },
    })
}

/// A key file: present, well-formed, private to its owner, not inside data_dir. Returns its key id.
fn check_key_file(path: &Path, value: &str, data_dir: &Path) -> Result<String, String> {
    super::secret_file::check(path, value, "root key")?;
    if let (Ok(k), Ok(d)) = (path.canonicalize(), data_dir.canonicalize()) {
        if k.starts_with(&d) {
            return Err(format!(
                "{value} is inside data_dir {}: root keys must be kept apart from the data",
                data_dir.display()
            ));
        }
    }
    let key = crate::crypto::keyfile::read_key_file(path).map_err(|e| format!("{value}: {e}"))?;
    Ok(key.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_POLICIES: RawPolicies<'static> = RawPolicies {
        policies: &[],
        pkcs11: None,
    };

    #[test]
    fn policy_names_exclude_none_and_odd_characters() {
        for ok in ["contoso-default", "p1", "a_b"] {
            assert!(is_policy_name(ok), "{ok}");
        }
        for bad in ["", "Upper", "with space", "../x", &"x".repeat(65)] {
            assert!(!is_policy_name(bad), "{bad}");
        }
    }

    #[test]
    fn keystore_defaults_beside_data_dir_and_never_inside() {
        let e = validate(
            Path::new("/etc/s.toml"),
            Path::new("/etc"),
            Path::new("/var/lib/s"),
            NO_POLICIES,
            None,
            &[],
            &[],
        )
        .map_err(|e| e.to_string())
        .map(|e| e.store.keystore_dir);
        assert_eq!(e, Ok(PathBuf::from("/var/lib/s.keystore")));
        let inside = RawStore {
            keystore_dir: Some("/var/lib/s/keys".into()),
        };
        let e = validate(
            Path::new("/etc/s.toml"),
            Path::new("/etc"),
            Path::new("/var/lib/s"),
            NO_POLICIES,
            Some(&inside),
            &[],
            &[],
        );
        assert!(e.is_err_and(|e| e.key == "store.keystore_dir"));
    }

    #[test]
    fn a_mailbox_needs_a_policy_of_its_own_or_of_its_domain() {
        let domains = vec![(0, "a.test".to_string(), None)];
        let boxes = vec![(3, "x@a.test".to_string(), None)];
        let e = validate(
            Path::new("/etc/s.toml"),
            Path::new("/etc"),
            Path::new("/var/lib/s"),
            NO_POLICIES,
            None,
            &domains,
            &boxes,
        );
        let e = e.err().unwrap();
        assert_eq!(e.key, "mailbox[3].encryption_policy");
        assert!(e.problem.contains("x@a.test"), "{e}");
        let boxes = vec![(0, "x@a.test".to_string(), Some("none".to_string()))];
        let ok = validate(
            Path::new("/etc/s.toml"),
            Path::new("/etc"),
            Path::new("/var/lib/s"),
            NO_POLICIES,
            None,
            &domains,
            &boxes,
        );
        assert!(ok.is_ok_and(|e| e.mailboxes["x@a.test"] == PolicyRef::None));
    }
}
