//! A set of domain names, and the one way sealpost asks whether a domain is in it.

use std::collections::BTreeSet;

/// Domain names compared as routing compares them: ASCII case-insensitively, with a trailing
/// dot ignored. The local domains of a configuration are one of these, and the SMTP policy, the
/// router and the transport rules all ask it, so they cannot disagree on what is local.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainSet(BTreeSet<String>);

/// The form a domain is stored and compared in.
fn key(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

impl DomainSet {
    pub fn new<I>(domains: I) -> DomainSet
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        DomainSet(domains.into_iter().map(|d| key(d.as_ref())).collect())
    }

    /// Adds a domain; false if it was already there (in any case).
    pub fn insert(&mut self, domain: &str) -> bool {
        self.0.insert(key(domain))
    }

    /// Whether `domain` is in the set.
    pub fn contains(&self, domain: &str) -> bool {
        self.0.contains(&key(domain))
    }

    /// Whether the domain of `address` (text after the last `@`) is in the set.
    pub fn contains_address(&self, address: &str) -> bool {
        self.contains(super::domain_of(address))
    }

    /// The domains, lowercased, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_ignores_ascii_case_and_a_trailing_dot() {
        let mut set = DomainSet::new(["Contoso.TEST"]);
        assert!(set.contains("contoso.test"));
        assert!(set.contains("CONTOSO.test."));
        assert!(set.contains_address("Alice@CONTOSO.Test"));
        assert!(set.contains_address("\"a@b\"@contoso.test"));
        assert!(!set.contains("sub.contoso.test"));
        assert!(!set.contains_address("postmaster"));
        assert!(!set.insert("contoso.Test"));
        assert!(set.insert("fabrikam.test"));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            ["contoso.test", "fabrikam.test"]
        );
    }
}
