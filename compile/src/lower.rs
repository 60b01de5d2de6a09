//! Lowering a trained model to an integer [`Circuit`]: fold batch norms, quantise the
//! weights, fuse average pooling into the convolution before it, bound every accumulator
//! and build the tables.

use rayon::prelude::*;

use crate::activation::ActivationFn;
use crate::circuit::{
    Circuit, Decoding, Linear, LutBits, PIXEL_MAX, Read, RoundingBits, Stage, Tables,
};
use crate::model::{ConvGeometry, Layer, ModelFile, OutputQuant, Shape};
use crate::passes::fold_batch_norm;
use crate::quantize::{BitWidth, symmetric_scale};

/// A model that cannot be lowered, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot compile layer {index} ({kind}): {reason}")]
pub struct LowerError {
    /// Index of the layer (after batch-norm folding).
    pub index: usize,
    /// Its kind.
    pub kind: &'static str,
    /// Why.
    pub reason: String,
}

/// Where the accumulator ranges that size the tables come from.
#[derive(Debug, Clone, Copy)]
pub enum Ranges<'a> {
    /// The guaranteed bounds over every possible input: no input can wrap.
    WorstCase,
    /// The ranges seen on these calibration images (raw pixels), widened by
    /// [`CALIBRATION_MARGIN`] of their span on each side. Finer tables, but an input
    /// beyond them wraps around the table as it would encrypted.
    Calibrated(&'a [&'a [u8]]),
}

/// Fraction of a calibrated range's span added on each side.
pub const CALIBRATION_MARGIN: f64 = 0.1;

/// Entries kept free at each end of every table. The least accumulator a table is sized
/// for reads entry `GUARD_ENTRIES`, not 0: ranges often end on a value many inputs reach
/// (a blank image patch), and phase noise would otherwise carry those reads across the
/// table's edge into its negacyclic half, which reads the negated last entry.
pub const GUARD_ENTRIES: i64 = 1;

/// Choices the model file leaves open.
#[derive(Debug, Clone, Copy)]
pub struct LowerOptions<'a> {
    /// Width of weights not quantised in training.
    pub weight_bits: BitWidth,
    /// Table input bits `p` (tables of `2^p` entries).
    pub lut_bits: LutBits,
    /// Accumulator ranges.
    pub ranges: Ranges<'a>,
}

/// The real value `u = alpha x + beta` of an integer input level `x`.
#[derive(Debug, Clone, Copy)]
struct InputEncoding {
    alpha: f64,
    beta: f64,
    max: u32,
}

