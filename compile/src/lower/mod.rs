//! Lowering a trained model to an integer [`Circuit`], as a sequence of small passes:
//!
//! 1. [`stages::group`]: the layers of each stage (the one place that refuses layer orders);
//! 2. [`linear::quantise`]: integer weights at per-channel scales, the batch norm folded into
//!    each channel's real map; [`linear::fuse_pool`]: average pooling into the convolution;
//!    [`linear::OutputAffine`]: the real value `z_j = S_j A_j + C_j` of each accumulator;
//! 3. the read grid of the stage's tables: trained ([`hecnn_model::grid`]), or sized from
//!    calibration images ([`ranges::calibrated`], the weights then re-quantised at the
//!    scales the grid implies) or from the guaranteed bounds ([`ranges::worst_case`]);
//! 4. [`tables::build`]: offsets and levels on that grid;
//! 5. the calibration images are carried through the stage's reads, for the next stage's
//!    ranges and for [`TableUsage`].

pub mod linear;
pub mod ranges;
pub mod stages;
pub mod tables;

use rayon::prelude::*;

use crate::circuit::{Circuit, Decoding, Linear, Read, Stage};
use hecnn_model::grid::{ReadGrid, accumulator_step};
use hecnn_model::model::{Layer, ModelFile, OutputQuant, Shape};
use hecnn_model::quantize::{BitWidth, LutBits};
use linear::{ChannelAffine, OutputAffine};
pub use stages::LowerError;

/// Largest input level of the first stage: raw 8-bit pixels.
pub const PIXEL_MAX: u32 = 255;

/// Where the read grids of the tables come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSource {
    /// The guaranteed bounds over every possible input: no input can wrap.
    WorstCase,
    /// The ranges seen on the calibration images, widened by
    /// [`hecnn_model::grid::CALIBRATION_MARGIN`]: finer tables, but an input beyond them wraps
    /// around the table as it would encrypted.
    Calibrated,
    /// The grids the network was trained on: the circuit computes the trained network.
    Trained,
}

/// Choices the model file leaves open.
#[derive(Debug, Clone, Copy)]
pub struct LowerOptions<'a> {
    /// Width of weights not quantised in training.
    pub weight_bits: BitWidth,
    /// Table bits of each stage with tables, the last repeating for the stages after it;
    /// empty for the widths the grids were trained with.
    pub lut_bits: &'a [LutBits],
    /// Where the grids come from.
    pub ranges: RangeSource,
    /// Calibration images (raw pixels): calibrated ranges, the logits' encoding and
    /// [`TableUsage`]; may be empty except for calibrated ranges.
    pub calibration: &'a [&'a [u8]],
}

/// How the calibration images use one stage's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TableUsage {
    /// Fewest entries any output reads (least to greatest entry read, inclusive).
    pub min_entries: usize,
    /// Median over outputs of the entries read.
    pub median_entries: usize,
    /// Reads that left the table (and wrapped around it).
    pub wrapped_reads: usize,
    /// All reads.
    pub reads: usize,
}

/// A lowered model: the circuit and, with calibration images, how each stage's tables
/// are used (`None` for the logits).
#[derive(Debug, Clone)]
pub struct Lowered {
    /// The circuit.
    pub circuit: Circuit,
    /// Per stage.
    pub usage: Vec<Option<TableUsage>>,
}

/// Where a stage's input levels sit: the real value `u = step x + shift` of level `x`.
#[derive(Debug, Clone, Copy)]
struct InputEncoding {
    step: f64,
    shift: f64,
    max: u32,
}

