//! The integer circuit: what the server evaluates over ciphertexts, what `clear` mode
//! evaluates exactly, and what `simulate` mode evaluates with sampled noise.
//!
//! Each stage is a linear map with integer weights over integer inputs (levels
//! `0..=input_max`), giving accumulators `A_j`. Every stage but the last then reads one
//! table per output; the last stage's accumulators are decrypted as logits.
//!
//! # Encoding (what the runtime must do)
//! Everything lives on the torus `Z/2^64`. A stage's input level `x` is worth the torus
//! value `x u` (`u`: the stage's `input_unit`; the client encrypts pixels so, and the
//! previous stage's tables write their levels so), and the clear offset `O_j` (a torus
//! value) is added to each accumulator, so that output `j` carries the phase
//! `phi_j = A_j u + O_j (mod 2^64)`. A table of `2^p` entries fills half the torus (the
//! other half is the padding bit), one entry per box of width `Δ = 2^(63-p)`, and the
//! modulus switch of the PBS reads entry
//!
//! `t = floor(phi_j / Δ + 1/2 + e)` (`e`: the phase noise, in boxes),
//!
//! so an accumulator of any width is read at `D = Δ / u` accumulator units per entry: any
//! real `D`, not only a power of two. The table is negacyclic: `t` in `2^p..2^(p+1)` reads
//! `-level[t - 2^p]`, and `t` is taken modulo `2^(p+1)`. Offsets computed from worst-case
//! bounds never leave the table; offsets from calibrated or trained ranges can, and then
//! wrap exactly as encrypted evaluation would. Entry `t` of output `j` holds the next
//! stage's input level for the real value `z_j = origin_c + t step_c` of its channel's
//! read grid ([`hecnn_model::grid`]), so that rescaling, the activation and its quantisation are
//! one lookup. The last stage is decoded as `S_j A_j + C_j`, with `A_j = phi_j / u` read as
//! a signed value.
//!
//! Clear mode computes `phi_j` with the same wrapping integer arithmetic, so an encrypted
//! evaluation differs from it only by the noise `e`.

use serde::{Deserialize, Serialize};

use hecnn_model::model::{ConvGeometry, Shape};
use hecnn_model::quantize::LutBits;

/// A stage that does not fit the stages around it, or whose parts disagree.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CircuitError {
    /// The circuit has no stage.
    #[error("the circuit has no stages")]
    Empty,
    /// A linear map whose weights do not match its shape.
    #[error("stage {stage}: {reason}")]
    Linear {
        /// The stage.
        stage: usize,
        /// What is wrong.
        reason: LinearError,
    },
    /// A stage reads more inputs, or larger levels, than the stage before gives.
    #[error(
        "stage {stage}: reads {inputs} inputs up to level {input_max}, the stage before gives {given} up to {given_max}"
    )]
    Chain {
        /// The stage.
        stage: usize,
        /// Inputs it reads.
        inputs: usize,
        /// Largest level it reads.
        input_max: u32,
        /// Outputs of the stage before.
        given: usize,
        /// Largest level the stage before writes.
        given_max: u32,
    },
    /// Tables before the last stage, logits only there.
    #[error("stage {stage}: {reason}")]
    Read {
        /// The stage.
        stage: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Tables or decoding without one entry per output.
    #[error("stage {stage}: {what} has {found} entries for {outputs} outputs")]
    Outputs {
        /// The stage.
        stage: usize,
        /// Which list.
        what: &'static str,
        /// Its length.
        found: usize,
        /// Outputs of the stage.
        outputs: usize,
    },
    /// An input level worth nothing on the torus.
    #[error("stage {stage}: input unit 0")]
    Unit {
        /// The stage.
        stage: usize,
    },
}

