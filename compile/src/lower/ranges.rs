//! Where a stage's tables come from when training did not give a read grid: the ranges
//! calibration images reach, or the guaranteed bounds of the accumulators.

use rayon::prelude::*;

use hecnn_model::grid::{CALIBRATION_MARGIN, GUARD_ENTRIES, ReadGrid, inner_intervals};
use hecnn_model::quantize::{LutBits, QuantRange};

use crate::circuit::Linear;
use crate::lower::linear::OutputAffine;

/// Per channel, the range of `z_j = S_j A_j + C_j` over its outputs on the calibration
/// `inputs`, widened by [`CALIBRATION_MARGIN`] of its span on each side.
pub fn calibrated(linear: &Linear, affine: &OutputAffine, inputs: &[Vec<i64>]) -> Vec<QuantRange> {
    let out = linear.output_shape();
    let per_channel = out.len() / out.channels;
    let empty = || vec![(f64::INFINITY, f64::NEG_INFINITY); out.channels];
    let seen = inputs
        .par_iter()
        .fold(empty, |mut seen, x| {
            for (j, a) in linear.apply(x).into_iter().enumerate() {
                let z = affine.scale[j] * a as f64 + affine.shift[j];
                let range = &mut seen[j / per_channel];
                *range = (range.0.min(z), range.1.max(z));
            }
            seen
        })
        .reduce(empty, |a, b| {
            a.iter()
                .zip(&b)
                .map(|(x, y)| (x.0.min(y.0), x.1.max(y.1)))
                .collect()
        });
    seen.into_iter()
        .map(|(lo, hi)| {
            if lo > hi {
                return QuantRange { lo: 0.0, hi: 0.0 };
            }
            let margin = (hi - lo) * CALIBRATION_MARGIN;
            QuantRange {
                lo: lo - margin,
                hi: hi + margin,
            }
        })
        .collect()
}

/// The grid that reads every accumulator the weights allow for inputs `0..=input_max`,
/// without touching the weights: one accumulator step `D` for the stage, that of the
/// channel whose bounds span the most accumulator units, so `step_c = S_c D`; each
/// channel's least bound reads entry [`GUARD_ENTRIES`]. No input can leave the table.
pub fn worst_case(
    linear: &Linear,
    affine: &OutputAffine,
    input_max: u32,
    lut_bits: LutBits,
) -> ReadGrid {
    let out = linear.output_shape();
    let per_channel = out.len() / out.channels;
    let mut z_ranges = vec![(f64::INFINITY, f64::NEG_INFINITY); out.channels];
    for (j, bounds) in linear.bounds(input_max).iter().enumerate() {
        let (s, c) = (affine.scale[j], affine.shift[j]);
        let range = &mut z_ranges[j / per_channel];
        *range = (
            range.0.min(s * bounds.min as f64 + c),
            range.1.max(s * bounds.max as f64 + c),
        );
    }
    let channel_scale = |c: usize| affine.scale[c * per_channel];
    let intervals = inner_intervals(lut_bits);
    let widest = z_ranges
        .iter()
        .enumerate()
        .map(|(c, (lo, hi))| (hi - lo) / channel_scale(c))
        .fold(0.0, f64::max);
    let accumulator_step = (widest / f64::from(intervals)).max(1e-9);
    let (origin, step) = z_ranges
        .iter()
        .enumerate()
        .map(|(c, (lo, _))| {
            let step = channel_scale(c) * accumulator_step;
            (lo - f64::from(GUARD_ENTRIES) * step, step)
        })
        .unzip();
    ReadGrid {
        lut_bits,
        origin,
        step,
        accumulator_step,
    }
}
