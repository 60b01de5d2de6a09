//! Why an ONNX file cannot become a model file.

use hecnn_model::io::FileError;
use hecnn_model::model::ModelError;

/// The operators [`crate::import_bytes`] understands, for error messages.
pub const SUPPORTED_OPS: &str = "Conv (groups = 1, no dilation), BatchNormalization, \
AveragePool and GlobalAveragePool (no padding), Relu, polynomial and swish activations \
written with Mul, Add, Sub, Div, Pow and Sigmoid, Gemm, MatMul (+ Add), Flatten, Reshape to \
a vector, Identity, Dropout, Constant, and a last Softmax or LogSoftmax";

/// An ONNX file could not be imported; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Reading the file failed (missing, too large, unreadable).
    #[error(transparent)]
    File(#[from] FileError),
    /// The bytes are not an ONNX model.
    #[error("{origin}: not an ONNX model ({reason})")]
    NotOnnx {
        /// The file.
        origin: String,
        /// What the protobuf decoder or the structure check said.
        reason: String,
    },
    /// A node hecnn cannot import.
    #[error("{origin}: node {node:?} ({op}): {reason}")]
    Node {
        /// The file.
        origin: String,
        /// The node's name in the graph.
        node: String,
        /// Its operator.
        op: String,
        /// What is unsupported, and what would be.
        reason: String,
    },
    /// Something about the graph as a whole (inputs, outputs, opset).
    #[error("{origin}: {reason}")]
    Graph {
        /// The file.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The layers read do not make a valid model (shapes that do not chain, say).
    #[error(transparent)]
    Model(#[from] ModelError),
}
