//! The read grid: where an activation's inputs fall in its lookup table, in the units of
//! the network (the pre-activation `z`).
//!
//! Channel `c`'s table holds at entry `t` the next stage's level for
//! `z = origin_c + t step_c`, and a read of `z` lands on entry `t = floor((z - origin_c) /
//! step_c + 1/2)`. Circuit-aware training reads its activations' inputs through this very
//! grid (clamped to the table, plus sampled noise), and the compiler builds the tables on it,
//! so that the trained network and the circuit compute one function.
//!
//! One stage's outputs share their input ciphertexts and so one torus value per input
//! level: its accumulators `A` are read at a common `D` accumulator units per entry
//! (`t = floor((A + O_j) / D + 1/2)`). With `z_j = S_c A_j + C_j` and
//! `S_c = sigma_c alpha / area` (weight scale `sigma_c`, input level step `alpha`, pooling
//! area), a grid step `step_c` holds exactly when `sigma_c = step_c area / (alpha D)`: the
//! weights of each channel are quantised at the scale its grid asks for. `D` is chosen
//! ([`accumulator_step`]) so that no channel's integer weights exceed the layer's
//! width: a channel whose range is wide for its weights reads its table at the full
//! width, and every channel fills its table.

use serde::{Deserialize, Serialize};

use crate::quantize::{BitWidth, LutBits, QuantRange};

/// Entries kept free at each end of every table: a range's least value reads entry
/// `GUARD_ENTRIES`, not 0. Ranges often end on a value many inputs reach (a blank image
/// patch), and phase noise would otherwise carry those reads across the table's edge into
/// its negacyclic half, which reads the negated last entry.
pub const GUARD_ENTRIES: u32 = 1;

/// Fraction of a calibrated (or, in training, tracked) range's span added on each side:
/// inputs a little beyond what was seen still read inside the table.
pub const CALIBRATION_MARGIN: f64 = 0.1;

/// A read grid that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GridError {
    /// Not one origin and one step per channel.
    #[error("read grid has {origins} origins and {steps} steps for {channels} channels")]
    Channels {
        /// Origins given.
        origins: usize,
        /// Steps given.
        steps: usize,
        /// Channels of the activation's input.
        channels: usize,
    },
    /// A step, an origin or the accumulator step is not a positive finite number.
    #[error(
        "read grid of channel {channel}: origin {origin} and step {step} must be finite, the step positive"
    )]
    Step {
        /// The channel.
        channel: usize,
        /// Its origin.
        origin: f64,
        /// Its step.
        step: f64,
    },
    /// The accumulator step is not a positive finite number.
    #[error("read grid accumulator step {0} must be positive and finite")]
    AccumulatorStep(f64),
}

/// The grid one activation's inputs are read on, per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadGrid {
    /// Table bits `p`: `2^p` entries per channel.
    pub lut_bits: LutBits,
    /// `z` at entry 0, per channel.
    pub origin: Vec<f64>,
    /// `z` per entry, per channel.
    pub step: Vec<f64>,
    /// `D`: accumulator units per entry, common to the stage (see the module documentation).
    pub accumulator_step: f64,
}

impl ReadGrid {
    /// The grid whose entries `GUARD_ENTRIES..=2^p - 1 - GUARD_ENTRIES` span each
    /// channel's range: `step_c = (hi_c - lo_c) / (2^p - 1 - 2 g)`,
    /// `origin_c = lo_c - g step_c`. Ranges are widened to a tiny span where empty.
    pub fn covering(lut_bits: LutBits, ranges: &[QuantRange], accumulator_step: f64) -> Self {
        let intervals = inner_intervals(lut_bits);
        let (origin, step) = ranges
            .iter()
            .map(|r| {
                let step = ((r.hi - r.lo) / f64::from(intervals)).max(MIN_STEP);
                (r.lo - f64::from(GUARD_ENTRIES) * step, step)
            })
            .unzip();
        Self {
            lut_bits,
            origin,
            step,
            accumulator_step,
        }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.step.len()
    }

    /// The entry a read of `z` in channel `c` lands on, `floor((z - origin_c) / step_c +
    /// 1/2)`, before the table's ends are applied (it may lie outside `0..2^p`).
    pub fn entry(&self, c: usize, z: f64) -> f64 {
        ((z - self.origin[c]) / self.step[c] + 0.5).floor()
    }

    /// `z` as the table reads it: the value of its entry, within the table's ends (the
    /// circuit wraps beyond them; training and the float reference clamp).
    pub fn read(&self, c: usize, z: f64) -> f64 {
        let last = (self.lut_bits.entries() - 1) as f64;
        self.origin[c] + self.entry(c, z).clamp(0.0, last) * self.step[c]
    }

    /// The weight scale of channel `c` after batch-norm folding, `step_c area / (alpha D)`,
    /// for inputs whose levels are worth `input_step` (`alpha`) and pooling of `area`.
    pub fn folded_weight_scale(&self, c: usize, input_step: f64, area: f64) -> f64 {
        self.step[c] * area / (input_step * self.accumulator_step)
    }

