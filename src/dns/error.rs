//! DNS errors as the delivery layer sees them, and the mapping from hickory's errors.

use hickory_resolver::net::{DnsError as WireError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;

/// Why a routing lookup failed; permanent variants bounce, the others defer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The domain does not exist (NXDOMAIN), or is not a valid domain name.
    #[error("domain {0} does not exist")]
    NoSuchDomain(String),
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    #[error("domain {0} does not accept mail (null MX, RFC 7505)")]
    NullMx(String),
    /// The host has neither A nor AAAA records.
    #[error("host {0} has no A or AAAA address")]
    NoAddress(String),
    /// Timeout, SERVFAIL, refused, network error: try again later.
    /// The text names the domain, the record type and the cause.
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
    /// DNSSEC validation failed (bogus or indeterminate, RFC 4035 §4.3): the answer cannot be
    /// trusted, nor can its absence; delivery that depends on it must wait, never downgrade.
    /// The text names the name, the record type and the cause.
    #[error("DNSSEC validation failed: {0}")]
    Bogus(String),
    /// The resolver could not be configured (e.g. unreadable /etc/resolv.conf).
    #[error("DNS resolver configuration: {0}")]
    Config(String),
}

impl DnsError {
    /// True when retrying cannot help: NoSuchDomain, NullMx, NoAddress.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DnsError::NoSuchDomain(_) | DnsError::NullMx(_) | DnsError::NoAddress(_)
        )
    }
}

/// What a failed lookup of one name and type means for routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Negative {
    /// NXDOMAIN: the name does not exist at all.
    NxDomain,
    /// NOERROR with no records of the asked type: the name exists.
    NoData,
    /// Anything else; the text says what happened.
    Temporary(String),
}

/// Classify a hickory error; only NXDOMAIN and NODATA answers are authoritative negatives.
pub(crate) fn classify(err: &NetError) -> Negative {
    match err {
        NetError::Dns(WireError::NoRecordsFound(NoRecords { response_code, .. })) => {
            match *response_code {
                ResponseCode::NXDomain => Negative::NxDomain,
                ResponseCode::NoError => Negative::NoData,
                other => Negative::Temporary(format!("server answered {other}")),
            }
        }
        NetError::Dns(WireError::ResponseCode(code)) => {
            Negative::Temporary(format!("server answered {code}"))
        }
        NetError::Timeout => Negative::Temporary("timed out".to_string()),
        other => Negative::Temporary(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::{Name, RecordType};

    fn no_records(code: ResponseCode) -> NetError {
        let query = Query::query(Name::root(), RecordType::MX);
        NetError::Dns(WireError::NoRecordsFound(NoRecords::new(query, code)))
    }

    #[test]
    fn nxdomain_and_nodata_are_told_apart() {
        assert_eq!(
            classify(&no_records(ResponseCode::NXDomain)),
            Negative::NxDomain
        );
        assert_eq!(
            classify(&no_records(ResponseCode::NoError)),
            Negative::NoData
        );
    }

    #[test]
    fn servfail_timeout_and_refused_are_temporary() {
        let servfail = NetError::Dns(WireError::ResponseCode(ResponseCode::ServFail));
        let refused = NetError::Dns(WireError::ResponseCode(ResponseCode::Refused));
        for err in [
            servfail,
            refused,
            NetError::Timeout,
            NetError::NoConnections,
        ] {
            assert!(
                matches!(classify(&err), Negative::Temporary(_)),
                "{err} should be temporary"
            );
        }
        match classify(&NetError::Dns(WireError::ResponseCode(
            ResponseCode::ServFail,
        ))) {
            Negative::Temporary(text) => assert!(text.contains("Server Failure"), "{text}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn permanence_follows_the_variant() {
        let d = "example.test".to_string();
        assert!(DnsError::NoSuchDomain(d.clone()).is_permanent());
        assert!(DnsError::NullMx(d.clone()).is_permanent());
        assert!(DnsError::NoAddress(d.clone()).is_permanent());
        assert!(!DnsError::Temporary(d.clone()).is_permanent());
        assert!(!DnsError::Bogus(d.clone()).is_permanent());
        assert!(!DnsError::Config(d).is_permanent());
    }

    #[test]
    fn messages_name_the_domain() {
        let text = DnsError::NullMx("nomail.test".into()).to_string();
        assert!(text.contains("nomail.test"), "{text}");
        let text = DnsError::NoSuchDomain("gone.test".into()).to_string();
        assert!(text.contains("gone.test"), "{text}");
    }
}
