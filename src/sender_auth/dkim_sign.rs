//! DKIM signing (RFC 6376; Ed25519 per RFC 8463) of our outbound mail: one signer per sending
//! domain, its key loaded and checked once when the configuration is.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use mail_auth::common::crypto::{DkimKey as AuthKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// The smallest RSA modulus accepted (RFC 8301 §3.2 asks for 1024 at least; the large mailbox
/// providers and this project ask for 2048).
pub const MIN_RSA_BITS: usize = 2048;

/// The header fields signed by default. From, To and Subject are listed twice (oversigned):
/// a copy added on the way breaks the signature instead of being shown (RFC 6376 §8.15).
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "From",
    "To",
    "To",
    "Subject",
    "Subject",
    "Cc",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Why a DKIM private key cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a PEM private key (PKCS#8 \"PRIVATE KEY\" or PKCS#1 \"RSA PRIVATE KEY\")")]
    NotPem,
    #[error("RSA key of {0} bits: at least {MIN_RSA_BITS} are required")]
    RsaTooShort(usize),
    #[error("not an RSA or Ed25519 private key the signer can use: {0}")]
    Unusable(String),
}

/// `rsa` (rsa-sha256) or `ed25519` (ed25519-sha256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa,
    Ed25519,
}

impl KeyAlgorithm {
    /// The `k=` tag of the key record.
    pub fn tag(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa => "rsa",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// A loaded DKIM private key and its public half for the DNS record.
pub struct DkimKey {
    algorithm: KeyAlgorithm,
    /// What goes in `p=`: SubjectPublicKeyInfo DER for RSA, the raw 32 bytes for Ed25519.
    public: Vec<u8>,
    key: AuthKey,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl DkimKey {
    /// Reads a PEM private key: RSA (PKCS#8 or PKCS#1, ≥ 2048 bits) or Ed25519 (PKCS#8).
    pub fn from_pem(pem: &[u8]) -> Result<DkimKey, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NotPem)?;
        let unusable = |e: &dyn std::fmt::Display| KeyError::Unusable(e.to_string());
        let rsa = match &der {
            PrivateKeyDer::Pkcs1(k) => Some(RsaKeyPair::from_der(k.secret_pkcs1_der())),
            PrivateKeyDer::Pkcs8(k) => {
                match Ed25519KeyPair::from_pkcs8_maybe_unchecked(k.secret_pkcs8_der()) {
                    Ok(pair) => {
                        let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(k.secret_pkcs8_der())
                            .map_err(|e| unusable(&e))?;
                        return Ok(DkimKey {
                            algorithm: KeyAlgorithm::Ed25519,
                            public: pair.public_key().as_ref().to_vec(),
                            key: AuthKey::Ed25519(key),
                        });
                    }
                    Err(_) => Some(RsaKeyPair::from_pkcs8(k.secret_pkcs8_der())),
                }
            }
            _ => None,
        };
        let pair = match rsa {
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                return Err(match rsa_bits(&der) {
                    Some(bits) if bits < MIN_RSA_BITS => KeyError::RsaTooShort(bits),
                    _ => unusable(&e),
                })
            }
            None => return Err(KeyError::Unusable("a SEC1 (EC) key".into())),
        };
        let bits = pair.public_modulus_len() * 8;
        if bits < MIN_RSA_BITS {
            return Err(KeyError::RsaTooShort(bits));
        }
        let public = pair
            .public_key()
            .as_der()
            .map_err(|e| unusable(&e))?
            .as_ref()
            .to_vec();
        let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| unusable(&e))?;
        Ok(DkimKey {
            algorithm: KeyAlgorithm::Rsa,
            public,
            key: AuthKey::Rsa(key),
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> String {
        let p = base64::engine::general_purpose::STANDARD.encode(&self.public);
        format!("v=DKIM1; k={}; p={p}", self.algorithm.tag())
    }
}

/// PKCS#8 `PrivateKeyInfo` (RFC 5208), as far as needed to reach the key inside.
#[derive(der::Sequence)]
struct PrivateKeyInfo<'a> {
    version: u8,
    algorithm: der::asn1::AnyRef<'a>,
    private_key: &'a der::asn1::OctetStringRef,
}

/// The modulus size of an RSA private key, read when the crypto library refuses the key, to
/// say why.
fn rsa_bits(der: &PrivateKeyDer<'_>) -> Option<usize> {
    use der::Decode;
    let pkcs1 = match der {
        PrivateKeyDer::Pkcs1(k) => k.secret_pkcs1_der(),
        PrivateKeyDer::Pkcs8(k) => PrivateKeyInfo::from_der(k.secret_pkcs8_der())
            .ok()?
            .private_key
            .as_bytes(),
        _ => return None,
    };
    let n = pkcs1::RsaPrivateKeyRef::from_der(pkcs1).ok()?.modulus;
    let n = n.as_bytes();
    let first = n.iter().position(|&b| b != 0)?;
    Some((n.len() - first) * 8 - n[first].leading_zeros() as usize)
}

/// Signs for one domain with one selector, relaxed/relaxed.
pub struct Signer {
    pub domain: String,
    pub selector: String,
    signer: DkimSigner<AuthKey, Done>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// `headers` empty: [`DEFAULT_HEADERS`].
    pub fn new(domain: &str, selector: &str, key: DkimKey, headers: &[String]) -> Signer {
        let headers: Vec<String> = match headers.is_empty() {
            true => DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect(),
            false => headers.to_vec(),
        };
        let signer = DkimSigner::from_key(key.key)
            .domain(domain)
            .selector(selector)
            .headers(headers)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        Signer {
            domain: domain.to_ascii_lowercase(),
            selector: selector.to_string(),
            signer,
        }
    }

