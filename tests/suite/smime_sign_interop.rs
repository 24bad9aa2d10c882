//! S/MIME signatures with the real `openssl cms`, both ways: what we sign verifies in OpenSSL
//! with the fixture CA (and fails once one signed byte is changed), and what OpenSSL signs
//! (detached and opaque, RSA and ECDSA) verifies here, with the signer named and trusted only
//! when the CA is given, through the library and `sealpost decrypt`; altered and truncated
//! signatures fail cleanly.

use crate::support::smime_files;

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use smime_files::{fixtures, openssl, private_copy, smime};

use sealpost::crypto::smime::{
    sign_message, verify_message, DecryptError, SignatureScheme, SignerAnchors, SignerTrust,
    SigningKey,
};

fn alice(dir: &Path) -> SigningKey {
    let key = private_copy(dir, &smime("alice@contoso.test.key"), "alice.key");
    SigningKey::load(&smime("alice@contoso.test.crt"), &key, SystemTime::now()).unwrap()
}

fn anchors() -> Vec<rustls_pki_types::TrustAnchor<'static>> {
    use rustls_pki_types::pem::PemObject;
    let ca = rustls_pki_types::CertificateDer::from_pem_file(fixtures().join("ca.crt")).unwrap();
    vec![webpki::anchor_from_trusted_cert(&ca).unwrap().to_owned()]
}

const MESSAGE: &[u8] = b"From: Alice <alice@contoso.test>\r\nTo: bob@fabrikam.test\r\n\
Subject: signed numbers\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe: the number is 42.\r\n";

/// Changes one byte of the signed text ("42" becomes "43").
fn tamper(signed: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(signed.to_vec()).unwrap();
    // The 8-bit body is base64 in the signed entity: change one base64 character of it.
    let at = text.find("R3LDvMOfZTog").expect("base64 body") + 4;
    let mut bytes = signed.to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    bytes
}

#[test]
fn openssl_verifies_what_we_sign_and_refuses_it_altered() {
    let dir = tempfile::tempdir().unwrap();
    let key = alice(dir.path());
    // RSA-PSS on request: OpenSSL verifies it too.
    let pss = sign_message(MESSAGE, &key, SignatureScheme::RsaPss, SystemTime::now()).unwrap();
    let path = dir.path().join("pss.eml");
    std::fs::write(&path, &pss).unwrap();
    let ca = fixtures().join("ca.crt");
    let (ok, _, err) = openssl(
        &[
            "cms",
            "-verify",
            "-in",
            path.to_str().unwrap(),
            "-CAfile",
            ca.to_str().unwrap(),
        ],
        b"",
    );
    assert!(ok && err.contains("Verification successful"), "PSS: {err}");
    let (_, info, _) = openssl(
        &["cms", "-cmsout", "-print", "-in", path.to_str().unwrap()],
        b"",
    );
    assert!(
        String::from_utf8_lossy(&info).contains("rsassaPss"),
        "{}",
        String::from_utf8_lossy(&info)
    );
    assert!(verify_message(&pss, None, SystemTime::now()).is_ok());

    let signed = sign_message(MESSAGE, &key, SignatureScheme::RsaPkcs1, SystemTime::now()).unwrap();
    let text = String::from_utf8(signed.clone()).unwrap();
    assert!(
        text.starts_with("From: Alice <alice@contoso.test>\r\n"),
        "{text}"
    );
    assert!(text.contains("multipart/signed; protocol=\"application/pkcs7-signature\""));
    assert!(text.contains("micalg=sha-256"));
    assert!(
        signed.iter().all(|b| *b < 0x80),
        "the signed message is 7-bit"
    );
    let path = dir.path().join("signed.eml");
    std::fs::write(&path, &signed).unwrap();
    let (ok, content, err) = openssl(
        &[
            "cms",
            "-verify",
            "-in",
            path.to_str().unwrap(),
            "-CAfile",
            ca.to_str().unwrap(),
        ],
        b"",
    );
    assert!(ok, "openssl refused our signature: {err}");
    assert!(err.contains("Verification successful"), "{err}");
    assert!(String::from_utf8_lossy(&content).contains("Content-Transfer-Encoding: base64"));
    // What OpenSSL sees: sha256, rsaEncryption, the three signed attributes.
    let (_, info, _) = openssl(
        &["cms", "-cmsout", "-print", "-in", path.to_str().unwrap()],
        b"",
    );
    let info = String::from_utf8_lossy(&info);
    for want in [
        "sha256",
        "rsaEncryption",
        "contentType",
        "signingTime",
        "messageDigest",
    ] {
        assert!(info.contains(want), "{want} missing: {info}");
    }

    // Our own verification says who signed, trusted with the CA.
    let roots = anchors();
    let a = SignerAnchors {
        roots: &roots,
        label: "ca.crt",
    };
    let v = verify_message(&signed, Some(a), SystemTime::now()).unwrap();
    assert_eq!(v.signers.len(), 1);
    assert_eq!(v.signers[0].emails, ["alice@contoso.test"]);
    assert!(v.trusted());
    assert_eq!(v.message, signed);

    // One byte changed in the signed body: both refuse.
    let altered = tamper(&signed);
    std::fs::write(&path, &altered).unwrap();
    let (ok, _, err) = openssl(
        &[
            "cms",
            "-verify",
            "-in",
            path.to_str().unwrap(),
            "-CAfile",
            ca.to_str().unwrap(),
        ],
        b"",
    );
    assert!(!ok, "openssl accepted an altered message");
    assert!(
        err.contains("digest failure") || err.contains("failure"),
        "{err}"
    );
    let e = verify_message(&altered, Some(a), SystemTime::now()).unwrap_err();
    assert!(matches!(e, DecryptError::BadSignature(_)), "{e}");
    assert_eq!(e.exit_code(), 17);
    assert!(e.to_string().contains("altered"), "{e}");
}

