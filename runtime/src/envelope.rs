//! The one layout of every file the runtime writes: keys, queries and results.
//!
//! ```text
//! magic (8 bytes, one per kind) | version (u32 LE) | SHA-256 of the rest (32 bytes)
//! | binding length (u32 LE) | binding (bincode) | payload (tfhe::safe_serialization)
//! ```
//!
//! (the frame of [`hecnn_model::io`] around the binding and the payload).
//!
//! The binding names the circuit (its fingerprint) and the parameter set the content was
//! made for, so that a key or a query of another circuit is refused before anything is
//! computed. The checksum catches truncation and corruption with a clear message; the
//! payload goes through tfhe's safe serialisation (type name, version and size limit).

use std::path::Path;

use bincode::Options;
use hecnn_compile::circuit_file::{CircuitFile, Fingerprint};
use hecnn_model::io::{FrameError, frame, read_limited, unframe, write_atomic};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tfhe::named::Named;
use tfhe_versionable::{Unversionize, Versionize};

use crate::error::RuntimeError;
use crate::file_kind::{FORMAT_VERSION, FileKind};

/// Largest binding accepted (two short strings).
const MAX_BINDING_BYTES: u64 = 4096;

/// The circuit and parameter set a file belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// [`CircuitFile::fingerprint`] of the circuit.
    pub circuit: Fingerprint,
    /// Name of the parameter set, as the file records it.
    pub parameter_set: String,
}

impl Binding {
    /// The binding of files made for `circuit`.
    pub fn of(circuit: &CircuitFile) -> Self {
        Self {
            circuit: circuit.fingerprint(),
            parameter_set: circuit.parameter_set.to_string(),
        }
    }

    /// Refuses a file (`kind`, read from `origin`) bound to anything but `expected`.
    pub fn check(&self, expected: &Self, kind: FileKind, origin: &str) -> Result<(), RuntimeError> {
        // The fingerprint covers the parameter set: another circuit is the root cause,
        // another set alone means a file altered after its checksum was made.
        if self.circuit != expected.circuit {
            return Err(RuntimeError::OtherCircuit {
                path: origin.to_string(),
                kind,
                found: self.circuit,
                expected: expected.circuit,
            });
        }
        if self.parameter_set != expected.parameter_set {
            return Err(RuntimeError::OtherParameterSet {
                path: origin.to_string(),
                kind,
                found: self.parameter_set.clone(),
                expected: expected.parameter_set.clone(),
            });
        }
        Ok(())
    }
}

fn binding_options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_BINDING_BYTES)
}

/// The bytes of a file of `kind` holding `payload`.
pub fn to_bytes<T: Serialize + Versionize + Named>(
    kind: FileKind,
    binding: &Binding,
    payload: &T,
) -> Vec<u8> {
    let binding_bytes = binding_options()
        .serialize(binding)
        .expect("a binding serialises");
    let mut body = Vec::new();
    body.extend_from_slice(&(binding_bytes.len() as u32).to_le_bytes());
    body.extend_from_slice(&binding_bytes);
    tfhe::safe_serialization::safe_serialize(payload, &mut body, kind.size_limit())
        .expect("runtime payloads stay within their size limits");
    frame(kind.magic(), FORMAT_VERSION, &body)
}

/// Parses a file of `kind`; `origin` names it in errors.
pub fn from_bytes<T: DeserializeOwned + Unversionize + Named>(
    bytes: &[u8],
    kind: FileKind,
    origin: &str,
) -> Result<(Binding, T), RuntimeError> {
    let corrupted = |reason: String| RuntimeError::Corrupted {
        path: origin.to_string(),
        kind,
        reason,
    };
    if !bytes.starts_with(kind.magic()) {
        let found = match FileKind::ALL
            .iter()
            .find(|other| bytes.starts_with(other.magic()))
        {
            Some(other) => format!("it is a hecnn {other}"),
            None if bytes.len() < 8 => format!("only {} bytes", bytes.len()),
            None => "it does not start with a hecnn file header".to_string(),
        };
        return Err(RuntimeError::Foreign {
            path: origin.to_string(),
            kind,
            found,
        });
    }
    let body = unframe(bytes, FORMAT_VERSION).map_err(|e| match e {
        FrameError::Version { found, .. } => RuntimeError::Version {
            path: origin.to_string(),
            kind,
            found,
        },
        other => corrupted(other.to_string()),
    })?;
    let (length, rest) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupted("no binding".into()))?;
    let length = u32::from_le_bytes(*length) as usize;
    if length > rest.len() {
        return Err(corrupted("the binding runs past the end".into()));
    }
    let binding: Binding = binding_options()
        .deserialize(&rest[..length])
        .map_err(|e| corrupted(format!("binding: {e}")))?;
    let payload = tfhe::safe_serialization::safe_deserialize(&rest[length..], kind.size_limit())
        .map_err(|e| corrupted(e.to_string()))?;
    Ok((binding, payload))
}

/// Writes a file of `kind` atomically.
pub fn save<T: Serialize + Versionize + Named>(
    path: &Path,
    kind: FileKind,
    binding: &Binding,
    payload: &T,
) -> Result<(), RuntimeError> {
    write_atomic(path, &to_bytes(kind, binding, payload))?;
    Ok(())
}

/// Parses a file of `kind` and refuses one bound to anything but `expected`.
pub fn from_bytes_bound<T: DeserializeOwned + Unversionize + Named>(
    bytes: &[u8],
    kind: FileKind,
    expected: &Binding,
    origin: &str,
) -> Result<T, RuntimeError> {
    let (binding, payload) = from_bytes(bytes, kind, origin)?;
    binding.check(expected, kind, origin)?;
    Ok(payload)
}

/// Reads a file of `kind`, size-limited and checked, and refuses one bound to another
/// circuit or parameter set than `expected`.
pub fn load<T: DeserializeOwned + Unversionize + Named>(
    path: &Path,
    kind: FileKind,
    expected: &Binding,
) -> Result<T, RuntimeError> {
    let bytes = read_limited(path, kind.size_limit())?;
    from_bytes_bound(&bytes, kind, expected, &path.display().to_string())
}

/// A runtime file: it writes itself in the one layout, bound to its circuit.
pub trait RuntimeFile {
    /// What the file holds.
    const KIND: FileKind;
    /// The content as stored.
    type Payload: Serialize + Versionize + Named;

    /// The circuit and parameter set it belongs to.
    fn binding(&self) -> &Binding;

    /// The content as stored.
    fn payload(&self) -> &Self::Payload;

    /// The file bytes (their length is its size on disk or on the wire).
    fn to_bytes(&self) -> Vec<u8> {
        to_bytes(Self::KIND, self.binding(), self.payload())
    }

    /// Writes the file atomically.
    fn save(&self, path: &Path) -> Result<(), RuntimeError> {
        save(path, Self::KIND, self.binding(), self.payload())
    }
}

/// Declares a payload newtype: serialised transparently as its content, with a tfhe
/// [`Named`] name so that `safe_serialization` refuses a payload of another kind.
macro_rules! payload {
    ($(#[$doc:meta])* $name:ident($($inner:tt)+) = $tfhe_name:literal) => {
        $(#[$doc])*
        #[derive(Clone, serde::Serialize, serde::Deserialize, tfhe_versionable::Versionize)]
        #[serde(transparent)]
        #[versionize(transparent)]
        pub struct $name(pub(crate) $($inner)+);

        impl tfhe::named::Named for $name {
            const NAME: &'static str = $tfhe_name;
        }
    };
}
pub(crate) use payload;