/// Lowers `model` (valid, trained with quantised activation outputs) to a circuit.
///
/// # Panics
/// On a model that does not validate ([`ModelFile::validate`]).
pub fn lower(model: &ModelFile, options: &LowerOptions) -> Result<Lowered, LowerError> {
    let shapes = model
        .shapes("model")
        .expect("lower is given a validated model");
    let groups = stages::group(model)?;
    let grid_scales = model.grid_weight_scales();
    let mut input = InputEncoding {
        step: 1.0 / (f64::from(PIXEL_MAX) * model.input.std),
        shift: -model.input.mean / model.input.std,
        max: PIXEL_MAX,
    };
    let mut calibration: Vec<Vec<i64>> = options
        .calibration
        .iter()
        .map(|image| image.iter().map(|&p| i64::from(p)).collect())
        .collect();
    let mut stages = Vec::new();
    let mut usage = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        let weights = StageWeights::new(model, &shapes, group, options.weight_bits, input);
        let label = stages::label(model, group);
        let Some(activation_index) = group.activation else {
            let (linear, affine) = weights.build(&weights.symmetric_scales());
            stages.push(Stage {
                label,
                input_unit: logit_unit(&linear, input.max, &calibration),
                linear,
                input_max: input.max,
                read: Read::Logits(Decoding {
                    scale: affine.scale,
                    shift: affine.shift,
                }),
            });
            usage.push(None);
            continue;
        };
        let Layer::Activation {
            function,
            output_quant: Some(quant),
            input_grid,
        } = &model.layers[activation_index]
        else {
            unreachable!("stages end with quantised activations")
        };
        let lut_bits = options
            .lut_bits
            .get(index.min(options.lut_bits.len().saturating_sub(1)))
            .copied();
        let (linear, affine, grid) = match options.ranges {
            RangeSource::Trained => {
                let grid = input_grid.as_ref().ok_or(LowerError::NoGrid {
                    index: activation_index,
                })?;
                if let Some(asked) = lut_bits.filter(|&bits| bits != grid.lut_bits) {
                    return Err(LowerError::LutBits {
                        index: activation_index,
                        trained: grid.lut_bits.get(),
                        asked: asked.get(),
                    });
                }
                let scales =
                    grid_scales[group.linear]
                        .as_ref()
                        .ok_or(LowerError::UnlinkedGrid {
                            index: activation_index,
                        })?;
                let (linear, affine) = weights.build(scales);
                (linear, affine, grid.clone())
            }
            RangeSource::Calibrated => weights.calibrated(
                lut_bits.expect("calibrated ranges come with table bits"),
                &calibration,
            ),
            RangeSource::WorstCase => {
                let (linear, affine) = weights.build(&weights.symmetric_scales());
                let lut_bits = lut_bits.expect("worst-case ranges come with table bits");
                let grid = ranges::worst_case(&linear, &affine, input.max, lut_bits);
                (linear, affine, grid)
            }
        };
        let tables = tables::build(&linear, &affine, &grid, &function.evaluator(), *quant);
        let stage = Stage {
            label,
            linear,
            input_max: input.max,
            input_unit: tables::input_unit(&grid),
            read: Read::Tables(tables),
        };
        let (next, stage_usage) = read_calibration(&stage, &affine, &grid, &calibration);
        calibration = next;
        usage.push(stage_usage);
        stages.push(stage);
        input = next_encoding(*quant);
    }
    let circuit = Circuit::new(stages).expect("lowering builds circuits whose stages chain");
    Ok(Lowered { circuit, usage })
}

/// The float layers of one stage's linear map (the layer, its batch norm and pooling), its
/// weight width, and the encoding of its inputs: what quantising the map at any scales needs.
struct StageWeights<'a> {
    layer: &'a Layer,
    input_shape: Shape,
    batch_norm: Option<(Vec<f64>, Vec<f64>)>,
    pool: Option<[usize; 2]>,
    weight_bits: BitWidth,
    input: InputEncoding,
}

impl<'a> StageWeights<'a> {
    fn new(
        model: &'a ModelFile,
        shapes: &[Shape],
        group: &stages::StageLayers,
        default_weight_bits: BitWidth,
        input: InputEncoding,
    ) -> Self {
        let layer = &model.layers[group.linear];
        let weight_bits = match layer {
            Layer::Conv2d { weight_bits, .. } | Layer::Dense { weight_bits, .. } => {
                weight_bits.unwrap_or(default_weight_bits)
            }
            _ => unreachable!("stages start with a conv or dense layer"),
        };
        Self {
            layer,
            input_shape: shapes[group.linear],
            batch_norm: group
                .batch_norm
                .map(|i| model.layers[i].batch_norm_affine().expect("a batch norm")),
            pool: group.pool.and_then(|i| match &model.layers[i] {
                Layer::AvgPool { kernel, .. } => Some(*kernel),
                _ => None,
            }),
            weight_bits,
            input,
        }
    }

    /// Outputs averaged by the fused pooling (1 without).
    fn area(&self) -> f64 {
        self.pool.map_or(1.0, |[h, w]| (h * w) as f64)
    }

    fn batch_norm_scale(&self) -> Option<&[f64]> {
        self.batch_norm.as_ref().map(|(k, _)| k.as_slice())
    }

