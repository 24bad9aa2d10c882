//! Private keys for opening S/MIME: PEM (PKCS#8 or PKCS#1) or PKCS#12 loading, the optional
//! certificate, key identifiers; key bytes are zeroized once aws-lc-rs holds the key.

use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::PrivateDecryptingKey;
use der::asn1::{AnyRef, OctetStringRef};
use der::{Decode, Encode, Sequence};
use spki::AlgorithmIdentifierRef;
use zeroize::Zeroizing;

use super::smime::{DecryptError, RecipientCert};

/// The smallest RSA key we load or accept, for TLS and message cryptography alike.
pub const MIN_RSA_BITS: usize = 2048;

pub use super::smime_pki::generate_smime;

/// An RSA private key to decrypt with, and the certificate that names it (if known).
pub struct DecryptKey {
    rsa: PrivateDecryptingKey,
    cert: Option<RecipientCert>,
    /// Subject key identifiers this key may be known by (RFC 5280 §4.2.1.2 method 1 with
    /// SHA-1, and SHA-256 in full and truncated to 160 bits as RFC 7093 and rcgen make them).
    key_ids: Vec<Vec<u8>>,
}

impl std::fmt::Debug for DecryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptKey")
            .field("bits", &self.rsa.key_size_bits())
            .field("cert", &self.cert.as_ref().map(|c| c.subject().to_string()))
            .finish()
    }
}

fn key_err(path: &Path, problem: impl std::fmt::Display) -> DecryptError {
    DecryptError::Key(format!("{}: {problem}", path.display()))
}

impl DecryptKey {
    /// Loads a PEM private key ("PRIVATE KEY" = PKCS#8, "RSA PRIVATE KEY" = PKCS#1; DER works
    /// too) and, if given, its certificate. A certificate in the key file is used when `cert` is
    /// `None`. The certificate must belong to the key.
    pub fn from_pem(key: &Path, cert: Option<&Path>) -> Result<Self, DecryptError> {
        let bytes = Zeroizing::new(std::fs::read(key).map_err(|e| key_err(key, e))?);
        let (pkcs8, embedded_cert) = parse_key_file(&bytes).map_err(|p| key_err(key, p))?;
        let cert = match cert {
            Some(path) => Some(
                RecipientCert::from_pem_file(path).map_err(|e| DecryptError::Key(e.to_string()))?,
            ),
            None => embedded_cert,
        };
        Self::from_pkcs8(&pkcs8, cert).map_err(|p| key_err(key, p))
    }

    /// Loads the RSA key (and its certificate) from a PKCS#12 file (PBES2 / PBKDF2 / AES, as
    /// OpenSSL 3 and current Windows write them). The MAC is checked first, so a wrong password
    /// is said so.
    pub fn from_pkcs12(path: &Path, password: &str) -> Result<Self, DecryptError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| key_err(path, e))?);
        let contents = super::pkcs12::parse(&bytes, password).map_err(|e| match e {
            DecryptError::Unsupported(m) => {
                DecryptError::Unsupported(format!("{}: {m}", path.display()))
            }
            DecryptError::Key(m) => key_err(path, m),
            other => other,
        })?;
        let rsa = load_rsa(&contents.key).map_err(|p| key_err(path, p))?;
        let public = public_der(&rsa).map_err(|p| key_err(path, p))?;
        let cert = contents
            .certs
            .iter()
            .filter_map(|der| RecipientCert::from_bytes(der).ok())
            .find(|c| c.spki_der() == public.as_slice());
        Self::new(rsa, cert).map_err(|p| key_err(path, p))
    }

    /// Builds a key from PKCS#8 DER and an optional certificate (checked to match).
    pub fn from_pkcs8(pkcs8: &[u8], cert: Option<RecipientCert>) -> Result<Self, String> {
        Self::new(load_rsa(pkcs8)?, cert)
    }

    fn new(rsa: PrivateDecryptingKey, cert: Option<RecipientCert>) -> Result<Self, String> {
        let public = public_der(&rsa)?;
        if let Some(c) = &cert {
            if c.spki_der() != public.as_slice() {
                return Err(format!(
                    "the certificate for {} does not belong to this key",
                    c.subject()
                ));
            }
        }
        let bits = spki::SubjectPublicKeyInfoRef::from_der(&public)
            .map_err(|e| format!("public key: {e}"))?
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &bits);
        let sha256 = digest::digest(&digest::SHA256, &bits);
        let key_ids = vec![
            sha1.as_ref().to_vec(),
            sha256.as_ref().to_vec(),
            sha256.as_ref()[..20].to_vec(),
        ];
        Ok(DecryptKey { rsa, cert, key_ids })
    }

    /// The certificate naming this key, if one was given or found.
    pub fn certificate(&self) -> Option<&RecipientCert> {
        self.cert.as_ref()
    }

    /// The public key as PEM (`PUBLIC KEY`, a SubjectPublicKeyInfo), as `openssl pkey
    /// -pubout` writes it.
    pub fn public_key_pem(&self) -> Result<String, String> {
        let der = public_der(&self.rsa)?;
        der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &der)
            .map_err(|e| format!("cannot encode the public key: {e}"))
    }

    /// The key's modulus size in bits.
    pub fn bits(&self) -> usize {
        self.rsa.key_size_bits()
    }

    pub(crate) fn rsa(&self) -> &PrivateDecryptingKey {
        &self.rsa
    }

    pub(crate) fn key_ids(&self) -> &[Vec<u8>] {
        &self.key_ids
    }
}

