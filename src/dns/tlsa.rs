//! DNSSEC-validated lookups for DANE (RFC 7672 §2.2): TLSA records, and MX records with their
//! security status.
//!
//! Every answer is sorted into one of three outcomes by the proofs hickory attaches to its
//! records:
//!
//! - **secure**: each answer record (CNAMEs included) chains to a trust anchor; for a negative
//!   answer (NXDOMAIN or NODATA), each authority record (SOA, NSEC/NSEC3) does, so the denial
//!   itself is proven;
//! - **insecure**: some record provably lies in an unsigned zone (a delegation without DS,
//!   proven by the signed parent), or a negative answer comes with no proof at all;
//! - **bogus**: a signature fails, has expired, or a key does not match its DS, or the
//!   validator cannot decide (indeterminate). This is [`DnsError::Bogus`], a temporary error.
//!
//! Only a secure TLSA RRset enables DANE; a secure denial means the server publishes no TLSA
//! records ([`TlsaAnswer::Secure`] with an empty list); an insecure answer, positive or not,
//! means no DANE ([`TlsaAnswer::Insecure`]); a bogus one must defer delivery.

use hickory_resolver::net::{DnsError as WireError, NetError, NoRecords};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::error::{classify, Negative};
use super::mx::{display_name, implicit_mx, order_mx};
use super::resolver::absolute_name;
use super::tlsa_record::Tlsa;
use super::{DnsError, MxHost, Resolver};

/// The TLSA records of a service name, as DANE may use them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsaAnswer {
    /// A DNSSEC-secure answer: these records (an empty list when the name provably has no TLSA
    /// records, NXDOMAIN or NODATA, or publishes only records of unknown usage it could not
    /// parse) are the whole truth.
    Secure(Vec<Tlsa>),
    /// The name lies in (or is aliased into) an unsigned zone: whatever it holds cannot be
    /// trusted, so DANE does not apply (RFC 7672 §2.2).
    Insecure,
}

/// The DNSSEC status of an MX host's address records (RFC 7672 §2.2.2), which decides whether
/// its TLSA records are looked up at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressAnswer {
    /// The A/AAAA RRsets (and any CNAME chain leading to them) are DNSSEC-secure. `expanded`:
    /// the name the CNAME chain ends at, when the host name is an alias; the TLSA base domain
    /// is then that name first, and the host name itself second.
    Secure { expanded: Option<String> },
    /// Some address record (or alias on the way) lies in an unsigned zone, or the absence of
    /// addresses is not proven: the host gets no DANE.
    Insecure,
}

/// The most CNAME links followed from an MX host name to its addresses.
pub const MAX_CNAME_CHAIN: usize = 8;

/// DNSSEC status of one validated answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Security {
    Secure,
    Insecure,
}

/// One validated query: the matching records, or a proven (or unproven) absence.
enum Validated {
    Found(Vec<RData>, Security),
    Absent(Negative, Security),
}

impl Resolver {
    /// The TLSA records at `name` (e.g. `_25._tcp.mx.example.com`, RFC 7672 §2.2.3), validated.
    /// Secure records, or a secure denial (an empty list) → [`TlsaAnswer::Secure`]; an unsigned
    /// zone → [`TlsaAnswer::Insecure`]; failed validation → [`DnsError::Bogus`]; timeouts,
    /// SERVFAIL and the like → [`DnsError::Temporary`]. A resolver made by [`Resolver::new`]
    /// cannot tell secure from insecure, so it answers [`DnsError::Config`].
    pub async fn tlsa(&self, name: &str) -> Result<TlsaAnswer, DnsError> {
        let shown = display_name(name);
        let query = self.validated_name(name, &shown)?;
        match self.validated(query, RecordType::TLSA, &shown).await? {
            Validated::Found(_, Security::Insecure) | Validated::Absent(_, Security::Insecure) => {
                Ok(TlsaAnswer::Insecure)
            }
            Validated::Found(records, Security::Secure) => Ok(TlsaAnswer::Secure(
                records.iter().filter_map(to_tlsa).collect(),
            )),
            Validated::Absent(Negative::Temporary(why), _) => Err(DnsError::Temporary(format!(
                "TLSA lookup for {shown}: {why}"
            ))),
            Validated::Absent(_, Security::Secure) => Ok(TlsaAnswer::Secure(Vec::new())),
        }
    }

