//! The lookup-table polynomials of a circuit's tables.
//!
//! tfhe's own tables have `message_modulus * carry_modulus` boxes; a circuit's tables have
//! `2^p`, so the accumulator is built here the way `fill_accumulator_with_encoding` builds
//! tfhe's: box `i` fills `N / 2^p` coefficients with its output, then the polynomial is
//! rotated left by half a box with the first half box negated. Box `i` is so centred on
//! phase `i Δ`, `Δ = 2^(63-p)`, and reads past `2^p` boxes give the negated entries
//! (negacyclic), exactly as [`hecnn_compile::circuit::Stage::read_table`] reads.

use tfhe::core_crypto::prelude::{CiphertextModulus, GlweCiphertext, GlweSize, PolynomialSize};
use tfhe::shortint::ciphertext::Degree;
use tfhe::shortint::server_key::LookupTableOwned;

use crate::encoding::LevelScale;

/// The accumulator reading `levels` (one per box), each output encoded at `output`.
pub fn lookup_table(
    levels: &[u32],
    output: LevelScale,
    glwe_size: GlweSize,
    polynomial_size: PolynomialSize,
) -> LookupTableOwned {
    let box_size = polynomial_size.0 / levels.len();
    assert!(
        box_size >= 2 && box_size * levels.len() == polynomial_size.0,
        "sets are selected to hold the circuit's tables"
    );
    let mut acc = GlweCiphertext::new(
        0u64,
        glwe_size,
        polynomial_size,
        CiphertextModulus::new_native(),
    );
    let mut body = acc.get_mut_body();
    let coefficients = body.as_mut();
    for (entry, &level) in coefficients.chunks_exact_mut(box_size).zip(levels) {
        entry.fill(output.encode(i64::from(level)));
    }
    let half_box = box_size / 2;
    for c in &mut coefficients[..half_box] {
        *c = c.wrapping_neg();
    }
    coefficients.rotate_left(half_box);
    LookupTableOwned {
        acc,
        degree: Degree::new(levels.len() as u64 - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coefficient the blind rotation by `phase` (in `2N` units) brings to position 0
    /// of a negacyclic polynomial.
    fn read(coefficients: &[u64], phase: usize) -> u64 {
        let n = coefficients.len();
        if phase < n {
            coefficients[phase]
        } else {
            coefficients[phase - n].wrapping_neg()
        }
    }

    #[test]
    fn boxes_are_centred_and_negacyclic() {
        let scale = LevelScale::of_stage(&hecnn_compile::circuit::Stage {
            label: "dense".into(),
            linear: hecnn_compile::circuit::Linear::Dense {
                inputs: 1,
                weights: vec![1],
            },
            input_max: 8,
            input_unit: 1 << 61,
            read: hecnn_compile::circuit::Read::Logits(hecnn_compile::circuit::Decoding {
                scale: vec![1.0],
                shift: vec![0.0],
            }),
        });
        let levels = [5, 6, 7, 8];
        let lut = lookup_table(&levels, scale, GlweSize(2), PolynomialSize(16));
        let body = lut.acc.get_body();
        let coefficients = body.as_ref();
        // Box width 4 in N = 16; entry t is centred on phase 4t of 2N = 32.
        for t in 0..8usize {
            let expected = if t < 4 {
                scale.encode(i64::from(levels[t]))
            } else {
                scale.encode(-i64::from(levels[t - 4]))
            };
            for delta in [-2i64, -1, 0, 1] {
                let phase = (4 * t as i64 + delta).rem_euclid(32) as usize;
                assert_eq!(read(coefficients, phase), expected, "t {t} delta {delta}");
            }
        }
        assert!(lut.acc.get_mask().as_ref().iter().all(|&c| c == 0));
    }
}
