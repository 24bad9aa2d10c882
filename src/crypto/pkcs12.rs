//! Reading PKCS#12 files (RFC 7292): MAC check (PKCS#12 KDF + HMAC), PBES2 decryption
//! (PBKDF2 + AES-CBC, RFC 8018) of key and certificate bags, all with aws-lc-rs.
//!
//! Legacy PKCS#12 PBE (3DES / RC2 / RC4 with the SHA-1 KDF) is refused with a hint to
//! re-export the file; OpenSSL 3 and current Windows write PBES2 with AES-256.

use std::num::NonZeroU32;

use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
use aws_lc_rs::{cipher, digest, hmac, pbkdf2};
use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Any, Decode, EncodingRules, Sequence};
use pkcs5::pbes2;
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::smime::DecryptError;

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

const ID_DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.6");
const KEY_BAG: ObjectIdentifier = oid("1.2.840.113549.1.12.10.1.1");
const SHROUDED_KEY_BAG: ObjectIdentifier = oid("1.2.840.113549.1.12.10.1.2");
const CERT_BAG: ObjectIdentifier = oid("1.2.840.113549.1.12.10.1.3");
const X509_CERTIFICATE: ObjectIdentifier = oid("1.2.840.113549.1.9.22.1");
const PBES2: ObjectIdentifier = oid("1.2.840.113549.1.5.13");
const PKCS12_PBE_PREFIX: &str = "1.2.840.113549.1.12.1.";
const SHA1: ObjectIdentifier = oid("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.3");

/// More PBKDF2 / KDF rounds than this is a file built to stall us.
const MAX_ITERATIONS: u32 = 10_000_000;

#[derive(Sequence)]
struct Pfx {
    version: u8,
    auth_safe: ContentInfo,
    mac_data: Option<MacData>,
}

#[derive(Sequence)]
struct MacData {
    mac: DigestInfo,
    mac_salt: OctetString,
    #[asn1(default = "one")]
    iterations: u32,
}

fn one() -> u32 {
    1
}