fn load_rsa(pkcs8: &[u8]) -> Result<PrivateDecryptingKey, String> {
    PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(|e| rsa_refusal(rsa_pkcs8_bits(pkcs8), &e))
}

/// Why an RSA key of `bits` (when known) was refused, in words: its size when that is the
/// reason ("1024-bit RSA key; at least 2048 bits are required"), else the library's reason.
pub fn rsa_refusal(bits: Option<usize>, reason: &dyn std::fmt::Display) -> String {
    match bits {
        Some(bits) if bits < 2048 => {
            format!("{bits}-bit RSA key; at least 2048 bits are required")
        }
        Some(bits) if bits > 8192 => {
            format!("{bits}-bit RSA key; at most 8192 bits are accepted")
        }
        _ => format!(
            "not a usable RSA private key ({reason}); RSA keys of 2048 to 8192 bits are accepted"
        ),
    }
}

/// The modulus size of an RSA key in PKCS#8 DER, None when it is not one.
pub fn rsa_pkcs8_bits(pkcs8: &[u8]) -> Option<usize> {
    let info = PrivateKeyInfo::from_der(pkcs8).ok()?;
    if info.algorithm.oid != pkcs1::ALGORITHM_OID {
        return None;
    }
    rsa_pkcs1_bits(info.private_key.as_bytes())
}

/// The modulus size of a PKCS#1 `RSAPrivateKey` in DER.
pub fn rsa_pkcs1_bits(pkcs1: &[u8]) -> Option<usize> {
    let key = pkcs1::RsaPrivateKeyRef::from_der(pkcs1).ok()?;
    let n = key.modulus.as_bytes();
    let first = n.iter().position(|&b| b != 0)?;
    Some((n.len() - first) * 8 - n[first].leading_zeros() as usize)
}

fn public_der(rsa: &PrivateDecryptingKey) -> Result<Vec<u8>, String> {
    rsa.public_key()
        .as_der()
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| "cannot encode the public key".to_string())
}

/// PKCS#8 `PrivateKeyInfo` v1, to wrap a PKCS#1 key for aws-lc-rs.
#[derive(Sequence)]
struct PrivateKeyInfo<'a> {
    version: u8,
    algorithm: AlgorithmIdentifierRef<'a>,
    private_key: &'a OctetStringRef,
}

/// Wraps PKCS#1 `RSAPrivateKey` DER in a PKCS#8 envelope.
pub(crate) fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let info = PrivateKeyInfo {
        version: 0,
        algorithm: AlgorithmIdentifierRef {
            oid: pkcs1::ALGORITHM_OID,
            parameters: Some(AnyRef::NULL),
        },
        private_key: OctetStringRef::new(pkcs1).map_err(|e| format!("PKCS#1 key: {e}"))?,
    };
    info.to_der()
        .map(Zeroizing::new)
        .map_err(|e| format!("PKCS#1 key: {e}"))
}

