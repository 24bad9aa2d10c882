//! Every branch of the decision, on fixture keys and certificates.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::crypto::keys::DecryptKey;
use crate::crypto::rms::{
    license_for, parse_container, seal_container, unprotect, unprotect_with_use_license, RmsError,
    TenantKey,
};
use crate::rules::RmsProtect;

const MSG: &[u8] = b"From: alice@contoso.test\r\nTo: bob@fabrikam.test\r\n\
Message-ID: <q3@contoso.test>\r\nSubject: figures\r\n\r\nQ3 numbers\r\n";
const URL: &str = "https://licensing.contoso.test:8443/";
const DAY: Duration = Duration::from_secs(86400);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn keys() -> TenantKeys {
    TenantKeys::load_dir(&fixtures().join("keys/tenant")).unwrap()
}

fn cert(who: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(format!("pki/smime/{who}.crt"))).unwrap()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

/// A container protected for bob (do-not-forward), expiring after `expires` if given.
fn container(keys: &TenantKeys, expires: Option<Duration>) -> Vec<u8> {
    let action = RmsProtect {
        template: "do-not-forward".into(),
        rights: Default::default(),
        expires_after: expires,
    };
    let req = license_for(
        &action,
        "alice@contoso.test",
        &["bob@fabrikam.test".into()],
        Some("<q3@contoso.test>"),
        now(),
    )
    .with_licensing_url(Some(URL.into()));
    seal_container(MSG, keys.active().unwrap(), &req).unwrap()
}

/// The SubjectPublicKeyInfo (DER) of a fixture reader's certificate.
fn public_key(who: &str) -> Vec<u8> {
    use x509_cert::der::{Decode, Encode};
    let (_, der) = x509_cert::der::pem::decode_vec(&cert(who)).unwrap();
    let c = x509_cert::Certificate::from_der(&der).unwrap();
    c.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap()
}

fn ask(
    container: &[u8],
    principal: &str,
    certificate: &[u8],
    keys: &TenantKeys,
    revocations: &RevocationList,
    at: SystemTime,
) -> Result<UseLicense, Refusal> {
    let reader = ReaderKeySource::Certificate(certificate);
    ask_with(container, principal, reader, keys, revocations, at)
}

fn ask_with(
    container: &[u8],
    principal: &str,
    reader: ReaderKeySource<'_>,
    keys: &TenantKeys,
    revocations: &RevocationList,
    at: SystemTime,
) -> Result<UseLicense, Refusal> {
    let framed = parse_container(container).unwrap();
    let request = Request {
        license: framed.license,
        signature: framed.signature,
        principal,
        reader,
    };
    let policy = Policy {
        tenant_keys: keys,
        licensing_url: URL,
        validity: 30 * DAY,
    };
    decide(&request, &policy, revocations, at)
}