/// A linear map whose weights do not fit its shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinearError {
    /// A convolution with the wrong number of weights.
    #[error("convolution has {found} weights, its shape needs {expected}")]
    ConvWeights {
        /// Weights given.
        found: usize,
        /// Weights needed.
        expected: usize,
    },
    /// A kernel larger than its padded input.
    #[error("a {kernel:?} kernel does not fit a {input} input")]
    Kernel {
        /// The kernel.
        kernel: [usize; 2],
        /// The input.
        input: Shape,
    },
    /// A dense map whose weights are not a whole number of rows.
    #[error("dense map has {weights} weights for {inputs} inputs")]
    DenseWeights {
        /// Weights given.
        weights: usize,
        /// Inputs.
        inputs: usize,
    },
}

/// The linear part of a stage: `A = W x`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Linear {
    /// 2-D convolution with zero padding (average pooling already fused in).
    Conv {
        /// Where it reads.
        geometry: ConvGeometry,
        /// `[out, in, kh, kw]` integer weights.
        weights: Vec<i32>,
    },
    /// Fully connected.
    Dense {
        /// Inputs.
        inputs: usize,
        /// `[out, in]` integer weights.
        weights: Vec<i32>,
    },
}

impl Linear {
    /// Shape of the output, or why the map is inconsistent.
    pub fn checked_output_shape(&self) -> Result<Shape, LinearError> {
        match self {
            Self::Conv { geometry, weights } => {
                let expected = geometry.weight_len();
                if weights.len() != expected {
                    return Err(LinearError::ConvWeights {
                        found: weights.len(),
                        expected,
                    });
                }
                geometry.output().ok_or(LinearError::Kernel {
                    kernel: geometry.kernel,
                    input: geometry.input,
                })
            }
            Self::Dense { inputs, weights } => {
                if *inputs == 0 || weights.is_empty() || weights.len() % inputs != 0 {
                    return Err(LinearError::DenseWeights {
                        weights: weights.len(),
                        inputs: *inputs,
                    });
                }
                Ok(Shape::vector(weights.len() / inputs))
            }
        }
    }

    /// Shape of the output.
    ///
    /// # Panics
    /// On an inconsistent map; circuits are validated when built or loaded.
    pub fn output_shape(&self) -> Shape {
        self.checked_output_shape()
            .expect("circuits are validated when built or loaded")
    }

    /// Number of output channels (outputs of a dense map are channels of one value).
    pub fn channels(&self) -> usize {
        self.output_shape().channels
    }

    /// Number of inputs.
    pub fn input_len(&self) -> usize {
        match self {
            Self::Conv { geometry, .. } => geometry.input.len(),
            Self::Dense { inputs, .. } => *inputs,
        }
    }

    /// Calls `f(output, input, weight)` for every non-padding tap, outputs in order.
    pub fn for_each_tap(&self, mut f: impl FnMut(usize, usize, i32)) {
        match self {
            Self::Conv { geometry, weights } => {
                geometry.for_each_tap(|j, i, k| f(j, i, weights[k]));
            }
            Self::Dense { inputs, weights } => {
                for (j, row) in weights.chunks(*inputs).enumerate() {
                    for (i, &w) in row.iter().enumerate() {
                        f(j, i, w);
                    }
                }
            }
        }
    }

    /// `A = W x`.
    pub fn apply(&self, x: &[i64]) -> Vec<i64> {
        let mut out = vec![0i64; self.output_shape().len()];
        self.for_each_tap(|j, i, w| out[j] += i64::from(w) * x[i]);
        out
    }

    /// Per output: the least and greatest accumulator over all inputs in `0..=input_max`,
    /// and the squared 2-norm of its weights.
    pub fn bounds(&self, input_max: u32) -> Vec<AccumulatorBounds> {
        let mut bounds = vec![AccumulatorBounds::default(); self.output_shape().len()];
        let max = i64::from(input_max);
        self.for_each_tap(|j, _, w| {
            let b = &mut bounds[j];
            let w = i64::from(w);
            if w < 0 {
                b.min += w * max;
            } else {
                b.max += w * max;
            }
            b.norm2 += (w * w) as f64;
        });
        bounds
    }
}

