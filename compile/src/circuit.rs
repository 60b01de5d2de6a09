//! The integer circuit: what the server evaluates over ciphertexts, what `clear` mode
//! evaluates exactly, and what `simulate` mode evaluates with sampled noise.
//!
//! Each stage is a linear map with integer weights over integer inputs (levels
//! `0..=input_max`), giving accumulators `A_j`. Every stage but the last then reads one
//! table per output; the last stage's accumulators are decrypted as logits.
//!
//! # Encoding (what the runtime must do)
//! With `p` table bits, a table of `2^p` entries fills half the torus (the other half is
//! the padding bit), one entry per box of width `Δ = 2^(63-p)`. A stage with rounding bits
//! `k` has its input levels encoded at `Δ / 2^k = 2^(63-p-k)` each (the client encrypts
//! pixels so, and the previous stage's tables output their levels so), and the clear offset
//! `O_j Δ / 2^k` is added to each accumulator. The modulus switch of the PBS then reads
//! entry
//!
//! `t = round((A_j + O_j) / 2^k + e)` (`e`: the phase noise, in boxes),
//!
//! so an accumulator of any width is read at the table's resolution. The table is
//! negacyclic: `t` in `2^p..2^(p+1)` reads `-level[t - 2^p]`, and `t` is taken modulo
//! `2^(p+1)`. Offsets computed from worst-case bounds never leave the table; offsets from
//! calibrated ranges can, and then wrap exactly as encrypted evaluation would. Entry `t`
//! holds the next stage's input level for the real value `z_j = S_j (t 2^k - O_j) + C_j`,
//! so that rescaling, the activation and its quantisation are one lookup. The last stage
//! is decoded as `S_j A_j + C_j`, with `A_j` read as a signed value.

use std::fmt;
use std::path::Path;

use bincode::Options;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::io::{FileError, read_limited, write_atomic};
use crate::model::{ConvGeometry, Shape};

/// `format` of a circuit file.
pub const CIRCUIT_FORMAT: &str = "hecnn-circuit";
/// The circuit format version this build reads and writes.
pub const CIRCUIT_VERSION: u32 = 1;
/// Largest circuit file accepted.
pub const MAX_CIRCUIT_BYTES: u64 = 256 << 20;
/// First bytes of the binary form.
const MAGIC: &[u8; 8] = b"HECNNCIR";
/// Magic, version, SHA-256 of the payload.
const HEADER_BYTES: usize = 8 + 4 + 32;

/// Table input bits `p`: tables of `2^p` entries, boxes of `2^(63-p)` on the torus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct LutBits(pub(crate) u32);

impl LutBits {
    /// Smallest table width.
    pub const MIN: u32 = 1;
    /// Largest table width (tfhe's largest validated sets have 64 boxes; 8 bits leaves
    /// room for custom encodings on sets with `N >= 512`).
    pub const MAX: u32 = 8;

    /// A table width, refusing values outside `MIN..=MAX`.
    pub fn new(bits: u32) -> Result<Self, String> {
        if (Self::MIN..=Self::MAX).contains(&bits) {
            Ok(Self(bits))
        } else {
            Err(format!(
                "table bits {bits} out of range {}..={}",
                Self::MIN,
                Self::MAX
            ))
        }
    }

    /// The bits.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Number of table entries (boxes), `2^p`.
    pub fn entries(self) -> usize {
        1 << self.0
    }
}

impl TryFrom<u32> for LutBits {
    type Error = String;
    fn try_from(bits: u32) -> Result<Self, String> {
        Self::new(bits)
    }
}

impl From<LutBits> for u32 {
    fn from(bits: LutBits) -> u32 {
        bits.0
    }
}

impl fmt::Display for LutBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Rounding bits `k`: a stage's accumulators are read at `2^k` of them per table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoundingBits(pub u32);