    /// [`Resolver::mx_hosts`], validated, with whether the MX RRset (or, for the implicit MX,
    /// the proof that there is none) is DNSSEC-secure (RFC 7672 §2.2.1: only then may the MX
    /// host names be the TLSA base domains). Failed validation → [`DnsError::Bogus`]; the
    /// other errors as for [`Resolver::mx_hosts`].
    pub async fn mx_secure(&self, domain: &str) -> Result<(Vec<MxHost>, bool), DnsError> {
        let shown = display_name(domain);
        let query = self.validated_name(domain, &shown)?;
        match self.validated(query, RecordType::MX, &shown).await? {
            Validated::Found(records, security) => {
                let secure = security == Security::Secure;
                let pairs: Vec<(u16, String)> = records
                    .iter()
                    .filter_map(|rdata| match rdata {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                if pairs.is_empty() {
                    Ok((implicit_mx(&shown), secure))
                } else {
                    Ok((order_mx(&shown, &pairs, &mut rand::rng())?, secure))
                }
            }
            Validated::Absent(Negative::NoData, security) => {
                Ok((implicit_mx(&shown), security == Security::Secure))
            }
            Validated::Absent(Negative::NxDomain, _) => Err(DnsError::NoSuchDomain(shown)),
            Validated::Absent(Negative::Temporary(why), _) => {
                Err(DnsError::Temporary(format!("MX lookup for {shown}: {why}")))
            }
        }
    }

    /// Whether the address records of MX host `host` are DNSSEC-secure (RFC 7672 §2.2.2: only
    /// then are its TLSA records looked up), and the name its CNAME chain expands to.
    ///
    /// The chain is followed here, one CNAME query per link (at most [`MAX_CNAME_CHAIN`]), and
    /// the addresses are asked at its end: every link must be secure, and so must the A and
    /// AAAA answers there (records, or the proven absence of a family). Asking A/AAAA at the
    /// alias itself would leave hickory to prove "CNAME, then no AAAA at the target", which it
    /// reports as bogus. One family failing temporarily while the other answers is ignored, as
    /// for [`Resolver::host_addresses`]. Failed validation → [`DnsError::Bogus`]; no answer →
    /// [`DnsError::Temporary`].
    pub async fn address_security(&self, host: &str) -> Result<AddressAnswer, DnsError> {
        let shown = display_name(host);
        let mut name = self.validated_name(host, &shown)?;
        let mut expanded = None;
        let mut links = 0;
        loop {
            let target = match self
                .validated(name.clone(), RecordType::CNAME, &shown)
                .await?
            {
                Validated::Found(records, security) => {
                    let target = records.iter().find_map(|r| match r {
                        RData::CNAME(cname) => Some(cname.0.clone()),
                        _ => None,
                    });
                    if target.is_some() && security == Security::Insecure {
                        return Ok(AddressAnswer::Insecure);
                    }
                    target
                }
                Validated::Absent(Negative::Temporary(why), _) => {
                    return Err(DnsError::Temporary(format!(
                        "CNAME lookup for {shown}: {why}"
                    )))
                }
                Validated::Absent(_, Security::Insecure) => return Ok(AddressAnswer::Insecure),
                Validated::Absent(_, Security::Secure) => None,
            };
            let Some(target) = target else { break };
            links += 1;
            if links > MAX_CNAME_CHAIN {
                return Err(DnsError::Temporary(format!(
                    "the CNAME chain of {shown} has more than {MAX_CNAME_CHAIN} links"
                )));
            }
            expanded = Some(display_name(&target.to_ascii()));
            name = target;
        }
        let (v4, v6) = tokio::join!(
            self.validated(name.clone(), RecordType::A, &shown),
            self.validated(name, RecordType::AAAA, &shown),
        );
        let answers = [v4?, v6?];
        let found_any = answers
            .iter()
            .any(|a| matches!(a, Validated::Found(records, _) if !records.is_empty()));
        let mut secure = true;
        let mut failures = Vec::new();
        for answer in &answers {
            match answer {
                Validated::Found(records, security) if !records.is_empty() || !found_any => {
                    secure &= *security == Security::Secure;
                }
                Validated::Absent(Negative::Temporary(why), _) => failures.push(why.clone()),
                Validated::Absent(_, security) if !found_any => {
                    secure &= *security == Security::Secure;
                }
                _ => {}
            }
        }
        if !found_any && !failures.is_empty() {
            return Err(DnsError::Temporary(format!(
                "address lookup for {shown}: {}",
                failures.join("; ")
            )));
        }
        Ok(if secure {
            AddressAnswer::Secure {
                expanded: expanded.filter(|e| *e != shown),
            }
        } else {
            AddressAnswer::Insecure
        })
    }

    /// Whether validation works from the trust anchor down: the DNSKEY records of `zone` (the
    /// anchor's own zone, `.` for the root keys) must be DNSSEC-secure. A resolver behind
    /// servers that strip or cannot serve DNSSEC records fails this, and every answer it gives
    /// would be bogus. Failure → [`DnsError::Bogus`] (or another error) with the reason.
    pub async fn dnssec_works(&self, zone: &str) -> Result<(), DnsError> {
        let shown = if zone.trim() == "." {
            ".".to_string()
        } else {
            display_name(zone)
        };
        if !self.validating {
            return Err(DnsError::Config(format!(
                "DNSSEC status of {shown} asked of a resolver that does not validate"
            )));
        }
        let name = if shown == "." {
            Name::root()
        } else {
            absolute_name(zone).ok_or_else(|| DnsError::NoSuchDomain(shown.clone()))?
        };
        match self.validated(name, RecordType::DNSKEY, &shown).await? {
            Validated::Found(keys, Security::Secure) if !keys.is_empty() => Ok(()),
            _ => Err(DnsError::Bogus(format!(
                "the DNSKEY records of {shown} are not DNSSEC-secure"
            ))),
        }
    }

    fn validated_name(&self, name: &str, shown: &str) -> Result<Name, DnsError> {
        if !self.validating {
            return Err(DnsError::Config(format!(
                "DNSSEC status of {shown} asked of a resolver that does not validate"
            )));
        }
        absolute_name(name).ok_or_else(|| DnsError::NoSuchDomain(shown.to_string()))
    }

    /// One validated query; bogus answers become [`DnsError::Bogus`].
    async fn validated(
        &self,
        name: Name,
        rtype: RecordType,
        shown: &str,
    ) -> Result<Validated, DnsError> {
        let bogus = |why: String| DnsError::Bogus(format!("{rtype} lookup for {shown}: {why}"));
        match self.inner.lookup(name, rtype).await {
            Ok(lookup) => {
                let security = security_of(lookup.answers()).map_err(bogus)?;
                let records = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data.clone())
                    .collect();
                Ok(Validated::Found(records, security))
            }
            Err(NetError::Dns(WireError::DnssecBogus)) => {
                Err(bogus("the answer is bogus".to_string()))
            }
            Err(NetError::Dns(WireError::Nsec { proof, .. })) => {
                Err(bogus(format!("the denial of existence is {proof}")))
            }
            Err(err) => {
                let negative = classify(&err);
                let security = match &err {
                    NetError::Dns(WireError::NoRecordsFound(NoRecords {
                        authorities: Some(authorities),
                        response_code: ResponseCode::NXDomain | ResponseCode::NoError,
                        ..
                    })) if !authorities.is_empty() => security_of(authorities).map_err(bogus)?,
                    // No authority records: nothing proves the denial.
                    _ => Security::Insecure,
                };
                Ok(Validated::Absent(negative, security))
            }
        }
    }
}

/// Secure when every record but the signatures is secure; insecure when some is insecure and
/// none is bogus; the reason otherwise.
fn security_of(records: &[Record]) -> Result<Security, String> {
    let mut security = Security::Secure;
    for record in records
        .iter()
        .filter(|r| r.record_type() != RecordType::RRSIG)
    {
        match record.proof {
            Proof::Secure => {}
            Proof::Insecure => security = Security::Insecure,
            other => {
                return Err(format!(
                    "{} {} is {other}",
                    record.name,
                    record.record_type()
                ))
            }
        }
    }
    Ok(security)
}

/// A TLSA RDATA as the certificate side reads it.
fn to_tlsa(rdata: &RData) -> Option<Tlsa> {
    match rdata {
        RData::TLSA(tlsa) => Some(Tlsa {
            usage: tlsa.cert_usage.into(),
            selector: tlsa.selector.into(),
            matching: tlsa.matching.into(),
            data: tlsa.cert_data.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector, TLSA};
    use hickory_resolver::proto::rr::rdata::A;

    fn record(proof: Proof) -> Record {
        let mut record = Record::from_rdata(
            Name::from_ascii("mx.example.test.").unwrap(),
            300,
            RData::A(A::new(192, 0, 2, 1)),
        );
        record.proof = proof;
        record
    }

    #[test]
    fn one_insecure_record_makes_the_answer_insecure() {
        let all = [record(Proof::Secure), record(Proof::Secure)];
        assert_eq!(security_of(&all), Ok(Security::Secure));
        let mixed = [record(Proof::Secure), record(Proof::Insecure)];
        assert_eq!(security_of(&mixed), Ok(Security::Insecure));
    }

    #[test]
    fn bogus_and_indeterminate_are_failures() {
        for proof in [Proof::Bogus, Proof::Indeterminate] {
            let records = [record(Proof::Insecure), record(proof)];
            let why = security_of(&records).unwrap_err();
            assert!(why.contains("mx.example.test"), "{why}");
        }
    }

    #[test]
    fn tlsa_rdata_keeps_its_fields() {
        let rdata = RData::TLSA(TLSA::new(
            CertUsage::DaneEe,
            Selector::Spki,
            Matching::Sha256,
            vec![1, 2, 3],
        ));
        let tlsa = to_tlsa(&rdata).unwrap();
        assert_eq!((tlsa.usage, tlsa.selector, tlsa.matching), (3, 1, 1));
        assert_eq!(tlsa.data, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_plain_resolver_refuses_tlsa() {
        let resolver = Resolver::new(&["127.0.0.1:9".parse().unwrap()]).unwrap();
        let err = resolver.tlsa("_25._tcp.mx.example.test").await.unwrap_err();
        assert!(matches!(err, DnsError::Config(_)), "{err}");
    }
}
