//! DNSSEC-validated TLSA and MX lookups (RFC 7672 §2.2) against real signed zones served by NSD.

use crate::support;

use std::time::Duration;

use sealpost::dns::{AddressAnswer, DnsError, Resolver, TlsaAnswer};
use support::dnssec::{SignedZones, TLSA_DATA};

fn validating(zones: &SignedZones) -> Resolver {
    Resolver::validating(&[zones.addr()], Some(zones.anchor())).expect("validating resolver")
}

#[tokio::test]
async fn secure_insecure_and_bogus_tlsa_answers() {
    let Some(zones) = SignedZones::start() else {
        return;
    };
    let resolver = validating(&zones);
    let lookup = |name: &'static str| {
        let resolver = resolver.clone();
        async move { tokio::time::timeout(Duration::from_secs(20), resolver.tlsa(name)).await }
    };

    // A signed zone with a chain to the anchor: the records as published.
    match lookup("_25._tcp.mx.good.dane.test").await.unwrap() {
        Ok(TlsaAnswer::Secure(records)) => {
            assert_eq!(records.len(), 1, "{records:?}");
            let tlsa = &records[0];
            assert_eq!((tlsa.usage, tlsa.selector, tlsa.matching), (3, 1, 1));
            assert_eq!(hex::encode(&tlsa.data), TLSA_DATA);
        }
        other => panic!("expected secure TLSA records, got {other:?}"),
    }

    // A secure name without TLSA records (NODATA), and one that does not exist (NXDOMAIN):
    // proven absent, so a secure empty answer.
    for name in ["nomx.good.dane.test", "_25._tcp.gone.good.dane.test"] {
        assert_eq!(
            lookup(name).await.unwrap(),
            Ok(TlsaAnswer::Secure(Vec::new())),
            "{name}"
        );
    }

    // Delegated without DS: the parent proves the child unsigned, so no DANE.
    assert_eq!(
        lookup("_25._tcp.mx.plain.dane.test").await.unwrap(),
        Ok(TlsaAnswer::Insecure)
    );
    assert_eq!(
        lookup("_25._tcp.gone.plain.dane.test").await.unwrap(),
        Ok(TlsaAnswer::Insecure)
    );

    // The parent's DS does not match the child's key: bogus, a temporary failure.
    match lookup("_25._tcp.mx.bogus.dane.test").await.unwrap() {
        Err(err @ DnsError::Bogus(_)) => {
            assert!(!err.is_permanent());
            assert!(err.to_string().contains("bogus.dane.test"), "{err}");
        }
        other => panic!("expected a bogus answer, got {other:?}"),
    }
}

#[tokio::test]
async fn mx_and_address_lookups_through_a_validating_resolver() {
    let Some(zones) = SignedZones::start() else {
        return;
    };
    let resolver = validating(&zones);

    let (hosts, secure) = resolver.mx_secure("good.dane.test").await.unwrap();
    assert!(secure);
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0].preference, 10);
    assert_eq!(hosts[0].host, "mx.good.dane.test");

    // No MX records, proven: the implicit MX, secure.
    let (hosts, secure) = resolver.mx_secure("nomx.good.dane.test").await.unwrap();
    assert!(secure);
    assert_eq!(hosts[0].host, "nomx.good.dane.test");

    let (_, secure) = resolver.mx_secure("plain.dane.test").await.unwrap();
    assert!(!secure, "an unsigned zone's MX records are not secure");

    let err = resolver.mx_secure("bogus.dane.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Bogus(_)), "{err}");
    let err = resolver.mx_secure("gone.good.dane.test").await.unwrap_err();
    assert_eq!(err, DnsError::NoSuchDomain("gone.good.dane.test".into()));

    // The lookups delivery uses today work unchanged on signed and unsigned zones.
    let hosts = resolver.mx_hosts("good.dane.test").await.unwrap();
    assert_eq!(hosts[0].host, "mx.good.dane.test");
    let addrs = resolver.host_addresses("mx.good.dane.test").await.unwrap();
    assert_eq!(
        addrs,
        vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let addrs = resolver.host_addresses("mx.plain.dane.test").await.unwrap();
    assert_eq!(
        addrs,
        vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let err = resolver.mx_hosts("bogus.dane.test").await.unwrap_err();
    assert!(!err.is_permanent(), "a bogus MX answer must defer: {err}");
}

#[test]
fn an_unreadable_trust_anchor_is_a_configuration_error() {
    let err = Resolver::validating(&[], Some(std::path::Path::new("/nonexistent/anchor.key")))
        .unwrap_err();
    assert!(matches!(err, DnsError::Config(_)), "{err}");
    assert!(err.to_string().contains("/nonexistent/anchor.key"), "{err}");
}

#[tokio::test]
async fn without_the_zones_anchor_nothing_is_secure() {
    let Some(zones) = SignedZones::start() else {
        return;
    };
    // The IANA root keys: dane.test. has no chain to them.
    let resolver = Resolver::validating(&[zones.addr()], None).unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        resolver.tlsa("_25._tcp.mx.good.dane.test"),
    )
    .await
    .unwrap();
    assert!(
        !matches!(answer, Ok(TlsaAnswer::Secure(_))),
        "secure without a trust anchor: {answer:?}"
    );
}

#[tokio::test]
async fn mx_host_address_security_and_cname_expansion() {
    let Some(zones) = SignedZones::start() else {
        return;
    };
    let resolver = validating(&zones);
    let security = |name: &'static str| {
        let resolver = resolver.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(20), resolver.address_security(name))
                .await
                .unwrap()
        }
    };
    // A signed zone's own address records: secure, nothing to expand.
    assert_eq!(
        security("mx.good.dane.test").await,
        Ok(AddressAnswer::Secure { expanded: None })
    );
    // A secure CNAME chain: secure, and the name it ends at is the first TLSA base domain.
    assert_eq!(
        security("alias.good.dane.test").await,
        Ok(AddressAnswer::Secure {
            expanded: Some("mx.good.dane.test".into())
        })
    );
    // Addresses in an unsigned zone, directly or through a secure alias: no DANE, although
    // `_25._tcp.alias-plain.good.dane.test` itself is a secure TLSA record.
    assert_eq!(
        security("mx.plain.dane.test").await,
        Ok(AddressAnswer::Insecure)
    );
    assert_eq!(
        security("alias-plain.good.dane.test").await,
        Ok(AddressAnswer::Insecure)
    );
    assert!(matches!(
        resolver.tlsa("_25._tcp.alias-plain.good.dane.test").await,
        Ok(TlsaAnswer::Secure(ref r)) if !r.is_empty()
    ));
    // Bogus addresses, directly or through an alias: a temporary failure.
    for name in ["mx.bogus.dane.test", "alias-bogus.good.dane.test"] {
        match security(name).await {
            Err(err @ DnsError::Bogus(_)) => assert!(!err.is_permanent(), "{err}"),
            other => panic!("{name}: expected bogus, got {other:?}"),
        }
    }
}