/// Lowers `model` (valid, trained with quantised activation outputs) to a circuit.
pub fn lower(model: &ModelFile, options: LowerOptions) -> Result<Circuit, LowerError> {
    let folded = fold_batch_norm(model);
    let shapes = folded
        .shapes("model")
        .expect("lower is given a validated model");
    let mut encoding = InputEncoding {
        alpha: 1.0 / (f64::from(PIXEL_MAX) * model.input.std),
        beta: -model.input.mean / model.input.std,
        max: PIXEL_MAX,
    };
    // Each calibration image's input to the stage being built.
    let mut calibration: Vec<Vec<i64>> = match options.ranges {
        Ranges::WorstCase => Vec::new(),
        Ranges::Calibrated(images) => images
            .iter()
            .map(|image| image.iter().map(|&p| i64::from(p)).collect())
            .collect(),
    };
    let mut stages = Vec::new();
    let mut index = 0;
    while index < folded.layers.len() {
        if matches!(folded.layers[index], Layer::Flatten) {
            index += 1;
            continue;
        }
        let fail = |index: usize, reason: &str| LowerError {
            index,
            kind: folded.layers[index].kind(),
            reason: reason.to_string(),
        };
        let input_max = encoding.max;
        let mut next = index + 1;
        let (linear, sigma, bias) =
            quantise_linear(&folded.layers[index], shapes[index], options.weight_bits)
                .ok_or_else(|| fail(index, "expected a conv or dense layer here (unfolded batch norms and pooling after activations are not supported)"))?;
        // Fuse the average pooling that follows a convolution.
        let (linear, area) = match folded.layers.get(next) {
            Some(Layer::AvgPool { kernel, stride }) if kernel == stride => {
                next += 1;
                fuse_pool(linear, *kernel).ok_or_else(|| {
                    fail(
                        next - 1,
                        "only pooling right after a convolution is supported",
                    )
                })?
            }
            Some(Layer::AvgPool { .. }) => {
                return Err(fail(next, "overlapping pooling windows are not supported"));
            }
            _ => (linear, 1.0),
        };
        while matches!(folded.layers.get(next), Some(Layer::Flatten)) {
            next += 1;
        }
        let out = linear.output_shape();
        let per_channel = out.len() / out.channels;
        let channel = |j: usize| j / per_channel;
        // C_j = sigma_c beta (sum of valid weights) / area + b_c; S_j = sigma_c alpha / area.
        let weight_sums = linear.apply(&vec![1; linear.input_len()]);
        let scale: Vec<f64> = (0..out.len())
            .map(|j| sigma[channel(j)] * encoding.alpha / area)
            .collect();
        let shift: Vec<f64> = (0..out.len())
            .map(|j| {
                sigma[channel(j)] * encoding.beta * weight_sums[j] as f64 / area
                    + f64::from(bias[channel(j)])
            })
            .collect();
        let worst_case: Vec<(i64, i64)> = linear
            .bounds(input_max)
            .iter()
            .map(|b| (b.min, b.max))
            .collect();
        // What tables and logits are sized for: guaranteed bounds, or what calibration saw.
        let ranges = match options.ranges {
            Ranges::WorstCase => worst_case,
            Ranges::Calibrated(_) => calibrated_ranges(&linear, &calibration, &worst_case),
        };
        let (rounding_bits, read) = match folded.layers.get(next) {
            None => {
                // Logits are decoded as signed values: |A| < 2^(p+k-1) keeps them clear of
                // the wrap at 2^(p+k) with room for noise. Their noise is fixed on the
                // torus, so the least k (the finest encoding) the ranges allow is best.
                let magnitude = ranges
                    .iter()
                    .map(|&(lo, hi)| lo.unsigned_abs().max(hi.unsigned_abs()))
                    .max()
                    .unwrap_or(0);
                let rounding_bits =
                    RoundingBits::to_fit(2 * magnitude, options.lut_bits.entries() as u64);
                (rounding_bits, Read::Logits(Decoding { scale, shift }))
            }
            Some(Layer::Activation {
                function,
                output_quant,
            }) => {
                let quant = output_quant.ok_or_else(|| {
                    fail(
                        next,
                        "activation outputs were not quantised in training: train with --qat",
                    )
                })?;
                let (rounding_bits, tables) = build_tables(
                    &ranges,
                    &scale,
                    &shift,
                    &function.evaluator(),
                    quant,
                    options.lut_bits,
                );
                next += 1;
                encoding = InputEncoding {
                    alpha: quant.range.step(quant.bits),
                    beta: quant.range.lo,
                    max: quant.bits.unsigned_max() as u32,
                };
                (rounding_bits, Read::Tables(tables))
            }
            Some(_) => {
                return Err(fail(
                    next,
                    "expected an activation or the end of the network",
                ));
            }
        };
        let label = folded.layers[index..next]
            .iter()
            .filter(|layer| !matches!(layer, Layer::Flatten))
            .map(|layer| match layer {
                Layer::Activation { function, .. } => function.name(),
                other => other.kind(),
            })
            .collect::<Vec<_>>()
            .join("+");
        let stage = Stage {
            label,
            linear,
            input_max,
            rounding_bits,
            read,
        };
        if stage.tables().is_some() {
            calibration = calibration
                .par_iter()
                .map(|x| {
                    let a = stage.linear.apply(x);
                    a.iter()
                        .enumerate()
                        .map(|(j, &a)| stage.read_table(options.lut_bits, j, a, 0.0))
                        .collect()
                })
                .collect();
        } else if next < folded.layers.len() {
            return Err(fail(
                next,
                "layers after the last linear layer without activation",
            ));
        }
        stages.push(stage);
        index = next;
    }
    Ok(Circuit {
        lut_bits: options.lut_bits,
        stages,
    })
}

/// Per output, the accumulator range seen on the calibration inputs widened by
/// [`CALIBRATION_MARGIN`] of its span on each side, within the worst-case bounds.
fn calibrated_ranges(
    linear: &Linear,
    inputs: &[Vec<i64>],
    worst_case: &[(i64, i64)],
) -> Vec<(i64, i64)> {
    let seen = inputs
        .par_iter()
        .map(|x| linear.apply(x))
        .fold(
            || vec![(i64::MAX, i64::MIN); worst_case.len()],
            |mut seen, a| {
                for (range, a) in seen.iter_mut().zip(a) {
                    *range = (range.0.min(a), range.1.max(a));
                }
                seen
            },
        )
        .reduce(
            || vec![(i64::MAX, i64::MIN); worst_case.len()],
            |a, b| {
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| (x.0.min(y.0), x.1.max(y.1)))
                    .collect()
            },
        );
    seen.iter()
        .zip(worst_case)
        .map(|(&(lo, hi), &(worst_lo, worst_hi))| {
            if lo > hi {
                return (worst_lo, worst_hi);
            }
            let margin = ((hi - lo) as f64 * CALIBRATION_MARGIN).ceil() as i64;
            ((lo - margin).max(worst_lo), (hi + margin).min(worst_hi))
        })
        .collect()
}