    /// Per channel, the symmetric scale of the layer's weight width.
    fn symmetric_scales(&self) -> Vec<f64> {
        linear::symmetric_scales(self.layer, self.weight_bits)
    }

    /// The integer map at per-channel weight `scales`, pooling fused, and the real value
    /// of each of its accumulators.
    fn build(&self, scales: &[f64]) -> (Linear, OutputAffine) {
        let (linear, channel): (Linear, ChannelAffine) = linear::quantise(
            self.layer,
            self.input_shape,
            scales,
            self.batch_norm.as_ref(),
            self.input.step,
        );
        let linear = match self.pool {
            Some(pool) => linear::fuse_pool(linear, pool),
            None => linear,
        };
        let affine = OutputAffine::new(
            &linear,
            &channel,
            self.area(),
            self.input.step,
            self.input.shift,
        );
        (linear, affine)
    }

    /// The grid covering the ranges the calibration inputs reach at the symmetric scales,
    /// and the map re-quantised at the scales that grid implies.
    fn calibrated(
        &self,
        lut_bits: LutBits,
        calibration: &[Vec<i64>],
    ) -> (Linear, OutputAffine, ReadGrid) {
        let (linear, affine) = self.build(&self.symmetric_scales());
        let z_ranges = ranges::calibrated(&linear, &affine, calibration);
        let mut grid = ReadGrid::covering(lut_bits, &z_ranges, 1.0);
        grid.accumulator_step = accumulator_step(
            &grid.step,
            &linear::folded_weight_max(self.layer, self.batch_norm_scale()),
            self.input.step,
            self.area(),
            self.weight_bits,
        );
        let scales = grid.weight_scales(self.input.step, self.area(), self.batch_norm_scale());
        let (linear, affine) = self.build(&scales);
        (linear, affine, grid)
    }
}

/// The encoding of a stage's inputs written by tables of quantisation `quant`.
fn next_encoding(quant: OutputQuant) -> InputEncoding {
    InputEncoding {
        step: quant.range.step(quant.bits),
        shift: quant.range.lo,
        max: quant.bits.unsigned_max() as u32,
    }
}