#[test]
fn we_verify_what_openssl_signs() {
    let dir = tempfile::tempdir().unwrap();
    let entity = b"Content-Type: text/plain\r\n\r\nSigned by OpenSSL.\r\n";
    let input = dir.path().join("part.txt");
    std::fs::write(&input, entity).unwrap();
    let roots = anchors();
    let a = SignerAnchors {
        roots: &roots,
        label: "ca.crt",
    };
    let cert = smime("carol@contoso.test.crt");
    let key = smime("carol@contoso.test.key");
    for extra in [&[][..], &["-nodetach"][..], &["-nodetach", "-stream"][..]] {
        let mut args = vec![
            "cms",
            "-sign",
            "-in",
            input.to_str().unwrap(),
            "-signer",
            cert.to_str().unwrap(),
            "-inkey",
            key.to_str().unwrap(),
            "-md",
            "sha256",
            "-binary",
        ];
        args.extend_from_slice(extra);
        let (ok, signed, err) = openssl(&args, b"");
        assert!(ok, "{err}");
        let mut message = b"From: carol@contoso.test\r\nSubject: from openssl\r\n".to_vec();
        message.extend_from_slice(&signed);
        let v = verify_message(&message, Some(a), SystemTime::now())
            .unwrap_or_else(|e| panic!("{extra:?}: {e}\n{}", String::from_utf8_lossy(&message)));
        assert_eq!(v.signers[0].emails, ["carol@contoso.test"], "{extra:?}");
        assert!(v.signers[0].subject.contains("carol@contoso.test"));
        assert!(v.signers[0].signing_time.is_some());
        assert!(v.trusted(), "{:?}", v.signers[0].trust);
        assert!(
            String::from_utf8_lossy(&v.message).contains("Signed by OpenSSL."),
            "{extra:?}"
        );
        // Without trust anchors the signature still verifies, but nobody vouches for carol.
        let v = verify_message(&message, None, SystemTime::now()).unwrap();
        assert_eq!(v.signers[0].trust, SignerTrust::NoAnchors);
        assert!(!v.trusted());
    }

    // A signer from another CA verifies as a signature but is not trusted.
    let (ok, _, err) = openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=mallory@contoso.test",
            "-addext",
            "subjectAltName=email:mallory@contoso.test",
            "-keyout",
            dir.path().join("m.key").to_str().unwrap(),
            "-out",
            dir.path().join("m.crt").to_str().unwrap(),
            "-days",
            "2",
        ],
        b"",
    );
    assert!(ok, "{err}");
    let (ok, signed, err) = openssl(
        &[
            "cms",
            "-sign",
            "-in",
            input.to_str().unwrap(),
            "-signer",
            dir.path().join("m.crt").to_str().unwrap(),
            "-inkey",
            dir.path().join("m.key").to_str().unwrap(),
        ],
        b"",
    );
    assert!(ok, "{err}");
    let v = verify_message(&signed, Some(a), SystemTime::now()).unwrap();
    match &v.signers[0].trust {
        SignerTrust::Untrusted { reason } => assert!(reason.contains("ca.crt"), "{reason}"),
        other => panic!("{other:?}"),
    }

    // ECDSA P-256, signed by OpenSSL.
    let (ok, _, err) = openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=ec@contoso.test",
            "-keyout",
            dir.path().join("ec.key").to_str().unwrap(),
            "-out",
            dir.path().join("ec.crt").to_str().unwrap(),
            "-days",
            "2",
        ],
        b"",
    );
    assert!(ok, "{err}");
    let (ok, signed, err) = openssl(
        &[
            "cms",
            "-sign",
            "-in",
            input.to_str().unwrap(),
            "-signer",
            dir.path().join("ec.crt").to_str().unwrap(),
            "-inkey",
            dir.path().join("ec.key").to_str().unwrap(),
        ],
        b"",
    );
    assert!(ok, "{err}");
    let v = verify_message(&signed, None, SystemTime::now()).unwrap();
    assert!(v.signers[0].subject.contains("ec@contoso.test"));
}