/// What the weights of one output allow its accumulator to be.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AccumulatorBounds {
    /// Least value.
    pub min: i64,
    /// Greatest value.
    pub max: i64,
    /// Squared 2-norm of the weights.
    pub norm2: f64,
}

/// The table reads after a stage's linear map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tables {
    /// Table bits `p`: every output's table has `2^p` entries.
    pub lut_bits: LutBits,
    /// `O_j`, per output: the torus value added before the read.
    pub offsets: Vec<u64>,
    /// Per output, its `2^p` next-stage input levels.
    pub levels: Vec<Vec<u32>>,
}

/// How the client turns the last stage's accumulators into logits: `S_j A_j + C_j`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decoding {
    /// `S_j`, per logit.
    pub scale: Vec<f64>,
    /// `C_j`, per logit.
    pub shift: Vec<f64>,
}

/// What follows a stage's linear map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Read {
    /// One PBS per output.
    Tables(Tables),
    /// The last stage: decrypted and decoded by the client.
    Logits(Decoding),
}

/// One stage: linear map, then either table reads or (last stage) the logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// The model layers it computes, as reports name them (`conv2d+avg-pool+swish4`).
    pub label: String,
    /// The linear map.
    pub linear: Linear,
    /// Largest input level (inputs are `0..=input_max`).
    pub input_max: u32,
    /// `u`: the torus value of one input level.
    pub input_unit: u64,
    /// What follows.
    pub read: Read,
}

impl Stage {
    /// The phase of output `j` for accumulator `a`: `a u + O_j (mod 2^64)` (no offset for
    /// the logits).
    pub fn phase(&self, j: usize, a: i64) -> u64 {
        let offset = self.tables().map_or(0, |t| t.offsets[j]);
        (a as u64)
            .wrapping_mul(self.input_unit)
            .wrapping_add(offset)
    }

    /// The entry read for accumulator `a` of output `j` with a phase error of
    /// `error_boxes` table boxes: `t = floor(phi_j / Δ + 1/2 + e) mod 2^(p+1)` (see the
    /// module documentation).
    ///
    /// # Panics
    /// On the last stage, which has no tables.
    pub fn entry(&self, j: usize, a: i64, error_boxes: f64) -> u64 {
        let tables = self
            .tables()
            .expect("entries are asked of stages with tables");
        let phase = self.phase(j, a);
        let shift = 63 - tables.lut_bits.get();
        if error_boxes == 0.0 {
            // Exact in integers; the result is below 2^(p+1) by construction.
            phase.wrapping_add(1 << (shift - 1)) >> shift
        } else {
            let t = (phase as f64 / tables.lut_bits.box_width() as f64 + 0.5 + error_boxes).floor();
            t.rem_euclid((2 * tables.lut_bits.entries()) as f64) as u64
        }
    }

    /// The input level read for accumulator `a` of output `j` with a phase error of
    /// `error_boxes` boxes: the entry's level, negated in the negacyclic half.
    ///
    /// # Panics
    /// On the last stage, which has no tables.
    pub fn read_table(&self, j: usize, a: i64, error_boxes: f64) -> i64 {
        let tables = self
            .tables()
            .expect("read_table is asked of stages with tables");
        let entries = tables.lut_bits.entries() as u64;
        let t = self.entry(j, a, error_boxes);
        if t < entries {
            i64::from(tables.levels[j][t as usize])
        } else {
            -i64::from(tables.levels[j][(t - entries) as usize])
        }
    }

    /// The accumulator a decrypted logit phase stands for, `phi / u` read as a signed value.
    pub fn decode_accumulator(&self, phase: u64) -> f64 {
        phase as i64 as f64 / self.input_unit as f64
    }

    /// The tables, unless this is the last stage.
    pub fn tables(&self) -> Option<&Tables> {
        match &self.read {
            Read::Tables(tables) => Some(tables),
            Read::Logits(_) => None,
        }
    }
}

/// An integer circuit: stages that chain, every table and decoding with one entry per
/// output ([`Circuit::new`] checks; deserialising checks the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedCircuit")]
pub struct Circuit {
    stages: Vec<Stage>,
}

