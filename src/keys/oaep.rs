//! RSAES-OAEP decoding (RFC 8017 §7.1.2; SHA-256, MGF1-SHA-256, empty label) of a block that a
//! token decrypted with raw RSA (CKM_RSA_X_509). Used for tokens whose own OAEP offers SHA-1
//! only (SoftHSM 2.6): the private key stays in the token, only the padding is removed here.
//! The checks run in constant time over the block and fail as one, whichever check failed.

use aws_lc_rs::digest::{digest, Context, SHA256};
use zeroize::Zeroizing;

const H_LEN: usize = 32;

/// MGF1 with SHA-256: `len` bytes of mask from `seed`.
fn mgf1(seed: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + H_LEN));
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut ctx = Context::new(&SHA256);
        ctx.update(seed);
        ctx.update(&counter.to_be_bytes());
        out.extend_from_slice(ctx.finish().as_ref());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// 0xFF when `b` is zero, else 0x00.
fn zero_mask(b: u8) -> u8 {
    let x = u32::from(b);
    let is_zero = ((x | x.wrapping_neg()) >> 31) ^ 1;
    0u8.wrapping_sub(is_zero as u8)
}

/// The message inside the encoded block `em` of a `k`-byte modulus, or `None`.
pub fn decode_sha256(em: &[u8], k: usize) -> Option<Zeroizing<Vec<u8>>> {
    if k < 2 * H_LEN + 2 || em.len() > k {
        return None;
    }
    let mut block = Zeroizing::new(vec![0u8; k]);
    block[k - em.len()..].copy_from_slice(em);
    let (masked_seed, masked_db) = block[1..].split_at(H_LEN);
    let seed_mask = mgf1(masked_db, H_LEN);
    let seed: Zeroizing<Vec<u8>> = Zeroizing::new(
        masked_seed
            .iter()
            .zip(seed_mask.iter())
            .map(|(a, b)| a ^ b)
            .collect(),
    );
    let db_mask = mgf1(&seed, masked_db.len());
    let db: Zeroizing<Vec<u8>> = Zeroizing::new(
        masked_db
            .iter()
            .zip(db_mask.iter())
            .map(|(a, b)| a ^ b)
            .collect(),
    );
    let l_hash = digest(&SHA256, b"");
    // good: 0xFF while every check passes.
    let mut good = zero_mask(block[0]);
    let mut diff = 0u8;
    for (a, b) in l_hash.as_ref().iter().zip(&db[..H_LEN]) {
        diff |= a ^ b;
    }
    good &= zero_mask(diff);
    // After lHash: zero bytes, one 0x01, then the message. Find the 0x01 without branching.
    let mut looking = 0xFFu8;
    let mut index = 0usize;
    for (i, &b) in db[H_LEN..].iter().enumerate() {
        let is_zero = zero_mask(b);
        let is_one = zero_mask(b ^ 1);
        let found = looking & is_one;
        let found_wide = usize::from(found & 1).wrapping_neg();
        index = (i & found_wide) | (index & !found_wide);
        good &= !(looking & !is_zero & !is_one);
        looking &= !found;
    }
    good &= !looking;
    if good != 0xFF {
        return None;
    }
    Some(Zeroizing::new(db[H_LEN + index + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OAEP-SHA256 block for `m` with `seed` (RFC 8017 §7.1.1 step 2), built independently
    /// of the decoder's loop.
    fn encode(m: &[u8], k: usize, seed: [u8; 32]) -> Vec<u8> {
        let mut db = digest(&SHA256, b"").as_ref().to_vec();
        db.resize(k - m.len() - H_LEN - 2, 0);
        db.push(1);
        db.extend_from_slice(m);
        let db_mask = mgf1(&seed, db.len());
        let masked_db: Vec<u8> = db.iter().zip(db_mask.iter()).map(|(a, b)| a ^ b).collect();
        let seed_mask = mgf1(&masked_db, H_LEN);
        let mut em = vec![0u8];
        em.extend(seed.iter().zip(seed_mask.iter()).map(|(a, b)| a ^ b));
        em.extend(masked_db);
        em
    }

    #[test]
    fn decodes_what_oaep_encodes_and_refuses_any_flipped_byte() {
        let m = [7u8; 32];
        let em = encode(&m, 256, [9u8; 32]);
        assert_eq!(decode_sha256(&em, 256).unwrap().as_slice(), &m);
        // A block the token returned without its leading zero still decodes.
        assert_eq!(decode_sha256(&em[1..], 256).unwrap().as_slice(), &m);
        for i in [0, 1, 20, 40, 100, 255] {
            let mut bad = em.clone();
            bad[i] ^= 0x01;
            assert!(decode_sha256(&bad, 256).is_none(), "byte {i} flipped");
        }
        assert!(decode_sha256(&em, 64).is_none());
        let empty = encode(b"", 256, [1u8; 32]);
        assert_eq!(decode_sha256(&empty, 256).unwrap().len(), 0);
    }

    #[test]
    fn mgf1_matches_rfc_8017_counter_layout() {
        let mask = mgf1(b"seed", 40);
        let mut first = Context::new(&SHA256);
        first.update(b"seed\0\0\0\0");
        let mut second = Context::new(&SHA256);
        second.update(b"seed\0\0\0\x01");
        assert_eq!(&mask[..32], first.finish().as_ref());
        assert_eq!(&mask[32..], &second.finish().as_ref()[..8]);
    }
}
