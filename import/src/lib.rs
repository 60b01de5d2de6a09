//! Bring your own model: a CNN trained elsewhere, as `torch.onnx.export` writes it, into a
//! hecnn model file that training (`--init`), compilation and encryption take unchanged.
//!
//! The ONNX file is decoded with `onnx-ir`'s protobuf types (the graph as written, node
//! names and all, so that every refusal names its node). The walk ([`convert`]) maps
//! layers one to one (Conv, BatchNormalization, AveragePool, Gemm/MatMul, Flatten, ...),
//! reads runs of elementwise arithmetic as one activation (a polynomial, square, swish,
//! [`elementwise`]), and takes an affine map before the first layer as the input's
//! normalisation. Anything else is refused with its node's name, its operator and what
//! hecnn supports; nothing is written then. Pooling and batch norms after an activation,
//! which a circuit stage cannot hold, are folded into the next conv or dense layer
//! ([`fold`]).

pub mod convert;
pub mod elementwise;
pub mod error;
pub mod fold;
pub mod onnx;

use std::path::Path;

use hecnn_model::io::read_limited;
use hecnn_model::model::{InputSpec, MODEL_FORMAT, MODEL_VERSION, ModelFile, Shape};

pub use error::ImportError;

/// Largest ONNX file read (the networks hecnn encrypts are a few megabytes at most).
pub const MAX_ONNX_BYTES: u64 = 256 << 20;

/// How the network's input is normalised outside the graph, by the data loader:
/// `(pixel / 255 - mean) / std` (torchvision's `ToTensor` then `Normalize(mean, std)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    /// Subtracted from `pixel / 255`.
    pub mean: f64,
    /// Divides the difference.
    pub std: f64,
}

impl Default for Normalisation {
    /// `ToTensor` alone: `pixel / 255`.
    fn default() -> Self {
        Self {
            mean: 0.0,
            std: 1.0,
        }
    }
}

/// What the graph does not say.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// Model name in the file.
    pub name: String,
    /// Data set the model classifies (`mnist`, `fashion-mnist`).
    pub dataset: String,
    /// Class names, by output index.
    pub class_names: Vec<String>,
    /// The input's shape, when the graph's is symbolic (or to check it).
    pub input_shape: Option<Shape>,
    /// The data loader's normalisation (composed with any the graph applies itself).
    pub normalisation: Normalisation,
    /// Half-width of the interval a swish activation is fitted on.
    pub swish_range: f64,
}

/// An imported model and what the import recognised or left out.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The model file.
    pub model: ModelFile,
    /// Lines for the user: input, normalisation, activations recognised, nodes left out.
    pub notes: Vec<String>,
}

/// Imports the ONNX file at `path`.
pub fn import_file(path: &Path, options: &ImportOptions) -> Result<Imported, ImportError> {
    let bytes = read_limited(path, MAX_ONNX_BYTES)?;
    import_bytes(&bytes, &path.display().to_string(), options)
}

/// Imports an ONNX file's bytes; `origin` names it in errors.
pub fn import_bytes(
    bytes: &[u8],
    origin: &str,
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
    let graph = onnx::Graph::decode(bytes, origin)?;
    let shape = input_shape(&graph, options, origin)?;
    let converted = convert::convert(&graph, shape, options.swish_range, origin)?;
    let mut notes = vec![format!("input {shape}")];
    // The graph sees `u = (pixel/255 - m) / s` and computes `a u + b` first, that is
    // `(pixel/255 - m') / s'` with `s' = s / a` and `m' = m - b s / a`.
    let Normalisation { mean, std } = options.normalisation;
    let (a, b) = converted.input_affine.unwrap_or((1.0, 0.0));
    if a <= 0.0 {
        return Err(ImportError::Graph {
            origin: origin.to_string(),
            reason: format!("the graph scales its input by {a}; hecnn needs a positive scale"),
        });
    }
    let input = InputSpec {
        shape,
        mean: mean - b * std / a,
        std: std / a,
    };
    notes.push(format!(
        "normalisation (pixel/255 - {:.6}) / {:.6}",
        input.mean, input.std
    ));
    notes.extend(converted.notes);
    let layers =
        fold::fold_after_activations(converted.layers, shape, &mut notes).map_err(|reason| {
            ImportError::Graph {
                origin: origin.to_string(),
                reason,
            }
        })?;
    let model = ModelFile {
        format: MODEL_FORMAT.into(),
        version: MODEL_VERSION,
        name: options.name.clone(),
        dataset: options.dataset.clone(),
        class_names: options.class_names.clone(),
        input,
        layers,
        training: None,
    };
    model.validate(origin)?;
    Ok(Imported { model, notes })
}

/// The input's `channels x height x width`: the option, or the graph's `[batch, c, h, w]`
/// (or `[batch, features]`), which the option must agree with when both are known.
fn input_shape(
    graph: &onnx::Graph,
    options: &ImportOptions,
    origin: &str,
) -> Result<Shape, ImportError> {
    let dims = &graph.input_dims;
    let from_graph = match dims[..] {
        [_, Some(channels), Some(height), Some(width)] => Some(Shape {
            channels,
            height,
            width,
        }),
        [_, Some(features)] => Some(Shape::vector(features)),
        _ => None,
    };
    let error = |reason: String| ImportError::Graph {
        origin: origin.to_string(),
        reason,
    };
    match (from_graph, options.input_shape) {
        (Some(graph), Some(given)) if graph != given => Err(error(format!(
            "the graph's input is {graph}, not the {given} given"
        ))),
        (Some(shape), _) | (None, Some(shape)) => Ok(shape),
        (None, None) => Err(error(format!(
            "the graph's input {:?} has dimensions {dims:?}, not [batch, channels, height, width]: give --input-shape",
            graph.input
        ))),
    }
}
