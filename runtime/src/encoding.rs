//! Where integer levels sit on the torus `Z/2^64`: the encoding fixed in
//! [`hecnn_compile::circuit`]'s documentation.
//!
//! A stage's input level `x` is worth `x u` on the torus (`u`: the stage's input unit), so
//! that its accumulators, plus their offsets, land in table entry `floor((A u + O) / Δ +
//! 1/2)` after the PBS's modulus switch.

use hecnn_compile::circuit::Stage;
use serde::{Deserialize, Serialize};

/// The torus value of one level of a stage's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LevelScale {
    unit: u64,
}

impl LevelScale {
    /// The scale of `stage`'s inputs.
    pub fn of_stage(stage: &Stage) -> Self {
        Self {
            unit: stage.input_unit,
        }
    }

    /// The torus value of `level` (any sign: negative levels wrap, as the torus does).
    pub fn encode(self, level: i64) -> u64 {
        (level as u64).wrapping_mul(self.unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hecnn_compile::circuit::{Decoding, Linear, Read};

    #[test]
    fn levels_round_trip_with_sign() {
        let stage = Stage {
            label: "dense".into(),
            linear: Linear::Dense {
                inputs: 1,
                weights: vec![1],
            },
            input_max: 127,
            input_unit: 3 << 50,
            read: Read::Logits(Decoding {
                scale: vec![1.0],
                shift: vec![0.0],
            }),
        };
        let scale = LevelScale::of_stage(&stage);
        assert_eq!(scale.encode(1), 3 << 50);
        for level in [-127i64, -1, 0, 1, 17, 127] {
            assert_eq!(stage.decode_accumulator(scale.encode(level)), level as f64);
        }
        // A little noise below zero reads as a little below zero.
        let phase = 0u64.wrapping_sub(3 << 48);
        assert!((stage.decode_accumulator(phase) + 0.25).abs() < 1e-12);
    }
}