impl RoundingBits {
    /// The least `k` whose reads of values in `0..=span` all land inside `entries`
    /// entries: `round(span / 2^k) <= entries - 1`, i.e. `2 span < (2 entries - 1) 2^k`.
    pub fn to_fit(span: u64, entries: u64) -> Self {
        assert!(entries >= 1, "a table has entries");
        let limit = 2 * u128::from(entries) - 1;
        let k = (0..64)
            .find(|&k| 2 * u128::from(span) < limit << k)
            .expect("any u64 span fits in 64 rounding bits");
        Self(k)
    }
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
    fn checked_output_shape(&self) -> Result<Shape, String> {
        match self {
            Self::Conv { geometry, weights } => {
                let expected = geometry.weight_len();
                if weights.len() != expected {
                    return Err(format!(
                        "convolution has {} weights, its shape needs {expected}",
                        weights.len()
                    ));
                }
                geometry.output().ok_or_else(|| {
                    format!(
                        "a {:?} kernel does not fit a {} input",
                        geometry.kernel, geometry.input
                    )
                })
            }
            Self::Dense { inputs, weights } => {
                if *inputs == 0 || weights.is_empty() || weights.len() % inputs != 0 {
                    return Err(format!(
                        "dense map has {} weights for {inputs} inputs",
                        weights.len()
                    ));
                }
                Ok(Shape::vector(weights.len() / inputs))
            }
        }
    }

    /// Shape of the output.
    pub fn output_shape(&self) -> Shape {
        self.checked_output_shape()
            .expect("circuits are validated when built or loaded")
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
    /// `O_j`, per output: the clear offset added before the read.
    pub offsets: Vec<i64>,
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
    /// `k`: inputs are encoded at `2^(63-p-k)`, so accumulators are read at `2^k` per entry.
    pub rounding_bits: RoundingBits,
    /// What follows.
    pub read: Read,
}

impl Stage {
    /// The input level read for accumulator `a` of output `j` with a phase error of
    /// `error_boxes` table boxes: entry `t = round((a + O_j) / 2^k + e)` (halves up), taken
    /// negacyclically (see the module documentation). Panics on the last stage.
    pub fn read_table(&self, lut_bits: LutBits, j: usize, a: i64, error_boxes: f64) -> i64 {
        let tables = self
            .tables()
            .expect("read_table is asked of stages with tables");
        let shifted = a + tables.offsets[j];
        let k = self.rounding_bits.0;
        let t = if error_boxes == 0.0 {
            // Exact in integers: floor((x + 2^(k-1)) / 2^k) for k > 0.
            if k == 0 {
                shifted
            } else {
                (shifted + (1 << (k - 1))) >> k
            }
        } else {
            (shifted as f64 / (1u64 << k) as f64 + error_boxes + 0.5).floor() as i64
        };
        let entries = lut_bits.entries() as i64;
        let t = t.rem_euclid(2 * entries);
        if t < entries {
            i64::from(tables.levels[j][t as usize])
        } else {
            -i64::from(tables.levels[j][(t - entries) as usize])
        }
    }

    /// The tables, unless this is the last stage.
    pub fn tables(&self) -> Option<&Tables> {
        match &self.read {
            Read::Tables(tables) => Some(tables),
            Read::Logits(_) => None,
        }
    }
}

/// An integer circuit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Circuit {
    /// Table input bits `p`, common to every table.
    pub lut_bits: LutBits,
    /// The stages, input to output.
    pub stages: Vec<Stage>,
}