/// Reads a key file: PEM blocks (a certificate may share the file) or DER.
/// Returns PKCS#8 DER and the certificate found beside the key, if any.
pub(crate) fn parse_key_file(
    bytes: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, Option<RecipientCert>), String> {
    if bytes.first() == Some(&0x30) {
        // DER: PKCS#8 if it parses as such, else PKCS#1.
        return if PrivateDecryptingKey::from_pkcs8(bytes).is_ok() {
            Ok((Zeroizing::new(bytes.to_vec()), None))
        } else {
            Ok((pkcs1_to_pkcs8(bytes)?, None))
        };
    }
    let mut key = None;
    let mut cert = None;
    let mut labels = Vec::new();
    for block in pem_blocks(bytes) {
        let (label, der) = der::pem::decode_vec(block).map_err(|e| format!("bad PEM: {e}"))?;
        let der = Zeroizing::new(der);
        match label {
            "PRIVATE KEY" if key.is_none() => key = Some(der),
            "RSA PRIVATE KEY" if key.is_none() => key = Some(pkcs1_to_pkcs8(&der)?),
            "CERTIFICATE" if cert.is_none() => cert = RecipientCert::from_bytes(&der).ok(),
            "ENCRYPTED PRIVATE KEY" => {
                return Err("the private key is encrypted: decrypt it first \
                     (openssl pkey -in KEY -out PLAIN.pem) or use --pkcs12"
                    .into())
            }
            other => labels.push(other.to_string()),
        }
    }
    match key {
        Some(k) => Ok((k, cert)),
        None if labels.is_empty() => Err("no PEM private key found".into()),
        None => Err(format!(
            "no RSA private key found (found {})",
            labels.join(", ")
        )),
    }
}

/// Splits PEM text into its `-----BEGIN …-----` … `-----END …-----` blocks.
fn pem_blocks(bytes: &[u8]) -> Vec<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let mut blocks = Vec::new();
    let mut rest = bytes;
    while let Some(start) = rest.windows(BEGIN.len()).position(|w| w == BEGIN) {
        let from = &rest[start..];
        let Some(end) = from.windows(END.len()).position(|w| w == END) else {
            break;
        };
        let line_end = from[end..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(from.len(), |i| end + i + 1);
        blocks.push(&from[..line_end]);
        rest = &from[line_end..];
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_split() {
        let text = b"junk\n-----BEGIN A-----\nAAAA\n-----END A-----\nmore\n-----BEGIN B-----\nBBBB\n-----END B-----";
        let blocks = pem_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert!(blocks[0].starts_with(b"-----BEGIN A-----"));
        assert!(blocks[0].ends_with(b"-----END A-----\n"));
        assert!(blocks[1].ends_with(b"-----END B-----"));
    }

    #[test]
    fn key_file_problems_are_named() {
        let e = parse_key_file(b"nothing here").err().unwrap();
        assert!(e.contains("no PEM private key"), "{e}");
        let e = parse_key_file(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .err()
        .unwrap();
        assert!(e.contains("encrypted"), "{e}");
        let e =
            parse_key_file(b"-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n")
                .err()
                .unwrap();
        assert!(e.contains("EC PRIVATE KEY"), "{e}");
    }

    #[test]
    fn pkcs1_and_pkcs8_load_the_same_key() {
        let key = PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = key.as_der().unwrap();
        let pkcs8 = pkcs8.as_ref();
        // Pull the PKCS#1 key out of the PKCS#8 envelope and wrap it again.
        let info = PrivateKeyInfo::from_der(pkcs8).unwrap();
        let pkcs1 = info.private_key.as_bytes();
        let rewrapped = pkcs1_to_pkcs8(pkcs1).unwrap();
        let a = DecryptKey::from_pkcs8(pkcs8, None).unwrap();
        let b = DecryptKey::from_pkcs8(&rewrapped, None).unwrap();
        assert_eq!(a.key_ids, b.key_ids);
        assert_eq!(a.bits(), 2048);
        let (from_der, _) = parse_key_file(pkcs1).unwrap();
        assert_eq!(from_der.as_slice(), rewrapped.as_slice());
    }
}
