//! The circuit file: a compiled circuit with everything client and server need to run it,
//! in a binary form (what `hecnn compile` writes) and a JSON form (what `hecnn inspect`
//! prints), both read back with size limits and checks.

use std::fmt;
use std::path::Path;

use bincode::Options;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::circuit::Circuit;
use crate::params::ParameterSetName;
use hecnn_model::io::{FileError, FrameError, frame, read_limited, unframe, write_atomic};
use hecnn_model::model::Shape;

/// `format` of a circuit file.
pub const CIRCUIT_FORMAT: &str = "hecnn-circuit";
/// The circuit format version this build reads and writes (2: torus units and per-stage
/// table widths).
pub const CIRCUIT_VERSION: u32 = 2;
/// Largest circuit file accepted.
pub const MAX_CIRCUIT_BYTES: u64 = 256 << 20;
/// First bytes of the binary form.
const MAGIC: &[u8; 8] = b"HECNNCIR";

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
    /// The tfhe parameter set (see [`crate::params`]).
    pub parameter_set: ParameterSetName,
    /// Target `log2` probability of a wrong read per PBS.
    pub target_log2_p_error: f64,
    /// The circuit.
    pub circuit: Circuit,
}

/// A circuit's identity: the SHA-256 of its circuit file's payload. Shown in hex, its first
/// 16 digits in messages (`{:.16}`); serialised as its 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(pub [u8; 32]);

/// Text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint is 64 hex digits, not {0:?}")]
pub struct BadFingerprint(pub String);

/// 64 hex digits; a precision keeps that many (`{:.16}`, enough to tell circuits apart in
/// a message).
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = f.precision().unwrap_or(64).min(64);
        self.0
            .iter()
            .flat_map(|b| [b >> 4, b & 0xf])
            .take(digits)
            .try_for_each(|nibble| write!(f, "{nibble:x}"))
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = BadFingerprint;
    fn from_str(text: &str) -> Result<Self, BadFingerprint> {
        let bad = || BadFingerprint(text.chars().take(80).collect());
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = BadFingerprint;
    fn try_from(text: String) -> Result<Self, BadFingerprint> {
        text.parse()
    }
}

impl From<Fingerprint> for String {
    fn from(fingerprint: Fingerprint) -> String {
        fingerprint.to_string()
    }
}

/// What is inconsistent in a decoded circuit file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidFile {
    /// Another format name.
    #[error("format {0:?}")]
    Format(String),
    /// The input does not match the first stage.
    #[error("input {shape} up to {max} does not match the first stage")]
    Input {
        /// Input shape.
        shape: Shape,
        /// Largest input level.
        max: u32,
    },
    /// Not one class name per logit.
    #[error("{logits} logits for {names} class names")]
    Classes {
        /// Logits.
        logits: usize,
        /// Class names.
        names: usize,
    },
}

/// A circuit file cannot be read or is not a valid circuit.
#[derive(Debug, thiserror::Error)]
pub enum CircuitFileError {
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
        reason: InvalidFile,
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
        frame(MAGIC, CIRCUIT_VERSION, &self.payload())
    }

    /// The payload of the binary form.
    fn payload(&self) -> Vec<u8> {
        bincode_options()
            .serialize(self)
            .expect("a circuit serialises")
    }

    /// The human-readable form (what `hecnn inspect` prints); [`Self::from_bytes`] reads it too.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a circuit serialises to JSON")
    }

    /// Identifies this circuit: SHA-256 of its binary payload. Keys and queries name it so
    /// that those of another circuit are refused.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(Sha256::digest(self.payload()).into())
    }

    /// Whether a file's first bytes look like a circuit file: the binary magic, or JSON
    /// naming the circuit format early (as [`Self::to_json`] writes it).
    pub fn sniff(head: &[u8]) -> bool {
        head.starts_with(MAGIC)
            || (head.first() == Some(&b'{')
                && String::from_utf8_lossy(head).contains(&format!("\"{CIRCUIT_FORMAT}\"")))
    }

    /// Parses the binary or the JSON form; `origin` names the file in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, CircuitFileError> {
        let corrupted = |reason: String| CircuitFileError::Corrupted {
            path: origin.to_string(),
            reason,
        };
        let file: Self = if bytes.starts_with(MAGIC) {
            let payload = unframe(bytes, CIRCUIT_VERSION).map_err(|e| match e {
                FrameError::Version { found, .. } => CircuitFileError::Version {
                    path: origin.to_string(),
                    found: found.into(),
                },
                other => corrupted(other.to_string()),
            })?;
            bincode_options()
                .deserialize(payload)
                .map_err(|e| corrupted(e.to_string()))?
        } else if bytes.first() == Some(&b'{') {
            let value: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| corrupted(format!("JSON: {e}")))?;
            let format = value.get("format").and_then(|f| f.as_str());
            if format != Some(CIRCUIT_FORMAT) {
                return Err(CircuitFileError::Foreign {
                    path: origin.to_string(),
                    reason: format!("format {format:?}, expected \"{CIRCUIT_FORMAT}\""),
                });
            }
            let version = value.get("version").and_then(|v| v.as_u64());
            if version != Some(u64::from(CIRCUIT_VERSION)) {
                return Err(CircuitFileError::Version {
                    path: origin.to_string(),
                    found: version.unwrap_or(0),
                });
            }
            serde_json::from_value(value).map_err(|e| corrupted(format!("JSON: {e}")))?
        } else {
            return Err(CircuitFileError::Foreign {
                path: origin.to_string(),
                reason: "it starts with neither the circuit magic nor JSON".into(),
            });
        };
        file.validate()
            .map_err(|reason| CircuitFileError::Invalid {
                path: origin.to_string(),
                reason,
            })?;
        Ok(file)
    }

    /// Checks the header fields and the circuit against the rest of the file.
    fn validate(&self) -> Result<(), InvalidFile> {
        if self.format != CIRCUIT_FORMAT {
            return Err(InvalidFile::Format(self.format.clone()));
        }
        let first = self.circuit.first();
        if self.input.shape.len() != first.linear.input_len() || self.input.max != first.input_max {
            return Err(InvalidFile::Input {
                shape: self.input.shape,
                max: self.input.max,
            });
        }
        let logits = self.circuit.last().linear.output_shape().len();
        if logits != self.class_names.len() {
            return Err(InvalidFile::Classes {
                logits,
                names: self.class_names.len(),
            });
        }
        Ok(())
    }

    /// Reads a circuit file (binary or JSON), size-limited and checked.
    pub fn load(path: &Path) -> Result<Self, CircuitFileError> {
        let bytes = read_limited(path, MAX_CIRCUIT_BYTES)?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Writes the binary form atomically.
    pub fn save(&self, path: &Path) -> Result<(), CircuitFileError> {
        write_atomic(path, &self.to_bytes())?;
        Ok(())
    }
}