impl Circuit {
    /// Checks that the stages chain, that every table and decoding has one entry per
    /// output, and that encodings fit the torus; says what is wrong otherwise.
    pub fn validate(&self) -> Result<(), String> {
        let Some(last) = self.stages.last() else {
            return Err("the circuit has no stages".into());
        };
        if !matches!(last.read, Read::Logits(_)) {
            return Err("the last stage has tables instead of logits".into());
        }
        let mut previous: Option<(usize, u32)> = None;
        for (index, stage) in self.stages.iter().enumerate() {
            let fail = |reason: String| Err(format!("stage {index}: {reason}"));
            let outputs = match stage.linear.checked_output_shape() {
                Ok(shape) => shape.len(),
                Err(reason) => return fail(reason),
            };
            if let Some((len, max)) = previous
                && (len != stage.linear.input_len() || max > stage.input_max)
            {
                return fail(format!(
                    "reads {} inputs up to {}, the stage before gives {len} up to {max}",
                    stage.linear.input_len(),
                    stage.input_max
                ));
            }
            if self.lut_bits.get() + stage.rounding_bits.0 > 62 {
                return fail(format!(
                    "{} rounding bits leave no room on the torus",
                    stage.rounding_bits.0
                ));
            }
            match &stage.read {
                Read::Tables(tables) => {
                    if index + 1 == self.stages.len() {
                        return fail("the last stage has tables".into());
                    }
                    let entries = self.lut_bits.entries();
                    if tables.offsets.len() != outputs
                        || tables.levels.len() != outputs
                        || tables.levels.iter().any(|l| l.len() != entries)
                    {
                        return fail(format!(
                            "tables do not give {outputs} outputs {entries} entries each"
                        ));
                    }
                    let max = tables.levels.iter().flatten().copied().max().unwrap_or(0);
                    previous = Some((outputs, max));
                }
                Read::Logits(decoding) => {
                    if index + 1 != self.stages.len() {
                        return fail("logits before the last stage".into());
                    }
                    if decoding.scale.len() != outputs || decoding.shift.len() != outputs {
                        return fail(format!("decoding does not have {outputs} logits"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Number of PBS per evaluation: one per table read.
    pub fn pbs_count(&self) -> usize {
        self.stages
            .iter()
            .filter_map(Stage::tables)
            .map(|t| t.offsets.len())
            .sum()
    }
}

/// Largest input level of the first stage: raw 8-bit pixels.
pub const PIXEL_MAX: u32 = 255;

/// What the client encrypts: raw pixels of this shape, levels `0..=max`, one per input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputQuant {
    /// Image shape.
    pub shape: Shape,
    /// Largest level.
    pub max: u32,
}

/// Everything the client and the server need to run a compiled model, and nothing secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitFile {
    /// Always [`CIRCUIT_FORMAT`].
    pub format: String,
    /// [`CIRCUIT_VERSION`].
    pub version: u32,
    /// Name of the model it was compiled from.
    pub name: String,
    /// Data set the model was trained on.
    pub dataset: String,
    /// Class names, in logit order.
    pub class_names: Vec<String>,
    /// Input quantisation.
    pub input: InputQuant,
    /// Name of the tfhe parameter set (see [`crate::params`]).
    pub parameter_set: String,
    /// Target `log2` probability of a wrong read per PBS.
    pub target_log2_p_error: f64,
    /// The circuit.
    pub circuit: Circuit,
}

/// A circuit file cannot be read or is not a valid circuit.
#[derive(Debug, thiserror::Error)]
pub enum CircuitError {
    /// Reading or writing failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Not a circuit file at all.
    #[error("{path}: not a hecnn circuit file ({reason})")]
    Foreign {
        /// The file.
        path: String,
        /// What was found.
        reason: String,
    },
    /// A circuit file of another version.
    #[error("{path}: circuit format version {found}; this build reads version {CIRCUIT_VERSION}")]
    Version {
        /// The file.
        path: String,
        /// Its version.
        found: u64,
    },
    /// The content does not match its checksum or cannot be decoded.
    #[error("{path}: corrupted circuit file: {reason}")]
    Corrupted {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Decoded, but inconsistent.
    #[error("{path}: invalid circuit: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

fn bincode_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_CIRCUIT_BYTES)
        .reject_trailing_bytes()
}

impl CircuitFile {
    /// The binary form: magic, version (u32 LE), SHA-256 of the payload, then the payload
    /// (bincode, variable-length integers).
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = bincode_options()
            .serialize(self)
            .expect("a circuit serialises");
        let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&CIRCUIT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&Sha256::digest(&payload));
        bytes.extend_from_slice(&payload);
        bytes
    }

    /// The human-readable form (what `hecnn inspect` prints); [`Self::from_bytes`] reads it too.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a circuit serialises to JSON")
    }

    /// Identifies this circuit: SHA-256 of its binary payload, in hex. Keys and queries
    /// name it so that those of another circuit are refused.
    pub fn fingerprint(&self) -> String {
        let bytes = self.to_bytes();
        bytes[12..HEADER_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether a file's first bytes look like a circuit file: the binary magic, or JSON
    /// naming the circuit format early (as [`Self::to_json`] writes it).
    pub fn sniff(head: &[u8]) -> bool {
        head.starts_with(MAGIC)
            || (head.first() == Some(&b'{')
                && String::from_utf8_lossy(head).contains(&format!("\"{CIRCUIT_FORMAT}\"")))
    }

    /// Parses the binary or the JSON form; `origin` names the file in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, CircuitError> {
        let corrupted = |reason: String| CircuitError::Corrupted {
            path: origin.to_string(),
            reason,
        };
        let file: Self = if bytes.starts_with(MAGIC) {
            if bytes.len() < HEADER_BYTES {
                return Err(corrupted(format!(
                    "truncated: {} bytes, the header alone has {HEADER_BYTES}",
                    bytes.len()
                )));
            }
            let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
            if version != CIRCUIT_VERSION {
                return Err(CircuitError::Version {
                    path: origin.to_string(),
                    found: version.into(),
                });
            }
            let payload = &bytes[HEADER_BYTES..];
            if Sha256::digest(payload).as_slice() != &bytes[12..HEADER_BYTES] {
                return Err(corrupted(
                    "the content does not match its checksum (truncated or altered)".into(),
                ));
            }
            bincode_options()
                .deserialize(payload)
                .map_err(|e| corrupted(e.to_string()))?
        } else if bytes.first() == Some(&b'{') {
            let value: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| corrupted(format!("JSON: {e}")))?;
            let format = value.get("format").and_then(|f| f.as_str());
            if format != Some(CIRCUIT_FORMAT) {
                return Err(CircuitError::Foreign {
                    path: origin.to_string(),
                    reason: format!("format {format:?}, expected \"{CIRCUIT_FORMAT}\""),
                });
            }
            let version = value.get("version").and_then(|v| v.as_u64());
            if version != Some(u64::from(CIRCUIT_VERSION)) {
                return Err(CircuitError::Version {
                    path: origin.to_string(),
                    found: version.unwrap_or(0),
                });
            }
            serde_json::from_value(value).map_err(|e| corrupted(format!("JSON: {e}")))?
        } else {
            return Err(CircuitError::Foreign {
                path: origin.to_string(),
                reason: "it starts with neither the circuit magic nor JSON".into(),
            });
        };
        file.validate().map_err(|reason| CircuitError::Invalid {
            path: origin.to_string(),
            reason,
        })?;
        Ok(file)
    }

    /// Checks the header fields and the circuit against the rest of the file.
    fn validate(&self) -> Result<(), String> {
        if self.format != CIRCUIT_FORMAT {
            return Err(format!("format {:?}", self.format));
        }
        self.circuit.validate()?;
        if crate::params::by_name(&self.parameter_set).is_none() {
            return Err(format!(
                "unknown parameter set {} (not one of tfhe's validated sets this build knows)",
                self.parameter_set
            ));
        }
        let first = &self.circuit.stages[0];
        if self.input.shape.len() != first.linear.input_len() || self.input.max != first.input_max {
            return Err(format!(
                "input {} up to {} does not match the first stage",
                self.input.shape, self.input.max
            ));
        }
        let logits = self
            .circuit
            .stages
            .last()
            .expect("validated circuits have stages")
            .linear
            .output_shape()
            .len();
        if logits != self.class_names.len() {
            return Err(format!(
                "{logits} logits for {} class names",
                self.class_names.len()
            ));
        }
        Ok(())
    }

    /// Reads a circuit file (binary or JSON), size-limited and checked.
    pub fn load(path: &Path) -> Result<Self, CircuitError> {
        let bytes = read_limited(path, MAX_CIRCUIT_BYTES)?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Writes the binary form atomically.
    pub fn save(&self, path: &Path) -> Result<(), CircuitError> {
        write_atomic(path, &self.to_bytes())?;
        Ok(())
    }
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

    #[test]
    fn rounding_bits_fit_the_span_into_the_table() {
        let p = 16;
        assert_eq!(RoundingBits::to_fit(15, p), RoundingBits(0));
        // 16 would read entry 16: one more bit. 30 / 2 = 15 fits, 31 / 2 rounds to 16.
        assert_eq!(RoundingBits::to_fit(16, p), RoundingBits(1));
        assert_eq!(RoundingBits::to_fit(30, p), RoundingBits(1));
        assert_eq!(RoundingBits::to_fit(31, p), RoundingBits(2));
        assert_eq!(RoundingBits::to_fit(u64::MAX, p).0, 61);
    }

    #[test]
    fn lut_bits_are_range_checked() {
        assert!(LutBits::new(0).is_err());
        assert!(LutBits::new(9).is_err());
        assert_eq!(LutBits::new(4).unwrap().entries(), 16);
    }
}
