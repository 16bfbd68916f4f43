//! Ed25519 verification, one signature at a time or many at once, with one verdict for
//! both.
//!
//! A signature `(R, s)` by key `A` over `M` is accepted when:
//! - `A` and `R` are canonical encodings (y < p) of curve points that are not of small
//!   order, and `s < ℓ`;
//! - the *cofactored* equation `[8](s·B − k·A − R) = 0` holds, with
//!   `k = SHA-512(R ‖ A ‖ M) mod ℓ` (RFC 8032 §5.1.7).
//!
//! Why cofactored: a batch check (one multi-scalar multiplication for many signatures,
//! about half the cost per signature) can only agree with single checks on every input if
//! both use the cofactored equation ("Taming the many EdDSAs", Chalkias et al. 2020). With
//! the cofactorless equation a signer can make a signature whose verdict depends on the
//! batch's random coefficients; in a gossip network that lets one node forward what the
//! next refuses (and then cuts off the honest forwarder). Every signature made by a
//! standard signer passes both equations; the cofactored one additionally accepts an `R`
//! with a torsion component, which only the key's owner can produce and which changes
//! nothing: the message id does not cover the signature.
//!
//! Compared with ed25519-dalek's `verify_strict`: the same refusals of small-order keys and
//! `R`, non-canonical `R` and `s ≥ ℓ`, plus non-canonical keys; the cofactored equation
//! instead of the cofactorless one.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand::RngCore;
use sha2::{Digest, Sha512};

/// A public key decoded once for any number of checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VerifyKey {
    bytes: [u8; 32],
    point: EdwardsPoint,
}

impl VerifyKey {
    /// The key, if `bytes` is the canonical encoding of a point not of small order.
    pub(crate) fn decode(bytes: &[u8; 32]) -> Option<Self> {
        decode_point(bytes).map(|point| VerifyKey {
            bytes: *bytes,
            point,
        })
    }
}

/// A canonical encoding (y < p = 2²⁵⁵ − 19) of a point that is not of small order.
fn decode_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    // y ≥ p only when y is 2²⁵⁵ − 19 … 2²⁵⁵ − 1: top byte 0x7f (sign bit aside), the
    // middle bytes 0xff and the low byte ≥ 0xed. (x = 0 with the sign bit set decodes to
    // a small-order point, refused below.)
    let high = bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff);
    if high && bytes[0] >= 0xed {
        return None;
    }
    let point = CompressedEdwardsY(*bytes).decompress()?;
    (!point.is_small_order()).then_some(point)
}

/// One signature, decoded and hashed, ready for either equation.
struct Prepared<'a> {
    key: &'a VerifyKey,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

fn prepare<'a>(key: &'a VerifyKey, msg: &[u8], sig: &[u8; 64]) -> Option<Prepared<'a>> {
    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&sig[..32]);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&sig[32..]);
    let r = decode_point(&r_bytes)?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(key.bytes);
    h.update(msg);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h.finalize());
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    Some(Prepared { key, r, s, k })
}

/// Checks one signature (see the module docs for the rules).
pub(crate) fn verify(key: &VerifyKey, msg: &[u8], sig: &[u8; 64]) -> bool {
    let Some(p) = prepare(key, msg, sig) else {
        return false;
    };
    // s·B − k·A, then − R, times the cofactor.
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&-p.k, &p.key.point, &p.s);
    (sb_minus_ka - p.r).mul_by_cofactor().is_identity()
}