/// Per-channel symmetric quantisation of a conv or dense layer: its integer map, the
/// scales `sigma_c` and the float bias.
fn quantise_linear(
    layer: &Layer,
    input: Shape,
    default_bits: BitWidth,
) -> Option<(Linear, Vec<f64>, Vec<f32>)> {
    let (weight, bias, bits, channels) = match layer {
        Layer::Conv2d {
            weight,
            bias,
            weight_bits,
            out_channels,
            ..
        }
        | Layer::Dense {
            weight,
            bias,
            weight_bits,
            out_features: out_channels,
            ..
        } => (
            weight,
            bias,
            weight_bits.unwrap_or(default_bits),
            *out_channels,
        ),
        _ => return None,
    };
    let per_channel = weight.len() / channels;
    let q_max = bits.symmetric_max();
    let mut sigma = Vec::with_capacity(channels);
    let mut weights = Vec::with_capacity(weight.len());
    for row in weight.chunks(per_channel) {
        let s = symmetric_scale(row, bits);
        sigma.push(s);
        weights.extend(
            row.iter()
                .map(|&w| (f64::from(w) / s).round_ties_even().clamp(-q_max, q_max) as i32),
        );
    }
    let linear = match layer {
        Layer::Conv2d {
            kernel,
            stride,
            padding,
            ..
        } => Linear::Conv {
            geometry: ConvGeometry {
                input,
                out_channels: channels,
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
            },
            weights,
        },
        _ => Linear::Dense {
            inputs: input.len(),
            weights,
        },
    };
    Some((linear, sigma, bias.clone()))
}

/// A convolution followed by non-overlapping average pooling of `pool`, as one
/// convolution: kernel `k + (P - 1) s`, stride `s P`, integer weights summed over the
/// window (`W'[K] = sum_{p} W[K - p s]`); returns it and the pooling area to divide by.
fn fuse_pool(linear: Linear, pool: [usize; 2]) -> Option<(Linear, f64)> {
    let Linear::Conv { geometry, weights } = linear else {
        return None;
    };
    let ([kh, kw], [sh, sw]) = (geometry.kernel, geometry.stride);
    let [ph, pw] = pool;
    let fused_geometry = ConvGeometry {
        kernel: [kh + (ph - 1) * sh, kw + (pw - 1) * sw],
        stride: [sh * ph, sw * pw],
        ..geometry
    };
    let [fh, fw] = fused_geometry.kernel;
    let mut fused = vec![0i32; fused_geometry.weight_len()];
    for (index, &w) in weights.iter().enumerate() {
        // index = ((o * in + c) * kh + ky) * kw + kx; the tap moves by (py s, px s).
        let (kx, rest) = (index % kw, index / kw);
        let (ky, filter) = (rest % kh, rest / kh);
        for py in 0..ph {
            for px in 0..pw {
                fused[(filter * fh + py * sh + ky) * fw + px * sw + kx] += w;
            }
        }
    }
    Some((
        Linear::Conv {
            geometry: fused_geometry,
            weights: fused,
        },
        (ph * pw) as f64,
    ))
}