/// The logits' unit: as large as keeps `|A| u <= 2^62`, so that a decrypted phase, read
/// as a signed value, stays clear of the wrap at `2^63` with room for noise. `|A|` is
/// bounded by what the calibration images reach plus [`hecnn_model::grid::CALIBRATION_MARGIN`] of it,
/// else by the worst case.
fn logit_unit(linear: &Linear, input_max: u32, calibration: &[Vec<i64>]) -> u64 {
    let worst = linear
        .bounds(input_max)
        .iter()
        .map(|b| b.min.unsigned_abs().max(b.max.unsigned_abs()))
        .max()
        .unwrap_or(0);
    let magnitude = if calibration.is_empty() {
        worst
    } else {
        let seen = calibration
            .par_iter()
            .map(|x| {
                linear
                    .apply(x)
                    .iter()
                    .map(|a| a.unsigned_abs())
                    .max()
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        ((seen as f64 * (1.0 + hecnn_model::grid::CALIBRATION_MARGIN)).ceil() as u64).min(worst)
    };
    ((1u64 << 62) / magnitude.max(1)).max(1)
}

/// The calibration images' inputs to the next stage, and how they used `stage`'s tables.
fn read_calibration(
    stage: &Stage,
    affine: &OutputAffine,
    grid: &ReadGrid,
    calibration: &[Vec<i64>],
) -> (Vec<Vec<i64>>, Option<TableUsage>) {
    if calibration.is_empty() {
        return (Vec::new(), None);
    }
    let outputs = stage.linear.output_shape();
    let per_channel = outputs.len() / outputs.channels;
    let entries = grid.lut_bits.entries() as f64;
    let accumulators: Vec<Vec<i64>> = calibration
        .par_iter()
        .map(|x| stage.linear.apply(x))
        .collect();
    let next = accumulators
        .par_iter()
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(j, &a)| stage.read_table(j, a, 0.0))
                .collect()
        })
        .collect();
    let mut spans = vec![(f64::INFINITY, f64::NEG_INFINITY); outputs.len()];
    let mut wrapped_reads = 0;
    for a in &accumulators {
        for (j, &a) in a.iter().enumerate() {
            let z = affine.scale[j] * a as f64 + affine.shift[j];
            let t = grid.entry(j / per_channel, z);
            if !(0.0..entries).contains(&t) {
                wrapped_reads += 1;
            }
            let t = t.clamp(0.0, entries - 1.0);
            spans[j] = (spans[j].0.min(t), spans[j].1.max(t));
        }
    }
    let mut used: Vec<usize> = spans
        .iter()
        .map(|(lo, hi)| (hi - lo) as usize + 1)
        .collect();
    used.sort_unstable();
    let usage = TableUsage {
        min_entries: used[0],
        median_entries: used[used.len() / 2],
        wrapped_reads,
        reads: calibration.len() * outputs.len(),
    };
    (next, Some(usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{ReferenceModel, argmax};
    use crate::simulate::Simulator;
    use crate::testing::{image, model, trained_model};

    fn options(ranges: RangeSource, lut_bits: &[LutBits], calibration: &[&[u8]]) -> Lowered {
        lower(
            &model(),
            &LowerOptions {
                weight_bits: BitWidth::new(4).unwrap(),
                lut_bits,
                ranges,
                calibration,
            },
        )
        .unwrap()
    }

    #[test]
    fn worst_case_tables_hold_every_accumulator() {
        let bits = [LutBits::new(4).unwrap()];
        let lowered = options(RangeSource::WorstCase, &bits, &[]);
        let stage = lowered.circuit.first();
        for (j, b) in stage.linear.bounds(stage.input_max).iter().enumerate() {
            for a in [b.min, b.max] {
                let t = stage.entry(j, a, 0.0);
                assert!((1..15).contains(&t), "output {j}: {a} reads {t}");
            }
        }
        assert!(lowered.usage[0].is_none());
    }

    /// Calibrated grids are finer than the worst case and hold the calibration set, and
    /// outputs spread over most of their table.
    #[test]
    fn calibrated_tables_fill_their_entries() {
        let images: Vec<Vec<u8>> = (0..40).map(|seed| image(500 + seed)).collect();
        let views: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
        let bits = [LutBits::new(4).unwrap()];
        let calibrated = options(RangeSource::Calibrated, &bits, &views);
        let worst = options(RangeSource::WorstCase, &bits, &views);
        let usage = calibrated.usage[0].unwrap();
        assert_eq!(usage.wrapped_reads, 0, "{usage:?}");
        assert!(usage.median_entries >= 8, "{usage:?}");
        let worst_usage = worst.usage[0].unwrap();
        assert!(
            worst_usage.median_entries < usage.median_entries,
            "{worst_usage:?} vs {usage:?}"
        );
    }

    /// A model trained on read grids and its circuit are the same function: the clear
    /// circuit gives the float reference's logits (up to float rounding).
    #[test]
    fn trained_grids_make_the_circuit_the_reference() {
        let model = trained_model();
        let lowered = lower(
            &model,
            &LowerOptions {
                weight_bits: BitWidth::new(4).unwrap(),
                lut_bits: &[],
                ranges: RangeSource::Trained,
                calibration: &[],
            },
        )
        .unwrap();
        let reference = ReferenceModel::new(&model);
        let simulator = Simulator::clear(&lowered.circuit);
        for seed in 0..50 {
            let pixels = image(100 + seed);
            let expected = reference.logits(&pixels);
            let got = simulator.logits(&pixels, 0);
            assert_eq!(argmax(&got), argmax(&expected), "image {seed}");
            for (a, b) in got.iter().zip(&expected) {
                assert!(
                    (a - b).abs() < 1e-5 * (1.0 + b.abs()),
                    "image {seed}: {a} vs {b}"
                );
            }
        }
        // Other table bits than trained are refused, as is a model without grids.
        let err = lower(
            &model,
            &LowerOptions {
                weight_bits: BitWidth::new(4).unwrap(),
                lut_bits: &[LutBits::new(5).unwrap()],
                ranges: RangeSource::Trained,
                calibration: &[],
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                LowerError::LutBits {
                    trained: 4,
                    asked: 5,
                    ..
                }
            ),
            "{err}"
        );
        let err = lower(
            &crate::testing::model(),
            &LowerOptions {
                weight_bits: BitWidth::new(4).unwrap(),
                lut_bits: &[],
                ranges: RangeSource::Trained,
                calibration: &[],
            },
        )
        .unwrap_err();
        assert_eq!(err, LowerError::NoGrid { index: 3 });
    }
}