    /// The scales the weights feeding this grid are quantised at before batch-norm
    /// folding: `sigma_c = sigma'_c / |k_c|` with the folded scale `sigma'_c`
    /// ([`Self::folded_weight_scale`]) and the batch norm's `k_c` (1 without one), since
    /// folding multiplies channel `c`'s weights by `k_c`.
    pub fn weight_scales(
        &self,
        input_step: f64,
        area: f64,
        batch_norm_scale: Option<&[f64]>,
    ) -> Vec<f64> {
        (0..self.channels())
            .map(|c| {
                let k = batch_norm_scale.map_or(1.0, |k| k[c].abs());
                self.folded_weight_scale(c, input_step, area) / k.max(f64::MIN_POSITIVE)
            })
            .collect()
    }

    /// Checks the grid against the `channels` of the activation's input.
    pub fn validate(&self, channels: usize) -> Result<(), GridError> {
        if self.origin.len() != channels || self.step.len() != channels {
            return Err(GridError::Channels {
                origins: self.origin.len(),
                steps: self.step.len(),
                channels,
            });
        }
        if let Some((channel, (&origin, &step))) = self
            .origin
            .iter()
            .zip(&self.step)
            .enumerate()
            .find(|(_, (o, s))| !(o.is_finite() && s.is_finite() && **s > 0.0))
        {
            return Err(GridError::Step {
                channel,
                origin,
                step,
            });
        }
        if !(self.accumulator_step.is_finite() && self.accumulator_step > 0.0) {
            return Err(GridError::AccumulatorStep(self.accumulator_step));
        }
        Ok(())
    }
}

/// Intervals between the first and the last entry a range spans on a table of `lut_bits`,
/// inside the guard entries: `2^p - 1 - 2 g` (at least 1).
pub fn inner_intervals(lut_bits: LutBits) -> u32 {
    (lut_bits.entries() as u32 - 1)
        .saturating_sub(2 * GUARD_ENTRIES)
        .max(1)
}

/// Least grid step: a channel whose range is empty (a dead channel) still gets a grid.
const MIN_STEP: f64 = 1e-6;

/// `D` for a stage: the largest accumulator step at which no channel's integer weights
/// exceed `bits` (symmetric, `q_max = 2^(b-1) - 1`). Channel `c` with folded weights of
/// largest magnitude `m_c` quantised at `step_c area / (alpha D)` has integer weights up
/// to `m_c alpha D / (step_c area)`, so `D = min_c q_max step_c area / (alpha m_c)`
/// (channels of zero weights impose nothing).
pub fn accumulator_step(
    steps: &[f64],
    weight_max: &[f64],
    input_step: f64,
    area: f64,
    bits: BitWidth,
) -> f64 {
    let d = steps
        .iter()
        .zip(weight_max)
        .filter(|(_, m)| **m > 0.0)
        .map(|(s, m)| bits.symmetric_max() * s * area / (input_step * m))
        .fold(f64::INFINITY, f64::min);
    if d.is_finite() { d } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> ReadGrid {
        ReadGrid::covering(
            LutBits::new(3).unwrap(),
            &[
                QuantRange { lo: -1.0, hi: 1.5 },
                QuantRange { lo: 0.0, hi: 0.5 },
            ],
            4.0,
        )
    }

    #[test]
    fn ranges_span_the_inner_entries() {
        let grid = grid();
        grid.validate(2).unwrap();
        // 8 entries, one guard at each end: the range spans entries 1..=6.
        assert_eq!(grid.step, vec![0.5, 0.1]);
        assert_eq!(grid.entry(0, -1.0), 1.0);
        assert_eq!(grid.entry(0, 1.5), 6.0);
        assert!((grid.entry(1, 0.5) - 6.0).abs() < 1e-9);
        // Beyond the table: clamped by read, not by entry.
        assert_eq!(grid.entry(0, 9.0), 21.0);
        assert_eq!(grid.read(0, 9.0), -1.5 + 7.0 * 0.5);
        assert_eq!(grid.read(0, -9.0), -1.5);
        assert_eq!(grid.read(0, 0.24), 0.0);
        assert_eq!(grid.read(0, 0.26), 0.5);
    }

    #[test]
    fn bad_grids_are_named() {
        assert!(matches!(
            grid().validate(3),
            Err(GridError::Channels { channels: 3, .. })
        ));
        let mut nan = grid();
        nan.step[1] = f64::NAN;
        assert!(matches!(
            nan.validate(2),
            Err(GridError::Step { channel: 1, .. })
        ));
        let mut zero = grid();
        zero.accumulator_step = 0.0;
        assert!(matches!(
            zero.validate(2),
            Err(GridError::AccumulatorStep(_))
        ));
    }

    /// The weights quantised at the grid's scales stay within the width, the tightest
    /// channel reaching it.
    #[test]
    fn the_accumulator_step_bounds_every_channels_weights() {
        let bits = BitWidth::new(4).unwrap();
        let (steps, weight_max, alpha, area) = ([0.5, 0.1, 0.2], [2.0, 1.0, 0.0], 0.25, 4.0);
        let d = accumulator_step(&steps, &weight_max, alpha, area, bits);
        let grid = ReadGrid {
            lut_bits: LutBits::new(4).unwrap(),
            origin: vec![0.0; 3],
            step: steps.to_vec(),
            accumulator_step: d,
        };
        let integer_max: Vec<f64> = (0..2)
            .map(|c| weight_max[c] / grid.folded_weight_scale(c, alpha, area))
            .collect();
        assert!(
            integer_max.iter().all(|&m| m <= 7.0 + 1e-9),
            "{integer_max:?}"
        );
        assert!((integer_max[1] - 7.0).abs() < 1e-9, "{integer_max:?}");
    }
}
