//! RS256 signatures (RSASSA-PKCS1-v1_5 with SHA-256, RFC 8017 §8.2) with a PKCS#8 RSA private
//! key: the one operation Vertex AI's token exchange needs.
//!
//! Hand-written because the general-purpose `rsa` crate added 129 KB to this module (an 8%
//! slower Envoy start and swap for one signature an hour); this is a few KB. PKCS#1 v1.5
//! signatures are deterministic, so the tests check every signature byte for byte against the
//! `rsa` crate's. The exponentiation is not constant-time: it runs only when a cached token
//! nears expiry (about once an hour per worker), never on request from a client.

use aigw_shared::sign::sha256;

/// DER prefix of a SHA-256 `DigestInfo` (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// OID 1.2.840.113549.1.1.1 (`rsaEncryption`), DER-encoded with its tag and length.
const RSA_ENCRYPTION: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// An RSA private key: the modulus and the private exponent, as little-endian 32-bit limbs.
pub struct PrivateKey {
    n: Vec<u32>,
    d: Vec<u32>,
    /// Modulus length in bytes (the signature's length).
    size: usize,
}

impl PrivateKey {
    /// Reads a PKCS#8 `PrivateKeyInfo` holding an RSA key (what `-----BEGIN PRIVATE KEY-----`
    /// blocks and Google's key files carry).
    pub fn from_pkcs8_der(der: &[u8]) -> Option<PrivateKey> {
        let (info, _) = element(der, 0x30)?;
        let (_version, rest) = element(info, 0x02)?;
        let (algorithm, rest) = element(rest, 0x30)?;
        if !algorithm.starts_with(&RSA_ENCRYPTION) {
            return None;
        }
        let (key, _) = element(rest, 0x04)?;
        let (key, _) = element(key, 0x30)?;
        let (_version, rest) = element(key, 0x02)?;
        let (n, rest) = element(rest, 0x02)?;
        let (_e, rest) = element(rest, 0x02)?;
        let (d, _) = element(rest, 0x02)?;
        let n = trim(n);
        if n.len() < 128 || n.last()? & 1 == 0 {
            return None; // under 1024 bits, or even: not an RSA modulus
        }
        Some(PrivateKey {
            size: n.len(),
            n: limbs(n, n.len()),
            d: limbs(trim(d), n.len()),
        })
    }

    /// The RS256 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        // EM = 0x00 0x01 PS(0xff…) 0x00 DigestInfo(SHA-256(message)), as long as the modulus.
        let mut em = vec![0xffu8; self.size];
        em[0] = 0;
        em[1] = 1;
        let t = self.size - SHA256_DIGEST_INFO.len() - 32;
        em[t - 1] = 0;
        em[t..t + SHA256_DIGEST_INFO.len()].copy_from_slice(&SHA256_DIGEST_INFO);
        em[t + SHA256_DIGEST_INFO.len()..].copy_from_slice(&sha256(message));
        let signature = Montgomery::new(&self.n).pow(&limbs(&em, self.size), &self.d);
        to_bytes(&signature, self.size)
    }
}

/// The contents of the DER element at the start of `data` with tag `tag`, and what follows.
fn element(data: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *data.first()? != tag {
        return None;
    }
    let first = *data.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let count = first & 0x7f;
        if count == 0 || count > 4 {
            return None;
        }
        let len = data
            .get(2..2 + count)?
            .iter()
            .fold(0usize, |n, &b| n << 8 | b as usize);
        (len, 2 + count)
    };
    let end = header.checked_add(len)?;
    Some((data.get(header..end)?, &data[end..]))
}

/// A big-endian integer without its leading zero bytes.
fn trim(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    &bytes[zeros..]
}

/// Big-endian bytes as little-endian limbs, as many as a `size`-byte number needs.
fn limbs(bytes: &[u8], size: usize) -> Vec<u32> {
    let mut out = vec![0u32; size.div_ceil(4)];
    for (i, &b) in bytes.iter().rev().enumerate() {
        out[i / 4] |= (b as u32) << (8 * (i % 4));
    }
    out
}

fn to_bytes(limbs: &[u32], size: usize) -> Vec<u8> {
    (0..size)
        .rev()
        .map(|i| (limbs[i / 4] >> (8 * (i % 4))) as u8)
        .collect()
}

/// Arithmetic modulo an odd `n` in Montgomery form (R = 2^(32·limbs)).
struct Montgomery<'a> {
    n: &'a [u32],
    /// -n⁻¹ mod 2³²
    n_prime: u32,
}

impl<'a> Montgomery<'a> {
    fn new(n: &'a [u32]) -> Self {
        // Newton's iteration doubles the correct low bits of n⁻¹ each round: 1 → 32 in 5.
        let mut inverse: u32 = 1;
        for _ in 0..5 {
            inverse = inverse.wrapping_mul(2u32.wrapping_sub(n[0].wrapping_mul(inverse)));
        }
        Montgomery {
            n,
            n_prime: inverse.wrapping_neg(),
        }
    }