/// A circuit as read, before [`Circuit::new`] checks it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UncheckedCircuit {
    stages: Vec<Stage>,
}

impl TryFrom<UncheckedCircuit> for Circuit {
    type Error = CircuitError;

    fn try_from(unchecked: UncheckedCircuit) -> Result<Self, CircuitError> {
        Self::new(unchecked.stages)
    }
}

impl Circuit {
    /// The circuit of `stages` (input to output), after checking that they chain, that
    /// every table and decoding has one entry per output, and that every input level is
    /// worth something on the torus.
    pub fn new(stages: Vec<Stage>) -> Result<Self, CircuitError> {
        check(&stages)?;
        Ok(Self { stages })
    }

    /// The stages, input to output.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The first stage, which reads the image.
    pub fn first(&self) -> &Stage {
        &self.stages[0]
    }

    /// The last stage, which gives the logits.
    pub fn last(&self) -> &Stage {
        self.stages.last().expect("circuits have stages")
    }

    /// Number of PBS per evaluation: one per table read.
    pub fn pbs_count(&self) -> usize {
        self.stages
            .iter()
            .filter_map(Stage::tables)
            .map(|t| t.offsets.len())
            .sum()
    }

    /// The table widths of the stages with tables, as a list (`4` or `4,5`).
    pub fn lut_widths(&self) -> String {
        self.stages
            .iter()
            .filter_map(Stage::tables)
            .map(|t| t.lut_bits.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The widest table of the circuit (what the parameter set must hold).
    pub fn max_lut_bits(&self) -> Option<LutBits> {
        self.stages
            .iter()
            .filter_map(Stage::tables)
            .map(|t| t.lut_bits)
            .max()
    }
}

/// Checks what [`Circuit::new`] promises.
fn check(stages: &[Stage]) -> Result<(), CircuitError> {
    let Some(last) = stages.last() else {
        return Err(CircuitError::Empty);
    };
    if !matches!(last.read, Read::Logits(_)) {
        return Err(CircuitError::Read {
            stage: stages.len() - 1,
            reason: "the last stage has tables instead of logits",
        });
    }
    let mut previous: Option<(usize, u32)> = None;
    for (index, stage) in stages.iter().enumerate() {
        let outputs = stage
            .linear
            .checked_output_shape()
            .map_err(|reason| CircuitError::Linear {
                stage: index,
                reason,
            })?
            .len();
        if let Some((given, given_max)) = previous
            && (given != stage.linear.input_len() || given_max > stage.input_max)
        {
            return Err(CircuitError::Chain {
                stage: index,
                inputs: stage.linear.input_len(),
                input_max: stage.input_max,
                given,
                given_max,
            });
        }
        if stage.input_unit == 0 {
            return Err(CircuitError::Unit { stage: index });
        }
        let count = |what, found| {
            if found == outputs {
                Ok(())
            } else {
                Err(CircuitError::Outputs {
                    stage: index,
                    what,
                    found,
                    outputs,
                })
            }
        };
        match &stage.read {
            Read::Tables(tables) => {
                if index + 1 == stages.len() {
                    return Err(CircuitError::Read {
                        stage: index,
                        reason: "the last stage has tables",
                    });
                }
                count("offsets", tables.offsets.len())?;
                count("tables", tables.levels.len())?;
                let entries = tables.lut_bits.entries();
                if let Some(short) = tables.levels.iter().find(|l| l.len() != entries) {
                    return Err(CircuitError::Outputs {
                        stage: index,
                        what: "a table",
                        found: short.len(),
                        outputs: entries,
                    });
                }
                let max = tables.levels.iter().flatten().copied().max().unwrap_or(0);
                previous = Some((outputs, max));
            }
            Read::Logits(decoding) => {
                if index + 1 != stages.len() {
                    return Err(CircuitError::Read {
                        stage: index,
                        reason: "logits before the last stage",
                    });
                }
                count("decoding scales", decoding.scale.len())?;
                count("decoding shifts", decoding.shift.len())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_taps_skip_padding() {
        let conv = Linear::Conv {
            geometry: ConvGeometry {
                input: Shape {
                    channels: 1,
                    height: 2,
                    width: 2,
                },
                out_channels: 1,
                kernel: [3, 3],
                stride: [1, 1],
                padding: [1, 1],
            },
            weights: (1..=9).collect(),
        };
        assert_eq!(conv.output_shape().len(), 4);
        // Output (0, 0) sees the input through the kernel's lower-right 2x2: 5 6 / 8 9.
        assert_eq!(conv.apply(&[1, 10, 100, 1000])[0], 5 + 60 + 800 + 9000);
        let bounds = conv.bounds(3);
        assert_eq!(bounds[0].max, (5 + 6 + 8 + 9) * 3);
        assert_eq!(bounds[0].norm2, (25 + 36 + 64 + 81) as f64);
    }

    /// A dense stage of one input, read at `D = 2.5` accumulator units per entry of a
    /// 4-entry table, offset by half an entry.
    fn stage() -> Stage {
        let lut_bits = LutBits::new(2).unwrap();
        let unit = (lut_bits.box_width() as f64 / 2.5) as u64;
        Stage {
            label: "dense".into(),
            linear: Linear::Dense {
                inputs: 1,
                weights: vec![1],
            },
            input_max: 255,
            input_unit: unit,
            read: Read::Tables(Tables {
                lut_bits,
                offsets: vec![lut_bits.box_width() / 2],
                levels: vec![vec![10, 11, 12, 13]],
            }),
        }
    }

    #[test]
    fn reads_round_at_any_accumulator_step_and_wrap_negacyclically() {
        let stage = stage();
        // t = floor(a / 2.5 + 1/2 + 1/2).
        let entries: Vec<u64> = (0..8).map(|a| stage.entry(0, a, 0.0)).collect();
        assert_eq!(entries, vec![1, 1, 1, 2, 2, 3, 3, 3]);
        assert_eq!(stage.read_table(0, 0, 0.0), 11);
        // a = 10 reads entry 5: the negated entry 1; a = -3 reads entry -1 = 7.
        assert_eq!(stage.read_table(0, 10, 0.0), -11);
        assert_eq!(stage.entry(0, -3, 0.0), 7);
        assert_eq!(stage.read_table(0, -3, 0.0), -13);
        // The noisy read agrees with the exact one without noise, and moves with it.
        assert_eq!(stage.entry(0, 3, 1e-12), 2);
        assert_eq!(stage.entry(0, 3, -0.3), 1);
        assert_eq!(stage.entry(0, -3, 1e-12), 7);
    }

    #[test]
    fn inconsistent_circuits_are_named() {
        let logits = Stage {
            input_max: 13,
            read: Read::Logits(Decoding {
                scale: vec![1.0],
                shift: vec![0.0],
            }),
            ..stage()
        };
        let circuit = Circuit::new(vec![stage(), logits.clone()]).unwrap();
        assert_eq!(circuit.max_lut_bits(), LutBits::new(2).ok());
        assert_eq!(Circuit::new(vec![]), Err(CircuitError::Empty));
        let too_small = vec![
            stage(),
            Stage {
                input_max: 12,
                ..logits.clone()
            },
        ];
        assert!(matches!(
            Circuit::new(too_small),
            Err(CircuitError::Chain {
                stage: 1,
                given_max: 13,
                ..
            })
        ));
        let mut short = vec![stage(), logits];
        if let Read::Tables(tables) = &mut short[0].read {
            tables.levels[0].pop();
        }
        let short_json = serde_json::to_string(&serde_json::json!({ "stages": short })).unwrap();
        assert!(matches!(
            Circuit::new(short),
            Err(CircuitError::Outputs {
                stage: 0,
                found: 3,
                ..
            })
        ));
        // Deserialising checks as much.
        let err = serde_json::from_str::<Circuit>(&short_json).unwrap_err();
        assert!(err.to_string().contains("stage 0"), "{err}");
    }
}