/// Whether every signature of `items` passes [`verify`], in one multi-scalar
/// multiplication: `[8](Σ zᵢ·(sᵢ·B − kᵢ·Aᵢ − Rᵢ)) = 0` with random 128-bit `zᵢ` (so a
/// false signature passes only with probability about 2⁻¹²⁵). `false` says that at least
/// one fails, not which. Terms of one key are merged, so a batch from few authors costs
/// little more than its `R`s.
pub(crate) fn verify_batch(items: &[(&VerifyKey, &[u8], &[u8; 64])]) -> bool {
    let mut rng = rand::thread_rng();
    let mut b_coeff = Scalar::ZERO;
    let mut scalars: Vec<Scalar> = Vec::with_capacity(items.len() + 2);
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(items.len() + 2);
    // Merged key terms: (key bytes, Σ zᵢ·kᵢ); few distinct authors, so a linear scan.
    let mut keys: Vec<(&VerifyKey, Scalar)> = Vec::new();
    for (key, msg, sig) in items {
        let Some(p) = prepare(key, msg, sig) else {
            return false;
        };
        let mut z_bytes = [0u8; 32];
        rng.fill_bytes(&mut z_bytes[..16]);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        b_coeff += z * p.s;
        scalars.push(-z);
        points.push(p.r);
        match keys.iter_mut().find(|(k, _)| k.bytes == p.key.bytes) {
            Some((_, sum)) => *sum += z * p.k,
            None => keys.push((p.key, z * p.k)),
        }
    }
    for (key, sum) in keys {
        scalars.push(-sum);
        points.push(key.point);
    }
    scalars.push(b_coeff);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A signature made from raw scalars (key `a`, nonce `r`), with `R = r·B + torsion`:
    /// what a standard signer makes when `torsion` is the identity.
    fn raw_sign(a: Scalar, r: Scalar, torsion: EdwardsPoint, msg: &[u8]) -> ([u8; 32], [u8; 64]) {
        let key = (a * ED25519_BASEPOINT_POINT).compress().to_bytes();
        let big_r = (r * ED25519_BASEPOINT_POINT + torsion)
            .compress()
            .to_bytes();
        let mut h = Sha512::new();
        h.update(big_r);
        h.update(key);
        h.update(msg);
        let mut wide = [0u8; 64];
        wide.copy_from_slice(&h.finalize());
        let k = Scalar::from_bytes_mod_order_wide(&wide);
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&big_r);
        sig[32..].copy_from_slice(s.as_bytes());
        (key, sig)
    }

    fn scalar(rng: &mut ChaCha8Rng) -> Scalar {
        let mut b = [0u8; 64];
        rng.fill_bytes(&mut b);
        Scalar::from_bytes_mod_order_wide(&b)
    }

    /// Key bytes, message, signature, expected verdict.
    type Case = ([u8; 32], Vec<u8>, [u8; 64], bool);

    /// Cases of every kind.
    fn cases() -> Vec<Case> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut out = Vec::new();
        for i in 0..6u8 {
            let (a, r) = (scalar(&mut rng), scalar(&mut rng));
            let msg = vec![i; 10 + usize::from(i)];
            let (key, sig) = raw_sign(a, r, EdwardsPoint::default(), &msg);
            out.push((key, msg.clone(), sig, true));
            // Tampered message, R, s.
            let mut other = msg.clone();
            other[0] ^= 1;
            out.push((key, other, sig, false));
            for byte in [0usize, 31, 32, 63] {
                let mut bad = sig;
                bad[byte] ^= 0x01;
                out.push((key, msg.clone(), bad, false));
            }
            // s ≥ ℓ: s + ℓ, the same residue, not canonical.
            let mut big = sig;
            let s =
                Scalar::from_canonical_bytes(<[u8; 32]>::try_from(&sig[32..]).unwrap()).unwrap();
            let mut wide = [0u8; 32];
            // ℓ + s may overflow 256 bits only for s near 2²⁵³; these s are far below.
            // ℓ = (ℓ − 1) + 1; the low byte of ℓ − 1 is 0xec, so no carry.
            let mut l = (-Scalar::ONE).to_bytes();
            l[0] += 1;
            let mut carry = 0u16;
            for j in 0..32 {
                let v = u16::from(s.as_bytes()[j]) + u16::from(l[j]) + carry;
                wide[j] = v as u8;
                carry = v >> 8;
            }
            big[32..].copy_from_slice(&wide);
            out.push((key, msg.clone(), big, false));
            // R with a torsion component: made only by the key's owner; accepted by the
            // cofactored equation, single and batched alike.
            let (tkey, tsig) = raw_sign(a, r, EIGHT_TORSION[1 + usize::from(i) % 7], &msg);
            out.push((tkey, msg.clone(), tsig, true));
        }
        // Small-order key and R (the identity), s = 0: the cofactorless equation holds for
        // any message.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&ident);
        out.push((ident, b"anything".to_vec(), sig, false));
        // Non-canonical encodings: y = p + 1 (the identity again, unreduced) as R, and a
        // key with y ≥ p.
        let (key, good) = raw_sign(
            scalar(&mut rng),
            scalar(&mut rng),
            EdwardsPoint::default(),
            b"m",
        );
        let mut noncanon = good;
        noncanon[..32].copy_from_slice(&[
            0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ]);
        out.push((key, b"m".to_vec(), noncanon, false));
        let mut big_y = [0xff; 32];
        big_y[31] = 0x7f;
        out.push((big_y, b"m".to_vec(), good, false));
        // Key bytes that are no point.
        out.push(([0xff; 32], b"m".to_vec(), good, false));
        out
    }

    #[test]
    fn single_verdicts() {
        for (key, msg, sig, want) in cases() {
            let got = VerifyKey::decode(&key).is_some_and(|k| verify(&k, &msg, &sig));
            assert_eq!(got, want, "key {key:02x?} sig {sig:02x?}");
        }
    }

    /// Signatures made by ed25519-dalek (a standard signer) pass, and its strict check
    /// agrees with ours on them.
    #[test]
    fn standard_signatures_pass() {
        use ed25519_dalek::{Signer, SigningKey};
        for seed in 0..8u8 {
            let sk = SigningKey::from_bytes(&[seed; 32]);
            let key = VerifyKey::decode(sk.verifying_key().as_bytes()).unwrap();
            let msg = [seed; 40];
            let sig = sk.sign(&msg).to_bytes();
            assert!(verify(&key, &msg, &sig));
            assert!(verify_batch(&[(&key, &msg[..], &sig)]));
        }
    }

    /// A batch passes exactly when every member passes alone, for every mix of valid and
    /// invalid members (several runs, so different random coefficients).
    #[test]
    fn batch_agrees_with_single_checks() {
        let all = cases();
        let decoded: Vec<_> = all
            .iter()
            .map(|(key, msg, sig, want)| (VerifyKey::decode(key), msg, sig, *want))
            .collect();
        let usable: Vec<_> = decoded
            .iter()
            .filter_map(|(k, m, s, w)| k.map(|k| (k, m.as_slice(), *s, *w)))
            .collect();
        let valid: Vec<_> = usable.iter().filter(|c| c.3).collect();
        let invalid: Vec<_> = usable.iter().filter(|c| !c.3).collect();
        assert!(valid.len() >= 12 && invalid.len() >= 30);
        for _ in 0..3 {
            let batch: Vec<_> = valid.iter().map(|c| (&c.0, c.1, c.2)).collect();
            assert!(verify_batch(&batch), "all valid");
            for bad in &invalid {
                let mut batch: Vec<_> = valid.iter().map(|c| (&c.0, c.1, c.2)).collect();
                batch.insert(batch.len() / 2, (&bad.0, bad.1, bad.2));
                assert!(!verify_batch(&batch), "one invalid: {:02x?}", bad.2);
            }
        }
        assert!(verify_batch(&[]), "an empty batch has nothing false in it");
    }
}