/// Tables for accumulators in `ranges` (per output, least and greatest): offsets that
/// move each range's least value to entry [`GUARD_ENTRIES`], the rounding that fits the widest range into
/// `2^lut_bits` entries, and each entry's next-stage level
/// `quant(act(S_j (t 2^k - O_j) + C_j))`.
fn build_tables(
    ranges: &[(i64, i64)],
    scale: &[f64],
    shift: &[f64],
    activation: &ActivationFn,
    quant: OutputQuant,
    lut_bits: LutBits,
) -> (RoundingBits, Tables) {
    let span = ranges.iter().map(|&(lo, hi)| hi - lo).max().unwrap_or(0);
    let usable = (lut_bits.entries() as u64)
        .saturating_sub(2 * GUARD_ENTRIES as u64)
        .max(1);
    let rounding_bits = RoundingBits::to_fit(span as u64, usable);
    let offsets: Vec<i64> = ranges
        .iter()
        .map(|&(lo, _)| (GUARD_ENTRIES << rounding_bits.0) - lo)
        .collect();
    let levels = offsets
        .iter()
        .enumerate()
        .map(|(j, &offset)| {
            (0..lut_bits.entries() as i64)
                .map(|t| {
                    let a = (t << rounding_bits.0) - offset;
                    let z = scale[j] * a as f64 + shift[j];
                    quant.range.level(activation.eval(z), quant.bits)
                })
                .collect()
        })
        .collect();
    (rounding_bits, Tables { offsets, levels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{ReferenceModel, argmax};
    use crate::simulate::Simulator;
    use crate::testing::{image, model};

    /// 4-bit default weights and worst-case ranges.
    fn worst_case(lut_bits: LutBits) -> LowerOptions<'static> {
        LowerOptions {
            weight_bits: BitWidth::new(4).unwrap(),
            lut_bits,
            ranges: Ranges::WorstCase,
        }
    }

    #[test]
    fn pooling_fuses_into_the_convolution() {
        let circuit = lower(&model(), worst_case(LutBits::new(8).unwrap())).unwrap();
        assert_eq!(circuit.stages.len(), 2);
        let Linear::Conv { geometry, .. } = &circuit.stages[0].linear else {
            panic!("first stage is a convolution")
        };
        assert_eq!((geometry.kernel, geometry.stride), ([4, 4], [2, 2]));
        assert_eq!(circuit.stages[0].linear.output_shape().len(), 36);
    }

    /// With tables large enough to read every accumulator exactly (no rounding), the
    /// circuit computes the trained network: the same logits up to float rounding.
    #[test]
    fn exact_tables_reproduce_the_reference() {
        let model = model();
        let circuit = lower(
            &model,
            // Wider than any encryptable table: every accumulator is read exactly.
            worst_case(LutBits(18)),
        )
        .unwrap();
        assert_eq!(circuit.stages[0].rounding_bits, RoundingBits(0));
        let reference = ReferenceModel::new(&model);
        for seed in 0..50 {
            let pixels = image(100 + seed);
            let expected = reference.logits(&pixels);
            let got = Simulator::clear(&circuit).logits(&pixels, 0);
            assert_eq!(argmax(&got), argmax(&expected), "image {seed}");
            for (a, b) in got.iter().zip(&expected) {
                assert!(
                    (a - b).abs() < 1e-6 * (1.0 + b.abs()),
                    "image {seed}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn offsets_keep_every_worst_case_accumulator_in_the_table() {
        let circuit = lower(&model(), worst_case(LutBits::new(4).unwrap())).unwrap();
        let stage = &circuit.stages[0];
        let tables = stage.tables().unwrap();
        let k = stage.rounding_bits.0;
        assert!(k > 0);
        for (j, b) in stage.linear.bounds(stage.input_max).iter().enumerate() {
            for a in [b.min, b.max] {
                let shifted = a + tables.offsets[j];
                assert!(shifted >= 0);
                let entry = (shifted + (1 << (k - 1))) >> k;
                assert!(
                    entry < circuit.lut_bits.entries() as i64,
                    "output {j}: {a} reads {entry}"
                );
            }
        }
    }

    /// Calibrated ranges are narrower than the worst case, so reads are finer, and every
    /// calibration image stays inside the tables.
    #[test]
    fn calibrated_ranges_are_finer_and_hold_the_calibration_set() {
        let images: Vec<Vec<u8>> = (0..40).map(|seed| image(500 + seed)).collect();
        let views: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
        let lut_bits = LutBits::new(4).unwrap();
        let worst = lower(&model(), worst_case(lut_bits)).unwrap();
        let calibrated = lower(
            &model(),
            LowerOptions {
                ranges: Ranges::Calibrated(&views),
                ..worst_case(lut_bits)
            },
        )
        .unwrap();
        let stage = &calibrated.stages[0];
        assert!(stage.rounding_bits < worst.stages[0].rounding_bits);
        let tables = stage.tables().unwrap();
        let k = stage.rounding_bits.0;
        for image in &views {
            let x: Vec<i64> = image.iter().map(|&p| i64::from(p)).collect();
            for (j, a) in stage.linear.apply(&x).into_iter().enumerate() {
                let entry = (a + tables.offsets[j] + (1 << k >> 1)) >> k;
                assert!((0..16).contains(&entry), "output {j}: entry {entry}");
            }
        }
    }

    #[test]
    fn models_without_quantised_activations_are_refused() {
        let mut model = model();
        if let Layer::Activation { output_quant, .. } = &mut model.layers[3] {
            *output_quant = None;
        }
        let err = lower(&model, worst_case(LutBits::new(4).unwrap())).unwrap_err();
        assert!(err.to_string().contains("--qat"), "{err}");
    }
}