#[derive(Sequence)]
struct DigestInfo {
    algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

#[derive(Sequence)]
struct SafeBag {
    bag_id: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    bag_value: Any,
    bag_attributes: Option<Any>,
}

#[derive(Sequence)]
struct CertBag {
    cert_id: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    cert_value: OctetString,
}

#[derive(Sequence)]
struct EncryptedPrivateKeyInfo {
    algorithm: AlgorithmIdentifierOwned,
    data: OctetString,
}

/// What a PKCS#12 file holds: the first private key (PKCS#8 DER) and every certificate.
pub(crate) struct Contents {
    pub key: Zeroizing<Vec<u8>>,
    pub certs: Vec<Vec<u8>>,
}

fn bad(what: impl std::fmt::Display) -> DecryptError {
    DecryptError::Key(format!("not a valid PKCS#12 file: {what}"))
}

fn ber<'a, T: Decode<'a, Error = der::Error>>(
    bytes: &'a [u8],
    what: &str,
) -> Result<T, DecryptError> {
    T::from_ber(bytes).map_err(|e| bad(format!("{what}: {e}")))
}

/// Reads the key and certificates, checking the MAC with `password` first.
pub(crate) fn parse(bytes: &[u8], password: &str) -> Result<Contents, DecryptError> {
    let pfx: Pfx = ber(bytes, "PFX")?;
    if pfx.version != 3 {
        return Err(bad(format!("version {} (expected 3)", pfx.version)));
    }
    if pfx.auth_safe.content_type != ID_DATA {
        return Err(DecryptError::Unsupported(
            "PKCS#12 with public-key integrity mode (only password mode)".into(),
        ));
    }
    let auth_safe = pfx
        .auth_safe
        .content
        .decode_as_encoding::<OctetString>(EncodingRules::Ber)
        .map_err(|e| bad(format!("authSafe: {e}")))?;
    let auth_safe = auth_safe.as_bytes();
    match &pfx.mac_data {
        Some(mac) => verify_mac(mac, auth_safe, password)?,
        None => tracing::warn!("PKCS#12 file has no MAC; its integrity is not checked"),
    }

    let safes: Vec<ContentInfo> = ber(auth_safe, "AuthenticatedSafe")?;
    let mut key: Option<Zeroizing<Vec<u8>>> = None;
    let mut certs = Vec::new();
    let mut skipped: Option<DecryptError> = None;
    for safe in safes {
        let contents: Zeroizing<Vec<u8>> = match safe.content_type {
            ID_DATA => Zeroizing::new(
                safe.content
                    .decode_as_encoding::<OctetString>(EncodingRules::Ber)
                    .map_err(|e| bad(format!("SafeContents: {e}")))?
                    .into_bytes()
                    .into_vec(),
            ),
            ID_ENCRYPTED_DATA => {
                let data = safe
                    .content
                    .decode_as_encoding::<EncryptedData>(EncodingRules::Ber)
                    .map_err(|e| bad(format!("EncryptedData: {e}")))?;
                let info = data.enc_content_info;
                let ciphertext = info
                    .encrypted_content
                    .as_ref()
                    .map(|c| c.as_bytes())
                    .unwrap_or_default();
                match decrypt_pbe(&info.content_enc_alg, ciphertext, password) {
                    Ok(plain) => plain,
                    Err(e @ DecryptError::Unsupported(_)) => {
                        skipped = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            other => {
                tracing::debug!(%other, "PKCS#12 safe of unknown type skipped");
                continue;
            }
        };
        let bags: Vec<SafeBag> = ber(&contents, "SafeContents")?;
        for bag in bags {
            let value = bag.bag_value.to_der_vec()?;
            match bag.bag_id {
                KEY_BAG if key.is_none() => key = Some(Zeroizing::new(value)),
                SHROUDED_KEY_BAG if key.is_none() => {
                    let info: EncryptedPrivateKeyInfo = ber(&value, "shrouded key bag")?;
                    match decrypt_pbe(&info.algorithm, info.data.as_bytes(), password) {
                        Ok(plain) => key = Some(plain),
                        Err(e @ DecryptError::Unsupported(_)) => skipped = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                CERT_BAG => {
                    let cert: CertBag = ber(&value, "certificate bag")?;
                    if cert.cert_id == X509_CERTIFICATE {
                        certs.push(cert.cert_value.into_bytes().into_vec());
                    }
                }
                _ => {}
            }
        }
    }
    match key {
        Some(key) => Ok(Contents { key, certs }),
        None => Err(skipped.unwrap_or_else(|| bad("no private key in the file"))),
    }
}

trait ToDerVec {
    fn to_der_vec(&self) -> Result<Vec<u8>, DecryptError>;
}

impl ToDerVec for Any {
    fn to_der_vec(&self) -> Result<Vec<u8>, DecryptError> {
        der::Encode::to_der(self).map_err(|e| bad(format!("bag: {e}")))
    }
}

fn iterations(n: u32) -> Result<NonZeroU32, DecryptError> {
    match NonZeroU32::new(n) {
        Some(n) if n.get() <= MAX_ITERATIONS => Ok(n),
        _ => Err(DecryptError::Unsupported(format!(
            "PKCS#12 iteration count {n} (1 to {MAX_ITERATIONS})"
        ))),
    }
}

fn verify_mac(mac: &MacData, data: &[u8], password: &str) -> Result<(), DecryptError> {
    let (hash, hmac_alg) = match mac.mac.algorithm.oid {
        SHA1 => (
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        ),
        SHA256 => (&digest::SHA256, hmac::HMAC_SHA256),
        SHA384 => (&digest::SHA384, hmac::HMAC_SHA384),
        SHA512 => (&digest::SHA512, hmac::HMAC_SHA512),
        other => {
            return Err(DecryptError::Unsupported(format!(
                "PKCS#12 MAC algorithm {other}"
            )))
        }
    };
    let rounds = iterations(mac.iterations)?.get();
    let bmp = bmp_password(password);
    let key = pkcs12_kdf(
        hash,
        &bmp,
        mac.mac_salt.as_bytes(),
        3,
        rounds,
        hash.output_len(),
    );
    let key = hmac::Key::new(hmac_alg, &key);
    hmac::verify(&key, data, mac.mac.digest.as_bytes()).map_err(|_| {
        DecryptError::Key(
            "wrong PKCS#12 password (or the file is damaged: its MAC does not match)".into(),
        )
    })
}

/// The password as a NUL-terminated big-endian BMPString (RFC 7292 Appendix B.1).
fn bmp_password(password: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(password.len() * 2 + 2));
    for unit in password.encode_utf16().chain(std::iter::once(0)) {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out
}

/// RFC 7292 Appendix B.2: the PKCS#12 key derivation (ID 1 key, 2 IV, 3 MAC key).
fn pkcs12_kdf(
    hash: &'static digest::Algorithm,
    password: &[u8],
    salt: &[u8],
    id: u8,
    rounds: u32,
    len: usize,
) -> Zeroizing<Vec<u8>> {
    let (u, v) = (hash.output_len(), hash.block_len());
    let fill = |src: &[u8]| -> Zeroizing<Vec<u8>> {
        if src.is_empty() {
            return Zeroizing::new(Vec::new());
        }
        let n = v * src.len().div_ceil(v);
        Zeroizing::new(src.iter().copied().cycle().take(n).collect())
    };
    let d = vec![id; v];
    let mut i = fill(salt);
    i.extend_from_slice(&fill(password));
    let mut out = Zeroizing::new(Vec::with_capacity(len + u));
    while out.len() < len {
        let mut ctx = digest::Context::new(hash);
        ctx.update(&d);
        ctx.update(&i);
        let mut a = Zeroizing::new(ctx.finish().as_ref().to_vec());
        for _ in 1..rounds {
            let next = digest::digest(hash, &a);
            a.copy_from_slice(next.as_ref());
        }
        out.extend_from_slice(&a);
        let b: Zeroizing<Vec<u8>> = Zeroizing::new(a.iter().copied().cycle().take(v).collect());
        for block in i.chunks_mut(v) {
            // block = (block + b + 1) mod 2^(8v)
            let mut carry = 1u16;
            for (x, y) in block.iter_mut().rev().zip(b.iter().rev()) {
                let sum = u16::from(*x) + u16::from(*y) + carry;
                *x = sum as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(len);
    out
}

/// Decrypts a PBES2 (PBKDF2 + AES-CBC) encrypted blob.
fn decrypt_pbe(
    alg: &AlgorithmIdentifierOwned,
    ciphertext: &[u8],
    password: &str,
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    if alg.oid != PBES2 {
        let what = if alg.oid.to_string().starts_with(PKCS12_PBE_PREFIX) {
            format!(
                "legacy PKCS#12 encryption ({}, 3DES/RC2); re-export the file with AES: \
                 openssl pkcs12 -in OLD.p12 -legacy -nodes | openssl pkcs12 -export -out NEW.p12",
                alg.oid
            )
        } else {
            format!("PKCS#12 encryption algorithm {}", alg.oid)
        };
        return Err(DecryptError::Unsupported(what));
    }
    let params_der = alg
        .parameters
        .as_ref()
        .ok_or_else(|| bad("PBES2 without parameters"))?;
    let params = params_der
        .decode_as::<pbes2::Parameters>()
        .map_err(|e| DecryptError::Unsupported(format!("PBES2 parameters: {e}")))?;
    let pbes2::Kdf::Pbkdf2(kdf) = &params.kdf else {
        return Err(DecryptError::Unsupported("PBES2 with scrypt".into()));
    };
    let prf = match kdf.prf {
        pbes2::Pbkdf2Prf::HmacWithSha1 => pbkdf2::PBKDF2_HMAC_SHA1,
        pbes2::Pbkdf2Prf::HmacWithSha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        pbes2::Pbkdf2Prf::HmacWithSha384 => pbkdf2::PBKDF2_HMAC_SHA384,
        pbes2::Pbkdf2Prf::HmacWithSha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        other => return Err(DecryptError::Unsupported(format!("PBKDF2 with {other:?}"))),
    };
    let (cipher_alg, key_len, iv) = match params.encryption {
        pbes2::EncryptionScheme::Aes128Cbc { iv } => (&cipher::AES_128, 16, iv),
        pbes2::EncryptionScheme::Aes192Cbc { iv } => (&cipher::AES_192, 24, iv),
        pbes2::EncryptionScheme::Aes256Cbc { iv } => (&cipher::AES_256, 32, iv),
        other => return Err(DecryptError::Unsupported(format!("PBES2 with {other:?}"))),
    };
    let mut key = Zeroizing::new(vec![0u8; key_len]);
    pbkdf2::derive(
        prf,
        iterations(kdf.iteration_count)?,
        kdf.salt.as_bytes(),
        password.as_bytes(),
        &mut key,
    );
    let wrong = || {
        DecryptError::Key("PKCS#12 contents do not decrypt: wrong password or damaged file".into())
    };
    let key = UnboundCipherKey::new(cipher_alg, &key)
        .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
        .map_err(|_| wrong())?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .decrypt(&mut buf, DecryptionContext::Iv128(iv.into()))
        .map_err(|_| wrong())?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs12_kdf_matches_a_known_vector() {
        // From the pkcs12 crate's tests, checked there against OpenSSL's PKCS12_key_gen_utf8:
        // SHA-256, password "ge@äheim", salt 0x0102030405060708, 100 iterations, 32 bytes.
        let key = pkcs12_kdf(
            &digest::SHA256,
            &bmp_password("ge@äheim"),
            &[1, 2, 3, 4, 5, 6, 7, 8],
            1,
            100,
            32,
        );
        assert_eq!(
            hex::encode(key.as_slice()),
            "fae4d4957a3cc781e1180b9d4fb79c1e0c8579b746a3177e5b0768a3118bf863"
        );
        let mac = pkcs12_kdf(
            &digest::SHA256,
            &bmp_password("ge@äheim"),
            &[1, 2, 3, 4, 5, 6, 7, 8],
            3,
            100,
            20,
        );
        assert_eq!(
            hex::encode(mac.as_slice()),
            "136355ed9434516682534f46d63956db5ff06b84"
        );
    }

    #[test]
    fn bmp_password_is_utf16_be_with_terminator() {
        assert_eq!(bmp_password("ab").as_slice(), &[0, b'a', 0, b'b', 0, 0]);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            parse(b"not pkcs12", "x"),
            Err(DecryptError::Key(_))
        ));
        assert!(matches!(
            parse(&[0x30, 0x80], "x"),
            Err(DecryptError::Key(_))
        ));
    }
}