#[test]
fn bob_gets_a_use_license_that_opens_the_message_like_the_tenant_key() {
    let keys = keys();
    let c = container(&keys, None);
    let bob_cert = cert("bob@fabrikam.test");
    let ul = ask(
        &c,
        "Bob@Fabrikam.test",
        &bob_cert,
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap();
    assert_eq!(ul.principal, "bob@fabrikam.test");
    assert_eq!(ul.rights.names(), ["VIEW", "REPLY", "REPLYALL"]);
    assert_eq!(ul.valid_until_at(), now() + 30 * DAY);
    assert_eq!(ul.licensing_url, URL);
    let framed = parse_container(&c).unwrap();
    assert_eq!(ul.license_sha256, license_sha256(framed.license));
    ul.verify_with(&keys).unwrap();
    let ul = UseLicense::decode(&ul.encode()).unwrap();
    let bob =
        DecryptKey::from_pem(&fixtures().join("pki/smime/bob@fabrikam.test.key"), None).unwrap();
    let public = keys.active().unwrap().public();
    let by_tenant = unprotect(&c, &keys, now(), false).unwrap();
    let by_reader = unprotect_with_use_license(&c, &ul, &bob, &public, now()).unwrap();
    assert_eq!(by_reader, by_tenant);
    assert_eq!(by_reader.1, MSG);
    assert_eq!(by_reader.0.licensing_url.as_deref(), Some(URL));
    // Another reader's key does not open bob's use license.
    let dave =
        DecryptKey::from_pem(&fixtures().join("pki/smime/dave@fabrikam.test.key"), None).unwrap();
    assert!(matches!(ul.unwrap_key(&dave), Err(RmsError::ReaderKey(_))));
    assert!(unprotect_with_use_license(&c, &ul, &dave, &public, now()).is_err());
    // Nor does it open after its validity.
    assert!(matches!(
        unprotect_with_use_license(&c, &ul, &bob, &public, now() + 31 * DAY),
        Err(RmsError::Expired { .. })
    ));
}

#[test]
fn a_tampered_license_is_a_bad_license() {
    let keys = keys();
    let c = container(&keys, None);
    let framed = parse_container(&c).unwrap();
    // Flip one byte of the issuer (tag 01, after tag and length): still decodes, signature fails.
    let mut license = framed.license.to_vec();
    license[5] ^= 0x01;
    let request = Request {
        license: &license,
        signature: framed.signature,
        principal: "bob@fabrikam.test",
        reader: ReaderKeySource::Certificate(&cert("bob@fabrikam.test")),
    };
    let policy = Policy {
        tenant_keys: &keys,
        licensing_url: URL,
        validity: DAY,
    };
    let r = decide(&request, &policy, &RevocationList::default(), now()).unwrap_err();
    assert_eq!(r.code(), "bad-license", "{r}");
    // Garbage does not decode.
    let request = Request {
        license: b"\x01\x00\x00",
        ..request
    };
    let r = decide(&request, &policy, &RevocationList::default(), now()).unwrap_err();
    assert_eq!(r.code(), "bad-license", "{r}");
    // A bad signature over intact bytes.
    let mut sig = framed.signature.to_vec();
    sig[0] ^= 0x80;
    let request = Request {
        license: framed.license,
        signature: &sig,
        ..request
    };
    let r = decide(&request, &policy, &RevocationList::default(), now()).unwrap_err();
    assert_eq!(r.code(), "bad-license", "{r}");
}

#[test]
fn a_license_under_another_tenant_key_is_unknown() {
    use aws_lc_rs::encoding::AsDer;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let other = TenantKeys::single(TenantKey::from_pkcs8(pair.as_der().unwrap().as_ref()).unwrap());
    let c = container(&other, None);
    let keys = keys();
    let r = ask(
        &c,
        "bob@fabrikam.test",
        &cert("bob@fabrikam.test"),
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(r.code(), "unknown-key");
    assert!(r.to_string().contains(&other.ids()[0]), "{r}");
}

#[test]
fn revoked_by_message_id_or_license_hash_from_the_revocation_time() {
    let keys = keys();
    let c = container(&keys, None);
    let bob = cert("bob@fabrikam.test");
    let mut list = RevocationList::default();
    list.revoke_message("<q3@contoso.test>", now() + DAY);
    assert!(ask(&c, "bob@fabrikam.test", &bob, &keys, &list, now()).is_ok());
    let r = ask(&c, "bob@fabrikam.test", &bob, &keys, &list, now() + DAY).unwrap_err();
    assert_eq!(r.code(), "revoked");
    assert_eq!(r.to_string(), "revoked on 2026-11-19T11:06:40Z");
    let mut list = RevocationList::default();
    list.revoke_license(license_sha256(parse_container(&c).unwrap().license), now());
    let r = ask(&c, "bob@fabrikam.test", &bob, &keys, &list, now()).unwrap_err();
    assert_eq!(r, Refusal::Revoked { at: now() });
}

#[test]
fn expiry_refuses_and_bounds_the_use_license() {
    let keys = keys();
    let c = container(&keys, Some(7 * DAY));
    let bob = cert("bob@fabrikam.test");
    let ul = ask(
        &c,
        "bob@fabrikam.test",
        &bob,
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap();
    assert_eq!(
        ul.valid_until_at(),
        now() + 7 * DAY,
        "min(now + 30d, expiry)"
    );
    let r = ask(
        &c,
        "bob@fabrikam.test",
        &bob,
        &keys,
        &Default::default(),
        now() + 7 * DAY,
    )
    .unwrap_err();
    assert_eq!(r.code(), "expired");
    assert_eq!(r.to_string(), "expired on 2026-11-25T11:06:40Z");
}

#[test]
fn a_forwarded_copy_gives_dave_nothing() {
    let keys = keys();
    let c = container(&keys, None);
    let r = ask(
        &c,
        "dave@fabrikam.test",
        &cert("dave@fabrikam.test"),
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(r.code(), "no-rights");
    assert_eq!(
        r.to_string(),
        "dave@fabrikam.test has no rights on this message"
    );
    for who in ["ANYONE", "*@fabrikam.test", "not an address"] {
        let r = ask(
            &c,
            who,
            &cert("bob@fabrikam.test"),
            &keys,
            &Default::default(),
            now(),
        )
        .unwrap_err();
        assert_eq!(r.code(), "no-rights", "{who}");
    }
}

#[test]
fn domain_and_anyone_entries_grant_view_and_other_rights_alone_do_not() {
    let keys = keys();
    let mut action = RmsProtect {
        template: "partners".into(),
        rights: Default::default(),
        expires_after: None,
    };
    use crate::rules::Right;
    action
        .rights
        .insert("*@fabrikam.test".into(), vec![Right::View]);
    action
        .rights
        .insert("carol@contoso.test".into(), vec![Right::Print]);
    let req = license_for(&action, "alice@contoso.test", &[], None, now());
    let c = seal_container(MSG, keys.active().unwrap(), &req).unwrap();
    let dave = cert("dave@fabrikam.test");
    let ul = ask(
        &c,
        "dave@fabrikam.test",
        &dave,
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap();
    assert_eq!(ul.rights, Rights::VIEW);
    let r = ask(
        &c,
        "carol@contoso.test",
        &dave,
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(r.code(), "no-rights");
    assert_eq!(
        r.to_string(),
        "carol@contoso.test may not view this message (its rights: PRINT)"
    );
    action.rights.insert("*".into(), vec![Right::View]);
    let req = license_for(&action, "alice@contoso.test", &[], None, now());
    let c = seal_container(MSG, keys.active().unwrap(), &req).unwrap();
    // eve and alice prove themselves otherwise (a password) and send their own key.
    let key = public_key("dave@fabrikam.test");
    let ul = ask_with(
        &c,
        "eve@elsewhere.test",
        ReaderKeySource::PublicKey(&key),
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap();
    assert_eq!(ul.rights, Rights::VIEW);
    // The owner gets every right.
    let ul = ask_with(
        &c,
        "alice@contoso.test",
        ReaderKeySource::PublicKey(&key),
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap();
    assert_eq!(ul.rights.names().len(), 7);
}

#[test]
fn unusable_certificates_are_refused() {
    let keys = keys();
    let c = container(&keys, None);
    let r = ask(
        &c,
        "bob@fabrikam.test",
        b"not a certificate",
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(r.code(), "bad-certificate", "{r}");
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["bob.fabrikam.test".into()]).unwrap();
    let ec_cert = params.self_signed(&ec).unwrap();
    let r = ask(
        &c,
        "bob@fabrikam.test",
        ec_cert.der(),
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(r.code(), "bad-certificate");
    assert!(r.to_string().contains("not an RSA key"), "{r}");
    // Bob's certificate is not valid in 2040.
    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(2_210_000_000);
    let r = ask(
        &c,
        "bob@fabrikam.test",
        &cert("bob@fabrikam.test"),
        &keys,
        &Default::default(),
        later,
    )
    .unwrap_err();
    assert_eq!(r.code(), "bad-certificate", "{r}");
}

#[test]
fn checks_come_in_order() {
    // Revoked and expired and no rights and a bad certificate: revoked is said.
    let keys = keys();
    let c = container(&keys, Some(DAY));
    let mut list = RevocationList::default();
    list.revoke_message("<q3@contoso.test>", now());
    let r = ask(
        &c,
        "dave@fabrikam.test",
        b"junk",
        &keys,
        &list,
        now() + 2 * DAY,
    )
    .unwrap_err();
    assert_eq!(r.code(), "revoked");
    let r = ask(
        &c,
        "dave@fabrikam.test",
        b"junk",
        &keys,
        &Default::default(),
        now() + 2 * DAY,
    )
    .unwrap_err();
    assert_eq!(r.code(), "expired");
    let r = ask(
        &c,
        "dave@fabrikam.test",
        b"junk",
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(r.code(), "no-rights");
}

#[test]
fn a_certificate_must_name_the_reader_it_wraps_to() {
    let keys = keys();
    let c = container(&keys, None);
    let r = ask(
        &c,
        "bob@fabrikam.test",
        &cert("dave@fabrikam.test"),
        &keys,
        &Default::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(r.code(), "bad-certificate");
    assert_eq!(
        r.to_string(),
        "the reader's key cannot be used: it names dave@fabrikam.test, not the reader bob@fabrikam.test"
    );
}

#[test]
fn a_password_reader_gets_the_content_key_wrapped_to_its_own_key() {
    let keys = keys();
    let c = container(&keys, None);
    // bob's public key, as DER and as the PEM `openssl pkey -pubout` writes.
    let der = public_key("bob@fabrikam.test");
    let pem =
        x509_cert::der::pem::encode_string("PUBLIC KEY", x509_cert::der::pem::LineEnding::LF, &der)
            .unwrap();
    let bob =
        DecryptKey::from_pem(&fixtures().join("pki/smime/bob@fabrikam.test.key"), None).unwrap();
    let public = keys.active().unwrap().public();
    for spki in [&der[..], pem.as_bytes()] {
        let reader = ReaderKeySource::PublicKey(spki);
        let ul = ask_with(
            &c,
            "bob@fabrikam.test",
            reader,
            &keys,
            &Default::default(),
            now(),
        )
        .unwrap();
        let (_, original) = unprotect_with_use_license(&c, &ul, &bob, &public, now()).unwrap();
        assert_eq!(original, MSG);
    }
    // Not a key, and PEM that is not a public key: refused, saying why.
    for (spki, why) in [
        (&b"junk"[..], "not an RSA public key"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "PEM",
        ),
    ] {
        let reader = ReaderKeySource::PublicKey(spki);
        let r = ask_with(
            &c,
            "bob@fabrikam.test",
            reader,
            &keys,
            &Default::default(),
            now(),
        )
        .unwrap_err();
        assert_eq!(r.code(), "bad-certificate");
        assert!(r.to_string().contains(why), "{r}");
    }
}
