//! Readers proven by client certificates: the fixture S/MIME certificates, a second CA, and
//! certificates made here for the cases the fixtures do not cover.

use std::path::{Path, PathBuf};

use rcgen::{date_time_ymd, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::*;

fn pki() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki")
}

fn anchors(path: &Path) -> TrustAnchors {
    crate::tls::load_trust_anchors(path).unwrap()
}

fn trust(domains: &[&str], ca: &Path) -> ReaderTrust {
    ReaderTrust::new(vec![DomainTrust {
        domains: DomainSet::new(domains),
        anchors: anchors(ca),
    }])
}

fn fixture(address: &str) -> Vec<CertificateDer<'static>> {
    let path = pki().join(format!("smime/{address}.crt"));
    CertificateDer::pem_file_iter(&path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A certificate from the fixture CA for `address`, changed by `edit` first.
fn issued(
    address: &str,
    edit: impl FnOnce(&mut rcgen::CertificateParams),
) -> Vec<CertificateDer<'static>> {
    let issuer =
        crate::crypto::smime_pki::load_ca(&pki().join("ca.crt"), &pki().join("ca.key")).unwrap();
    let mut params = crate::crypto::smime_pki::smime_params(address).unwrap();
    edit(&mut params);
    let key = KeyPair::generate().unwrap();
    vec![params.signed_by(&key, &issuer).unwrap().der().clone()]
}

fn now() -> UnixTime {
    UnixTime::now()
}

#[test]
fn a_reader_certificate_from_a_ca_trusted_for_its_domain_names_the_principal() {
    let t = trust(&["fabrikam.test"], &pki().join("ca.crt"));
    assert_eq!(
        t.principal(&fixture("bob@fabrikam.test"), now()).unwrap(),
        "bob@fabrikam.test"
    );
    // Case in the certificate does not make another principal.
    let upper = issued("Dave@Fabrikam.TEST", |_| {});
    assert_eq!(t.principal(&upper, now()).unwrap(), "dave@fabrikam.test");
}

#[test]
fn a_ca_trusted_for_one_domain_cannot_name_readers_in_another() {
    let contoso_only = trust(&["contoso.test"], &pki().join("ca.crt"));
    let e = contoso_only
        .principal(&fixture("bob@fabrikam.test"), now())
        .unwrap_err();
    assert_eq!(
        e,
        IdentityError::DomainNotTrusted {
            principal: "bob@fabrikam.test".into()
        }
    );
    assert!(e.to_string().contains("domain of bob@fabrikam.test"), "{e}");
    // A wildcard address is never a principal, whatever the CA.
    let wildcard = issued("*@fabrikam.test", |_| {});
    let e = contoso_only.principal(&wildcard, now()).unwrap_err();
    assert!(matches!(e, IdentityError::NoPrincipal(_)), "{e}");
    let both = trust(&["contoso.test", "fabrikam.test"], &pki().join("ca.crt"));
    assert!(matches!(
        both.principal(&wildcard, now()),
        Err(IdentityError::NoPrincipal(_))
    ));
}

#[test]
fn a_chain_to_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    crate::crypto::pki::generate(dir.path(), &[]).unwrap();
    let other = trust(&["fabrikam.test"], &dir.path().join("ca.crt"));
    let e = other
        .principal(&fixture("bob@fabrikam.test"), now())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "client certificate for bob@fabrikam.test is not trusted: it does not chain to ca.crt"
    );
    // The right CA listed as well: the certificate is accepted through it.
    let mut entries = vec![DomainTrust {
        domains: DomainSet::new(["fabrikam.test"]),
        anchors: anchors(&dir.path().join("ca.crt")),
    }];
    entries.push(DomainTrust {
        domains: DomainSet::new(["fabrikam.test"]),
        anchors: anchors(&pki().join("ca.crt")),
    });
    let t = ReaderTrust::new(entries);
    assert_eq!(
        t.principal(&fixture("bob@fabrikam.test"), now()).unwrap(),
        "bob@fabrikam.test"
    );
}

#[test]
fn expired_certificates_and_wrong_purposes_are_refused() {
    let t = trust(&["fabrikam.test"], &pki().join("ca.crt"));
    let expired = issued("bob@fabrikam.test", |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    let e = t.principal(&expired, now()).unwrap_err();
    assert!(e.to_string().ends_with("it has expired"), "{e}");
    let server_only = issued("bob@fabrikam.test", |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    let e = t.principal(&server_only, now()).unwrap_err();
    assert!(
        e.to_string()
            .contains("neither email protection nor client authentication"),
        "{e}"
    );
    let client_auth = issued("bob@fabrikam.test", |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    });
    assert_eq!(
        t.principal(&client_auth, now()).unwrap(),
        "bob@fabrikam.test"
    );
}

#[test]
fn a_certificate_must_name_exactly_one_address() {
    let t = trust(&["fabrikam.test"], &pki().join("ca.crt"));
    assert_eq!(t.principal(&[], now()), Err(IdentityError::NoCertificate));
    let server: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki().join("mx.fabrikam.test.crt"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let e = t.principal(&server, now()).unwrap_err();
    assert!(e.to_string().contains("no email address"), "{e}");
    let two = issued("bob@fabrikam.test", |p| {
        p.subject_alt_names.push(SanType::Rfc822Name(
            "dave@fabrikam.test".try_into().unwrap(),
        ));
    });
    let e = t.principal(&two, now()).unwrap_err();
    assert!(e.to_string().contains("names 2 addresses"), "{e}");
    let e = t
        .principal(&[CertificateDer::from(vec![0x30, 0x00])], now())
        .unwrap_err();
    assert!(matches!(e, IdentityError::Malformed(_)), "{e}");
}
