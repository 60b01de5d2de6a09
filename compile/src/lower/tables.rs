//! A stage's tables on its read grid: the torus unit of its input levels, each output's
//! offset, and each entry's next-stage level.

use crate::circuit::{Linear, Tables};
use crate::lower::linear::OutputAffine;
use hecnn_model::activation::ActivationFn;
use hecnn_model::grid::ReadGrid;
use hecnn_model::model::OutputQuant;

/// The torus value of one input level, `u = round(Δ / D)`, for a stage read at `D`
/// accumulator units per entry of `2^p`-entry tables (at least 1).
pub fn input_unit(grid: &ReadGrid) -> u64 {
    (grid.lut_bits.box_width() as f64 / grid.accumulator_step)
        .round()
        .max(1.0) as u64
}

/// Output `j` (channel `c`) reads entry `t = floor(A_j / D + (C_j - origin_c) / step_c +
/// 1/2)`, since `step_c = S_c D`: its offset is `O_j = Δ (C_j - origin_c) / step_c`, taken
/// modulo the torus (`2^(p+1)` boxes). Entry `t` holds
/// `quant(act(origin_c + t step_c))`.
pub fn build(
    linear: &Linear,
    affine: &OutputAffine,
    grid: &ReadGrid,
    activation: &ActivationFn,
    quant: OutputQuant,
) -> Tables {
    let out = linear.output_shape();
    let per_channel = out.len() / out.channels;
    let entries = grid.lut_bits.entries();
    let torus_boxes = (2 * entries) as f64;
    let box_width = grid.lut_bits.box_width() as f64;
    let offsets = (0..out.len())
        .map(|j| {
            let c = j / per_channel;
            let boxes = ((affine.shift[j] - grid.origin[c]) / grid.step[c]).rem_euclid(torus_boxes);
            // Below 2^64; the rounding of a value this large is far below the noise.
            ((boxes * box_width).round() as u128 % (1u128 << 64)) as u64
        })
        .collect();
    let channel_levels: Vec<Vec<u32>> = (0..out.channels)
        .map(|c| {
            (0..entries)
                .map(|t| {
                    let z = grid.origin[c] + t as f64 * grid.step[c];
                    quant.range.level(activation.eval(z), quant.bits)
                })
                .collect()
        })
        .collect();
    let levels = (0..out.len())
        .map(|j| channel_levels[j / per_channel].clone())
        .collect();
    Tables {
        lut_bits: grid.lut_bits,
        offsets,
        levels,
    }
}
