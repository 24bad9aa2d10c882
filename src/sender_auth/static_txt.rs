//! TXT records given in the configuration (`[sender_auth.static_txt]`): SPF, DMARC and DKIM key
//! records answered without DNS, for test domains; optionally every other name answers "no such
//! record" without a query (`static_only`).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use hickory_resolver::proto::op::ResponseCode;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::Dmarc;
use mail_auth::spf::Spf;
use mail_auth::{DnsError, Error, ResolverCache, Txt};

/// The configured records, parsed once, keyed by lowercase absolute name ("a.test.").
#[derive(Clone, Default)]
pub struct StaticTxt {
    records: HashMap<Box<str>, Txt>,
    only: bool,
}

/// The absolute, lowercase form mail-auth looks names up by.
fn fqdn(name: &str) -> Box<str> {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n.into_boxed_str()
}

/// Parses one record by its version tag: `v=spf1`, `v=DMARC1`, else a DKIM key record.
pub fn parse(record: &str) -> Result<Txt, String> {
    let bytes = record.trim().as_bytes();
    let lower = record.trim().to_ascii_lowercase();
    let parsed = if lower.starts_with("v=spf1") {
        Spf::parse(bytes).map(Txt::from)
    } else if lower.starts_with("v=dmarc1") {
        Dmarc::parse(bytes).map(Txt::from)
    } else if lower.starts_with("v=dkim1") || lower.contains("p=") {
        mail_auth::common::verify::DomainKey::parse(bytes).map(Txt::from)
    } else {
        return Err("not an SPF (v=spf1), DMARC (v=DMARC1) or DKIM key (v=DKIM1) record".into());
    };
    parsed.map_err(|e| format!("not a valid record: {e}"))
}

impl std::fmt::Debug for StaticTxt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.records.keys().map(|k| &**k).collect();
        names.sort_unstable();
        f.debug_struct("StaticTxt")
            .field("names", &names)
            .field("only", &self.only)
            .finish()
    }
}

impl StaticTxt {
    /// `records`: name → record text; each must parse. `only`: names not listed are answered
    /// as missing, without DNS.
    pub fn new<'a>(
        records: impl IntoIterator<Item = (&'a String, &'a String)>,
        only: bool,
    ) -> Result<StaticTxt, (String, String)> {
        let mut out = HashMap::new();
        for (name, record) in records {
            let txt = parse(record).map_err(|e| (name.clone(), e))?;
            out.insert(fqdn(name), txt);
        }
        Ok(StaticTxt { records: out, only })
    }

    /// These records and one more (or one replaced): `name` → `record`, which must parse.
    pub fn with_record(mut self, name: &str, record: &str) -> Result<StaticTxt, String> {
        self.records.insert(fqdn(name), parse(record)?);
        Ok(self)
    }

    /// Whether names not listed are answered as missing, without DNS.
    pub fn static_only(&self) -> bool {
        self.only
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && !self.only
    }
}

impl ResolverCache<Box<str>, Txt> for StaticTxt {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.records.get(name) {
            Some(txt) => Some(txt.clone()),
            None if self.only => Some(Txt::Error(Error::Dns(DnsError::RecordNotFound(
                ResponseCode::NXDomain,
            )))),
            None => None,
        }
    }

    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    /// Answers from DNS are not kept: the resolver caches them itself.
    fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_by_their_version_and_names_are_absolute() {
        let records = [
            (
                "A.test".to_string(),
                "v=spf1 ip4:127.0.0.1 -all".to_string(),
            ),
            (
                "_dmarc.a.test".to_string(),
                "v=DMARC1; p=reject".to_string(),
            ),
        ];
        let t = StaticTxt::new(records.iter().map(|(a, b)| (a, b)), false).unwrap();
        assert!(matches!(t.get("a.test."), Some(Txt::Spf(_))));
        assert!(matches!(t.get("_dmarc.a.test."), Some(Txt::Dmarc(_))));
        assert!(t.get("b.test.").is_none());
        let only = StaticTxt::new(records.iter().map(|(a, b)| (a, b)), true).unwrap();
        assert!(matches!(only.get("b.test."), Some(Txt::Error(_))));
        let bad = [("x.test".to_string(), "hello".to_string())];
        let (name, problem) = StaticTxt::new(bad.iter().map(|(a, b)| (a, b)), false).unwrap_err();
        assert_eq!(name, "x.test");
        assert!(problem.contains("not an SPF"), "{problem}");
    }
}
