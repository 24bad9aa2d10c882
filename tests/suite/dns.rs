//! The real resolver against a real (loopback) DNS server: MX routing and address lookups.

use crate::support;

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sealpost::dns::{DnsError, MxHost, Resolver};
use support::dns::{Record, RecordType, TestDnsServer};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn hosts(list: &[MxHost]) -> Vec<(u16, &str)> {
    list.iter()
        .map(|h| (h.preference, h.host.as_str()))
        .collect()
}

#[tokio::test]
async fn mx_hosts_come_in_preference_order() -> TestResult {
    let dns = TestDnsServer::start(vec![
        Record::mx("example.test", 20, "mx2.example.test"),
        Record::mx("example.test", 10, "MX1.example.test"),
        Record::mx("example.test", 30, "mx3.example.test"),
        Record::a("mx1.example.test", "127.0.0.1".parse()?),
    ]);
    let got = dns.resolver().mx_hosts("Example.Test.").await?;
    assert_eq!(
        hosts(&got),
        [
            (10, "mx1.example.test"),
            (20, "mx2.example.test"),
            (30, "mx3.example.test")
        ]
    );
    assert_eq!(dns.queries_for("example.test", RecordType::MX), 1);
    Ok(())
}

#[tokio::test]
async fn equal_preferences_are_shuffled_from_one_cached_answer() -> TestResult {
    let dns = TestDnsServer::start(vec![
        Record::mx("tie.test", 10, "a.tie.test"),
        Record::mx("tie.test", 10, "b.tie.test"),
        Record::mx("tie.test", 5, "first.tie.test"),
    ]);
    let resolver = dns.resolver();
    let mut seconds = HashSet::new();
    for _ in 0..64 {
        let got = resolver.mx_hosts("tie.test").await?;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].host, "first.tie.test");
        assert_eq!((got[1].preference, got[2].preference), (10, 10));
        seconds.insert(got[1].host.clone());
    }
    assert_eq!(
        seconds.len(),
        2,
        "both tied hosts should come second sometimes"
    );
    // The positive cache served the repeats.
    assert_eq!(dns.queries_for("tie.test", RecordType::MX), 1);
    Ok(())
}

#[tokio::test]
async fn domain_without_mx_gets_the_implicit_mx() -> TestResult {
    let dns = TestDnsServer::start(vec![Record::a("only-a.test", "127.0.0.2".parse()?)]);
    let resolver = dns.resolver();
    let got = resolver.mx_hosts("only-a.test").await?;
    assert_eq!(
        got,
        vec![MxHost {
            preference: 0,
            host: "only-a.test".into()
        }]
    );
    let addrs = resolver.host_addresses(&got[0].host).await?;
    assert_eq!(addrs, vec!["127.0.0.2".parse::<IpAddr>()?]);
    Ok(())
}

#[tokio::test]
async fn null_mx_is_a_permanent_refusal() -> TestResult {
    let dns = TestDnsServer::start(vec![
        Record::null_mx("nomail.test"),
        Record::a("nomail.test", "127.0.0.3".parse()?),
    ]);
    let err = dns.resolver().mx_hosts("nomail.test").await.unwrap_err();
    assert_eq!(err, DnsError::NullMx("nomail.test".into()));
    assert!(err.is_permanent());
    Ok(())
}

#[tokio::test]
async fn nxdomain_is_no_such_domain() -> TestResult {
    let dns = TestDnsServer::start(vec![Record::mx("example.test", 10, "mx.example.test")]);
    let resolver = dns.resolver();
    let err = resolver.mx_hosts("missing.test").await.unwrap_err();
    assert_eq!(err, DnsError::NoSuchDomain("missing.test".into()));
    assert!(err.is_permanent());
    assert!(err.to_string().contains("missing.test"));
    let err = resolver.host_addresses("missing.test").await.unwrap_err();
    assert_eq!(err, DnsError::NoAddress("missing.test".into()));
    Ok(())
}

#[tokio::test]
async fn negative_answers_are_not_cached() -> TestResult {
    // The server's SOA says "cache this NXDOMAIN for an hour"; the resolver must ask again.
    let dns = TestDnsServer::start(vec![]);
    let resolver = dns.resolver();
    let err = resolver.mx_hosts("late.test").await.unwrap_err();
    assert_eq!(err, DnsError::NoSuchDomain("late.test".into()));
    dns.set_records(vec![Record::mx("late.test", 10, "mx.late.test")]);
    let got = resolver.mx_hosts("late.test").await?;
    assert_eq!(hosts(&got), [(10, "mx.late.test")]);
    assert_eq!(dns.queries_for("late.test", RecordType::MX), 2);
    Ok(())
}

#[tokio::test]
async fn invalid_domain_is_permanent_without_a_query() -> TestResult {
    let dns = TestDnsServer::start(vec![]);
    let err = dns.resolver().mx_hosts("bad..test").await.unwrap_err();
    assert!(
        matches!(err, DnsError::NoSuchDomain(ref d) if d == "bad..test"),
        "{err:?}"
    );
    assert_eq!(dns.query_count(), 0);
    Ok(())
}