    /// a·b·R⁻¹ mod n, for a, b < n (CIOS).
    fn mul(&self, a: &[u32], b: &[u32]) -> Vec<u32> {
        let len = self.n.len();
        let mut t = vec![0u32; len + 2];
        for &ai in a {
            let mut carry = 0u64;
            for j in 0..len {
                let s = t[j] as u64 + ai as u64 * b[j] as u64 + carry;
                t[j] = s as u32;
                carry = s >> 32;
            }
            let s = t[len] as u64 + carry;
            t[len] = s as u32;
            t[len + 1] = (s >> 32) as u32;
            let m = t[0].wrapping_mul(self.n_prime);
            let mut carry = (t[0] as u64 + m as u64 * self.n[0] as u64) >> 32;
            for j in 1..len {
                let s = t[j] as u64 + m as u64 * self.n[j] as u64 + carry;
                t[j - 1] = s as u32;
                carry = s >> 32;
            }
            let s = t[len] as u64 + carry;
            t[len - 1] = s as u32;
            t[len] = t[len + 1] + (s >> 32) as u32;
            t[len + 1] = 0;
        }
        t.truncate(len + 1);
        if t[len] != 0 || !less(&t[..len], self.n) {
            subtract(&mut t, self.n);
        }
        t.truncate(len);
        t
    }

    /// 2^bits mod n, by doubling.
    fn power_of_two(&self, bits: usize) -> Vec<u32> {
        let len = self.n.len();
        let mut x = vec![0u32; len + 1];
        x[0] = 1;
        for _ in 0..bits {
            let mut carry = 0;
            for limb in x.iter_mut() {
                let next = *limb >> 31;
                *limb = *limb << 1 | carry;
                carry = next;
            }
            if x[len] != 0 || !less(&x[..len], self.n) {
                subtract(&mut x, self.n);
            }
        }
        x.truncate(len);
        x
    }

    /// base^exponent mod n, for base < n (left-to-right square and multiply).
    fn pow(&self, base: &[u32], exponent: &[u32]) -> Vec<u32> {
        let r_squared = self.power_of_two(64 * self.n.len());
        let base = self.mul(base, &r_squared);
        let mut one = vec![0u32; self.n.len()];
        one[0] = 1;
        let mut x = self.mul(&one, &r_squared);
        for bit in (0..exponent.len() * 32).rev() {
            x = self.mul(&x, &x);
            if exponent[bit / 32] >> (bit % 32) & 1 == 1 {
                x = self.mul(&x, &base);
            }
        }
        self.mul(&x, &one)
    }
}

/// a < b, both little-endian with the same number of limbs.
fn less(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// a -= b (a may have one more limb than b, and is at least b).
fn subtract(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0i64;
    for (i, limb) in a.iter_mut().enumerate() {
        let s = *limb as i64 - b.get(i).copied().unwrap_or(0) as i64 - borrow;
        *limb = s as u32;
        borrow = (s < 0) as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
    use rsa::{Pkcs1v15Sign, RsaPrivateKey};

    fn reference_signature(key: &RsaPrivateKey, message: &[u8]) -> Vec<u8> {
        let mut prefixed = SHA256_DIGEST_INFO.to_vec();
        prefixed.extend_from_slice(&sha256(message));
        key.sign(Pkcs1v15Sign::new_unprefixed(), &prefixed).unwrap()
    }

    #[test]
    fn signatures_match_the_rsa_crate_byte_for_byte() {
        let pem = serde_json::from_str::<serde_json::Value>(
            crate::vertex_auth::tests::TEST_ONLY_KEY_FILE,
        )
        .unwrap()["private_key"]
            .as_str()
            .unwrap()
            .to_string();
        let reference = RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
        let der = reference.to_pkcs8_der().unwrap();
        let key = PrivateKey::from_pkcs8_der(der.as_bytes()).unwrap();
        for message in [&b""[..], b"header.claims", &[0xffu8; 300][..]] {
            assert_eq!(key.sign(message), reference_signature(&reference, message));
        }
    }

    #[test]
    fn other_key_sizes_match_too() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for bits in [1024, 1536, 3072] {
            let reference = RsaPrivateKey::new(&mut rng, bits).unwrap();
            let der = reference.to_pkcs8_der().unwrap();
            let key = PrivateKey::from_pkcs8_der(der.as_bytes()).unwrap();
            assert_eq!(
                key.sign(b"jwt"),
                reference_signature(&reference, b"jwt"),
                "{bits} bits"
            );
        }
    }

    #[test]
    fn what_is_not_an_rsa_pkcs8_key_is_refused() {
        assert!(PrivateKey::from_pkcs8_der(b"").is_none());
        assert!(PrivateKey::from_pkcs8_der(&[0x30, 0x82, 0xff, 0xff, 0x02]).is_none());
        // An EC key's PKCS#8 header (OID 1.2.840.10045.2.1).
        let ec = [
            0x30, 0x13, 0x02, 0x01, 0x00, 0x30, 0x0e, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
            0x02, 0x01, 0x06, 0x03, 0x2b, 0x81, 0x04,
        ];
        assert!(PrivateKey::from_pkcs8_der(&ec).is_none());
    }

    use rand::SeedableRng;
}