    /// The DKIM-Signature header field (with its CRLF) for `message`.
    pub fn sign(&self, message: &[u8]) -> Result<String, String> {
        self.signer
            .sign(message)
            .map(|s| s.to_header())
            .map_err(|e| e.to_string())
    }
}

/// The signers of the configuration, by lowercase domain.
#[derive(Debug, Clone, Default)]
pub struct Signers {
    by_domain: BTreeMap<String, Arc<Signer>>,
}

impl Signers {
    pub fn new(signers: Vec<Signer>) -> Signers {
        Signers {
            by_domain: signers
                .into_iter()
                .map(|s| (s.domain.clone(), Arc::new(s)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The signer of a From: domain (any case), if it is one of ours.
    pub fn for_domain(&self, domain: &str) -> Option<&Signer> {
        self.by_domain
            .get(&domain.to_ascii_lowercase())
            .map(Arc::as_ref)
    }

    /// The signer for a message's From: address (the last one when there are several).
    pub fn for_message(&self, header: &[u8]) -> Option<&Signer> {
        let from = from_domain(header)?;
        self.for_domain(&from)
    }
}

/// The domain of the (last) address in the From: field of a header section.
pub fn from_domain(header: &[u8]) -> Option<String> {
    let m = mail_parser::MessageParser::new().parse_headers(header)?;
    let from = m.from()?;
    let address = from.iter().filter_map(|a| a.address()).next_back()?;
    let (_, domain) = address.rsplit_once('@')?;
    Some(domain.trim_end_matches('.').to_ascii_lowercase())
}

/// Generates a private key and returns it as PKCS#8 PEM: RSA-2048 or Ed25519.
pub fn generate_pem(algorithm: KeyAlgorithm) -> Result<String, KeyError> {
    let unusable = |e: &dyn std::fmt::Display| KeyError::Unusable(e.to_string());
    let der = match algorithm {
        KeyAlgorithm::Rsa => aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .map_err(|e| unusable(&e))?
            .as_der()
            .map_err(|e| unusable(&e))?
            .as_ref()
            .to_vec(),
        KeyAlgorithm::Ed25519 => {
            Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
                .map_err(|e| unusable(&e))?
                .as_ref()
                .to_vec()
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] =
        b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: hi\r\n\r\nbody\r\n";

    #[test]
    fn generated_keys_load_sign_and_publish() {
        for alg in [KeyAlgorithm::Rsa, KeyAlgorithm::Ed25519] {
            let key = DkimKey::from_pem(generate_pem(alg).unwrap().as_bytes()).unwrap();
            assert_eq!(key.algorithm(), alg);
            let record = key.dns_record();
            assert!(
                record.starts_with(&format!("v=DKIM1; k={}; p=", alg.tag())),
                "{record}"
            );
            let signer = Signer::new("A.test", "s1", key, &[]);
            let header = signer.sign(MESSAGE).unwrap();
            assert!(header.starts_with("DKIM-Signature:"), "{header}");
            assert!(
                header.contains("d=A.test") || header.contains("d=a.test"),
                "{header}"
            );
            assert!(header.contains("c=relaxed/relaxed"), "{header}");
            assert!(header.ends_with("\r\n"));
        }
    }

    #[test]
    fn short_rsa_and_garbage_are_refused() {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
            ])
            .output()
            .expect("openssl is needed for this test");
        assert!(out.status.success());
        assert_eq!(
            DkimKey::from_pem(&out.stdout).unwrap_err(),
            KeyError::RsaTooShort(1024)
        );
        assert_eq!(DkimKey::from_pem(b"hello").unwrap_err(), KeyError::NotPem);
    }

    #[test]
    fn signer_is_chosen_by_the_from_domain() {
        let key =
            DkimKey::from_pem(generate_pem(KeyAlgorithm::Ed25519).unwrap().as_bytes()).unwrap();
        let signers = Signers::new(vec![Signer::new("a.test", "s1", key, &[])]);
        assert_eq!(signers.for_message(MESSAGE).unwrap().domain, "a.test");
        assert!(signers.for_message(b"From: x@c.test\r\n\r\n").is_none());
        assert!(signers.for_message(b"Subject: none\r\n\r\n").is_none());
    }
}
