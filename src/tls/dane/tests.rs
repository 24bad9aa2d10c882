//! TLSA matching on certificates made here: DANE-EE by certificate and key with each digest,
//! without name or date checks; DANE-TA through a presented root or intermediate, with the name
//! and date checks it requires; unusable records; the presentation format.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use super::*;

fn ca(
    name: &str,
    parent: Option<&CertifiedIssuer<'static, KeyPair>>,
) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    match parent {
        Some(p) => CertifiedIssuer::signed_by(params, key, p).unwrap(),
        None => CertifiedIssuer::self_signed(params, key).unwrap(),
    }
}

/// A server certificate for `name`, issued by `issuer`, expired when `expired`.
fn server(
    name: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    expired: bool,
) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    params
        .signed_by(&KeyPair::generate().unwrap(), issuer)
        .unwrap()
        .der()
        .clone()
}

fn record(usage: u8, selector: u8, matching: u8, cert: &[u8]) -> Tlsa {
    Tlsa::for_certificate(usage, selector, matching, cert).unwrap()
}

fn names() -> Vec<String> {
    vec!["good.test".into(), "mx.good.test".into()]
}

fn now() -> UnixTime {
    UnixTime::now()
}

#[test]
fn dane_ee_matches_the_certificate_or_its_key_with_each_matching_type() {
    let root = ca("root", None);
    let leaf = server("mx.good.test", &root, false);
    for (selector, matching) in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)] {
        let r = record(DANE_EE, selector, matching, &leaf);
        assert!(r.usable(), "{r}");
        let said = verify(&[r], &names(), std::slice::from_ref(&leaf), now()).unwrap();
        assert_eq!(
            said,
            format!("DANE-EE matched TLSA 3 {selector} {matching}")
        );
    }
}

#[test]
fn dane_ee_checks_neither_names_nor_dates() {
    let root = ca("root", None);
    let leaf = server("somewhere.else.test", &root, true);
    let r = record(DANE_EE, 1, 1, &leaf);
    assert!(verify(&[r], &names(), &[leaf], now()).is_ok());
}

#[test]
fn another_key_does_not_match() {
    let root = ca("root", None);
    let leaf = server("mx.good.test", &root, false);
    let other = server("mx.good.test", &root, false);
    let e = verify(&[record(DANE_EE, 1, 1, &other)], &names(), &[leaf], now()).unwrap_err();
    assert!(matches!(e, CertificateFailure::DaneMismatch(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "DANE: no certificate presented matches the 1 usable TLSA record(s)"
    );
    assert_eq!(
        super::super::failure::TlsFailure::Certificate(e).tlsrpt_result_type(),
        "tlsa-invalid"
    );
}

#[test]
fn dane_ta_verifies_the_chain_to_the_presented_anchor_and_the_name() {
    let root = ca("root", None);
    let inter = ca("intermediate", Some(&root));
    let leaf = server("mx.good.test", &inter, false);
    let chain = [leaf.clone(), inter.der().clone(), root.der().clone()];
    // The root or the intermediate as anchor, by certificate or key.
    for anchor in [root.der(), inter.der()] {
        for selector in [0, 1] {
            let r = record(DANE_TA, selector, 1, anchor);
            let said = verify(&[r], &names(), &chain, now()).unwrap();
            assert!(said.starts_with("DANE-TA matched TLSA 2"), "{said}");
            assert!(said.ends_with("verified mx.good.test"), "{said}");
        }
    }
    let by_root = record(DANE_TA, 0, 1, root.der());
    // The name must be one of the reference identifiers.
    let e = verify(
        std::slice::from_ref(&by_root),
        &["mx.other.test".into()],
        &chain,
        now(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        CertificateFailure::NameMismatch {
            wanted: "mx.other.test".into()
        }
    );
    // An anchor the server does not present is not found.
    let short = [leaf.clone(), inter.der().clone()];
    let e = verify(std::slice::from_ref(&by_root), &names(), &short, now()).unwrap_err();
    assert!(matches!(e, CertificateFailure::DaneMismatch(_)), "{e}");
    // A DANE-TA record for the server certificate itself does not make it an anchor.
    let e = verify(&[record(DANE_TA, 0, 1, &leaf)], &names(), &chain, now()).unwrap_err();
    assert!(matches!(e, CertificateFailure::DaneMismatch(_)), "{e}");
    // Dates count under DANE-TA.
    let old = server("mx.good.test", &root, true);
    let e = verify(&[by_root], &names(), &[old, root.der().clone()], now()).unwrap_err();
    assert_eq!(e, CertificateFailure::Expired);
}

#[test]
fn a_presented_certificate_that_does_not_chain_to_the_anchor_fails() {
    let root = ca("root", None);
    let stranger = ca("stranger", None);
    let leaf = server("mx.good.test", &stranger, false);
    // The server presents the root, but its certificate was issued by someone else.
    let chain = [leaf, root.der().clone()];
    let e = verify(
        &[record(DANE_TA, 0, 1, root.der())],
        &names(),
        &chain,
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(e, CertificateFailure::DaneMismatch(ref d) if d.contains("does not verify")),
        "{e}"
    );
}

#[test]
fn unusable_records_are_ignored_and_alone_mean_unauthenticated_tls() {
    let root = ca("root", None);
    let leaf = server("mx.good.test", &root, false);
    let pkix_ee = record(1, 1, 1, &leaf);
    let mut short = record(DANE_EE, 1, 1, &leaf);
    short.data.pop();
    let mut bad_selector = record(DANE_EE, 1, 1, &leaf);
    bad_selector.selector = 2;
    let mut bad_usage = record(DANE_EE, 1, 1, &leaf);
    bad_usage.usage = 4;
    let unusable = [pkix_ee, short, bad_selector, bad_usage];
    assert!(unusable.iter().all(|r| !r.usable()));
    let said = verify(&unusable, &names(), std::slice::from_ref(&leaf), now()).unwrap();
    assert!(said.contains("none usable"), "{said}");
    // Next to a usable record that does not match, they change nothing.
    let other = server("mx.good.test", &root, false);
    let mut records = unusable.to_vec();
    records.push(record(DANE_EE, 1, 1, &other));
    assert!(verify(&records, &names(), &[leaf], now()).is_err());
    assert_eq!(
        verify(&records, &names(), &[], now()).unwrap_err(),
        CertificateFailure::Missing
    );
}

#[test]
fn presentation_format_reads_and_writes() {
    let r = Tlsa::parse("3 1 1 0123 4567\t89ab").unwrap();
    assert_eq!((r.usage, r.selector, r.matching), (3, 1, 1));
    assert_eq!(r.data, [0x01, 0x23, 0x45, 0x67, 0x89, 0xab]);
    assert_eq!(r.to_string(), "3 1 1 0123456789ab");
    assert!(!r.usable(), "SHA-256 data must be 32 bytes");
    for bad in ["", "3 1", "3 1 1", "3 1 1 xyz", "256 1 1 00", "-1 1 1 00"] {
        assert!(Tlsa::parse(bad).is_err(), "{bad:?}");
    }
}