#[tokio::test]
async fn host_addresses_returns_a_then_aaaa() -> TestResult {
    let dns = TestDnsServer::start(vec![
        Record::aaaa("dual.test", "::1".parse()?),
        Record::a("dual.test", "127.0.0.1".parse()?),
        Record::a("dual.test", "127.0.0.4".parse()?),
    ]);
    let addrs = dns.resolver().host_addresses("dual.test").await?;
    let want: Vec<IpAddr> = vec!["127.0.0.1".parse()?, "127.0.0.4".parse()?, "::1".parse()?];
    assert_eq!(addrs, want);
    assert_eq!(dns.queries_for("dual.test", RecordType::A), 1);
    assert_eq!(dns.queries_for("dual.test", RecordType::AAAA), 1);
    Ok(())
}

#[tokio::test]
async fn name_without_addresses_is_no_address() -> TestResult {
    let dns = TestDnsServer::start(vec![Record::txt("text-only.test", "v=spf1 -all")]);
    let err = dns
        .resolver()
        .host_addresses("text-only.test")
        .await
        .unwrap_err();
    assert_eq!(err, DnsError::NoAddress("text-only.test".into()));
    assert!(err.is_permanent());
    Ok(())
}

#[tokio::test]
async fn cname_is_followed_to_the_address() -> TestResult {
    let dns = TestDnsServer::start(vec![
        Record::mx("alias.test", 10, "mail.alias.test"),
        Record::cname("mail.alias.test", "real.other.test"),
        Record::a("real.other.test", "127.0.0.5".parse()?),
    ]);
    let resolver = dns.resolver();
    let mx = resolver.mx_hosts("alias.test").await?;
    let addrs = resolver.host_addresses(&mx[0].host).await?;
    assert_eq!(addrs, vec!["127.0.0.5".parse::<IpAddr>()?]);
    Ok(())
}

#[tokio::test]
async fn servfail_is_temporary() -> TestResult {
    let dns = TestDnsServer::start(vec![Record::servfail("broken.test")]);
    let resolver = dns.resolver();
    let err = resolver.mx_hosts("broken.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Temporary(_)), "{err:?}");
    assert!(!err.is_permanent());
    assert!(err.to_string().contains("broken.test"), "{err}");
    let err = resolver.host_addresses("broken.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Temporary(_)), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn one_failing_family_does_not_hide_the_other() -> TestResult {
    let dns = TestDnsServer::start(vec![
        Record::a("half.test", "127.0.0.6".parse()?),
        Record::servfail("half.test").for_type(RecordType::AAAA),
        Record::servfail("none.test").for_type(RecordType::AAAA),
        Record::txt("none.test", "exists"),
    ]);
    let resolver = dns.resolver();
    let addrs = resolver.host_addresses("half.test").await?;
    assert_eq!(addrs, vec!["127.0.0.6".parse::<IpAddr>()?]);
    // No A and a failed AAAA: there may be an address we could not see, so defer.
    let err = resolver.host_addresses("none.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Temporary(_)), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn silent_server_is_temporary_within_a_few_seconds() -> TestResult {
    let dns = TestDnsServer::start(vec![Record::no_answer("slow.test")]);
    let started = Instant::now();
    let err = dns.resolver().mx_hosts("slow.test").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, DnsError::Temporary(_)), "{err:?}");
    assert!(err.to_string().contains("slow.test"), "{err}");
    assert!(took < Duration::from_secs(7), "took {took:?}");
    assert!(
        took >= Duration::from_secs(1),
        "gave up too early: {took:?}"
    );
    assert!(
        dns.queries_for("slow.test", RecordType::MX) >= 2,
        "{:?}",
        dns.queries()
    );
    Ok(())
}

#[tokio::test]
async fn truncated_udp_answer_is_retried_over_tcp() -> TestResult {
    let mut records: Vec<Record> = (0..40)
        .map(|i| {
            Record::mx(
                "big.test",
                10 + i,
                &format!("mx{i:02}.{}.test", long_label(i)),
            )
        })
        .collect();
    records.push(Record::a("big.test", "127.0.0.7".parse()?));
    let dns = TestDnsServer::start(records);
    let got = dns.resolver().mx_hosts("big.test").await?;
    assert_eq!(got.len(), 40);
    assert_eq!(got[0].host, format!("mx00.{}.test", long_label(0)));
    assert_eq!(got[39].preference, 49);
    assert!(dns.queries().iter().any(|q| q.tcp), "{:?}", dns.queries());
    Ok(())
}

/// A label that name compression cannot share between records.
fn long_label(i: u16) -> String {
    format!("mail-exchanger-number-{i:02}-in-its-own-zone")
}

#[tokio::test]
async fn a_dead_server_is_temporary() -> TestResult {
    // Start and stop a server to get a loopback port that nothing listens on.
    let addr = TestDnsServer::start(vec![]).addr();
    let resolver = Resolver::new(&[addr])?;
    let err = resolver.host_addresses("any.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Temporary(_)), "{err:?}");
    Ok(())
}

#[test]
fn system_configuration_is_used_or_reported() {
    let readable = std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| {
            text.lines()
                .any(|l| l.trim_start().starts_with("nameserver"))
        })
        .unwrap_or(false);
    match Resolver::new(&[]) {
        Ok(_) => assert!(
            readable,
            "built a resolver without a usable /etc/resolv.conf"
        ),
        Err(err) => {
            assert!(!readable, "failed despite a usable /etc/resolv.conf: {err}");
            assert!(matches!(err, DnsError::Config(_)), "{err:?}");
        }
    }
}