/// Changed and truncated signed messages never panic; a change inside the signed content is
/// always a bad signature; changes in the signature part are refused, or leave the signer
/// untrusted when they hit its certificate.
#[test]
fn altered_or_truncated_signatures_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let signed = sign_message(
        MESSAGE,
        &alice(dir.path()),
        SignatureScheme::RsaPkcs1,
        SystemTime::now(),
    )
    .unwrap();
    let roots = anchors();
    let a = SignerAnchors {
        roots: &roots,
        label: "ca.crt",
    };
    let text = String::from_utf8(signed.clone()).unwrap();
    let preamble = text
        .find("This is an S/MIME signed message.\r\n\r\n")
        .unwrap()
        + 37;
    let content_start = text[preamble..].find("\r\n").unwrap() + preamble + 2;
    let sig_start = text.find("smime.p7s\r\n\r\n").unwrap() + 13;
    let content_end = text[..sig_start].rfind("\r\n--").unwrap();
    let mut checked = 0;
    for i in (content_start..content_end).step_by(3) {
        let mut m = signed.clone();
        m[i] ^= 0x01;
        if m[i] == b'\r' || m[i] == b'\n' || signed[i] == b'\r' || signed[i] == b'\n' {
            continue; // a line break changed into something else changes the structure
        }
        match verify_message(&m, Some(a), SystemTime::now()) {
            Err(DecryptError::BadSignature(_)) => checked += 1,
            other => panic!("byte {i} of the signed content changed: {other:?}"),
        }
    }
    assert!(checked > 20, "{checked}");
    let (mut refused, mut untrusted) = (0, 0);
    for i in (sig_start..signed.len()).step_by(5) {
        let mut m = signed.clone();
        m[i] = m[i].wrapping_add(1);
        match verify_message(&m, Some(a), SystemTime::now()) {
            Err(_) => refused += 1,
            // The change hit a certificate outside the signed data, leaving its key: the
            // signature holds, but the signer is no longer trusted.
            Ok(v) if !v.trusted() => untrusted += 1,
            // The change left the decoded structure as it was (a padding bit), or hit a field
            // that CMS does not sign (SignedData.digestAlgorithms, which is not used).
            Ok(_) => {}
        }
    }
    assert!(
        refused > 100 && untrusted > 0,
        "{refused} refused, {untrusted} untrusted"
    );
    for len in (0..signed.len()).step_by(37) {
        assert!(
            verify_message(&signed[..len], Some(a), SystemTime::now()).is_err(),
            "{len}"
        );
    }
}

/// `sealpost decrypt` on a message OpenSSL signed: the signer is named and trusted with
/// `--trust`, reported untrusted (not checked) without it; a From address the certificate does
/// not name is warned about; opaque (signed-data) messages are unwrapped.
#[test]
fn sealpost_decrypt_names_the_signer_of_an_openssl_signature() {
    let dir = tempfile::tempdir().unwrap();
    let entity = dir.path().join("part.txt");
    std::fs::write(
        &entity,
        b"Content-Type: text/plain\r\n\r\nOPENSSL-SIGNED\r\n",
    )
    .unwrap();
    let cert = smime("carol@contoso.test.crt");
    let key = smime("carol@contoso.test.key");
    let ca = fixtures().join("ca.crt");
    let decrypt = |file: &Path, trust: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealpost"));
        cmd.arg("decrypt").arg(file);
        if trust {
            cmd.arg("--trust").arg(&ca);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (extra, from) in [(&[][..], "carol"), (&["-nodetach"][..], "alice")] {
        let mut args = vec![
            "cms",
            "-sign",
            "-in",
            entity.to_str().unwrap(),
            "-signer",
            cert.to_str().unwrap(),
            "-inkey",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (ok, signed, err) = openssl(&args, b"");
        assert!(ok, "{err}");
        let mut message = format!("From: {from}@contoso.test\r\nSubject: s\r\n").into_bytes();
        message.extend_from_slice(&signed);
        let file = dir.path().join("signed.eml");
        std::fs::write(&file, &message).unwrap();

        let (code, out, err) = decrypt(&file, true);
        assert_eq!(code, Some(0), "{err}");
        assert!(
            err.contains("signature: good, signed by")
                && err.contains("<carol@contoso.test>")
                && err.contains("signer: trusted (the certificate chains to ca.crt)"),
            "{err}"
        );
        assert!(out.contains("OPENSSL-SIGNED"), "{out}");
        assert!(out.contains(&format!("From: {from}@contoso.test")), "{out}");
        let warned = err.contains("warning: the message is from alice@contoso.test");
        assert_eq!(warned, from == "alice", "{err}");

        let (code, _, err) = decrypt(&file, false);
        assert_eq!(code, Some(0), "{err}");
        assert!(err.contains("signer: untrusted (not checked"), "{err}");
    }
}
