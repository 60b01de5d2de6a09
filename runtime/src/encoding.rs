//! Where integer levels sit on the torus `Z/2^64`: the encoding fixed in
//! [`hecnn_compile::circuit`]'s documentation.
//!
//! With `p` table bits and a stage's rounding bits `k`, one input level of that stage is
//! worth `2^(63-p-k)` (the top bit is the padding bit), so its accumulators, plus their
//! offsets, land in table entry `round((A + O) / 2^k)` after the PBS's modulus switch.

use hecnn_compile::circuit::{LutBits, RoundingBits, Stage};

/// The torus value of one level, `2^log2` (a power of two below `2^63`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelScale {
    log2: u32,
}

impl LevelScale {
    /// The scale of `stage`'s inputs: `2^(63-p-k)`. Validated circuits keep `p + k <= 62`.
    pub fn of_stage(lut_bits: LutBits, stage: &Stage) -> Self {
        Self::new(lut_bits, stage.rounding_bits)
    }

    /// `2^(63-p-k)`.
    pub fn new(lut_bits: LutBits, rounding_bits: RoundingBits) -> Self {
        let log2 = 63 - lut_bits.get() - rounding_bits.0;
        assert!(log2 >= 1, "validated circuits keep p + k <= 62");
        Self { log2 }
    }

    /// The torus value of `level` (any sign: negative levels wrap, as the torus does).
    pub fn encode(self, level: i64) -> u64 {
        (level as u64).wrapping_shl(self.log2)
    }

    /// A decrypted phase read back in levels, as a signed value: phases just below zero
    /// are small negative levels, not the top of the torus.
    pub fn decode(self, phase: u64) -> f64 {
        phase as i64 as f64 / (1u64 << self.log2) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_with_sign() {
        let scale = LevelScale::new(LutBits::new(4).unwrap(), RoundingBits(3));
        assert_eq!(scale.encode(1), 1 << 56);
        for level in [-127i64, -1, 0, 1, 17, 127] {
            assert_eq!(scale.decode(scale.encode(level)), level as f64);
        }
        // A little noise below zero reads as a little below zero.
        assert!((scale.decode(0u64.wrapping_sub(1 << 50)) + 1.0 / 64.0).abs() < 1e-12);
    }
}
