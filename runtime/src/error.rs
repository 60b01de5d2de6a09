//! Why a runtime operation failed.

use hecnn_compile::circuit_file::Fingerprint;
use hecnn_compile::params::ParameterSetName;
use hecnn_model::io::FileError;

use crate::file_kind::{FORMAT_VERSION, FileKind};

/// A runtime file cannot be used, or an input does not fit the circuit.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Reading or writing failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Not a file of the expected kind.
    #[error("{path}: not a hecnn {kind} ({found})")]
    Foreign {
        /// The file.
        path: String,
        /// What was expected.
        kind: FileKind,
        /// What was found.
        found: String,
    },
    /// A file of another format version.
    #[error("{path}: {kind} format version {found}; this build reads version {FORMAT_VERSION}")]
    Version {
        /// The file.
        path: String,
        /// Its kind.
        kind: FileKind,
        /// Its version.
        found: u32,
    },
    /// Truncated, altered, or not decodable.
    #[error("{path}: corrupted {kind}: {reason}")]
    Corrupted {
        /// The file.
        path: String,
        /// Its kind.
        kind: FileKind,
        /// What is wrong.
        reason: String,
    },
    /// Made for another circuit.
    #[error(
        "{path}: this {kind} was made for another circuit (fingerprint {found:.16}..., the circuit given is {expected:.16}...)"
    )]
    OtherCircuit {
        /// The file.
        path: String,
        /// Its kind.
        kind: FileKind,
        /// Fingerprint it names.
        found: Fingerprint,
        /// Fingerprint of the circuit given.
        expected: Fingerprint,
    },
    /// Made for another parameter set.
    #[error("{path}: this {kind} is for parameter set {found}, the circuit uses {expected}")]
    OtherParameterSet {
        /// The file.
        path: String,
        /// Its kind.
        kind: FileKind,
        /// Set it names.
        found: String,
        /// Set of the circuit.
        expected: String,
    },
    /// The content decodes but does not have the shape the circuit and set require.
    #[error("{path}: {kind} does not fit the circuit: {reason}")]
    Mismatch {
        /// The file.
        path: String,
        /// Its kind.
        kind: FileKind,
        /// What differs.
        reason: Mismatch,
    },
    /// An input (image, batch) does not fit the circuit.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The table reads were sent elsewhere (a cluster's workers) and did not come back.
    #[error("table reads failed: {0}")]
    TableReads(Box<dyn std::error::Error + Send + Sync>),
}

/// How a decoded runtime file differs from what its circuit and parameter set require.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    /// A query or result without images.
    #[error("it holds no image")]
    NoImage,
    /// An image's ciphertexts of another number or size.
    #[error(
        "image {image} has {found} ciphertexts of size {found_size}, the circuit needs {expected} of size {expected_size}"
    )]
    Ciphertexts {
        /// The image, from 0.
        image: usize,
        /// Its ciphertexts.
        found: usize,
        /// Their LWE size.
        found_size: usize,
        /// Ciphertexts the circuit needs.
        expected: usize,
        /// Their LWE size under the circuit's set.
        expected_size: usize,
    },
    /// A client key of other parameters.
    #[error("its parameters are not those of {0}")]
    Parameters(ParameterSetName),
    /// An evaluation key of other dimensions.
    #[error("its dimensions are not those of {0}")]
    Dimensions(ParameterSetName),
}

/// Images that do not fit a circuit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// No image at all.
    #[error("no image to encrypt")]
    NoImage,
    /// An image of another size.
    #[error("an image of {pixels} pixels; the circuit {circuit} reads {shape} ({expected} pixels)")]
    Size {
        /// Pixels of the image.
        pixels: usize,
        /// The circuit's name.
        circuit: String,
        /// Its input shape.
        shape: hecnn_model::model::Shape,
        /// Pixels it reads.
        expected: usize,
    },
    /// A pixel above the circuit's largest input level.
    #[error("a pixel of {pixel}; the circuit {circuit} reads levels up to {max}")]
    Level {
        /// The pixel.
        pixel: u8,
        /// The circuit's name.
        circuit: String,
        /// Its largest level.
        max: u32,
    },
}
