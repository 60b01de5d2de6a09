//! The ONNX side: decoding a model with `onnx-ir`'s protobuf types (the graph as the
//! exporter wrote it, names and all), constant tensors and node attributes.

use std::collections::HashMap;

use onnx_ir::{AttributeProto, Message, ModelProto, NodeProto, TensorProto};

use crate::error::ImportError;

/// Oldest default-domain opset accepted (`torch.onnx.export` writes 17 or later today;
/// older opsets carry some inputs as attributes, which this importer does not read).
pub const MIN_OPSET: i64 = 13;

/// ONNX tensor element types (`TensorProto.DataType`) this importer reads.
const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;
const DOUBLE: i32 = 11;

/// A constant tensor: an initializer or a `Constant` node's value, as `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions (empty for a scalar).
    pub dims: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f64>,
}

impl Tensor {
    /// The single value of a tensor of one element.
    pub fn scalar(&self) -> Option<f64> {
        (self.values.len() == 1).then(|| self.values[0])
    }

    /// Reads an ONNX tensor stored in the file (external data is refused).
    fn read(tensor: &TensorProto) -> Result<Self, String> {
        if !tensor.external_data.is_empty() {
            return Err(format!(
                "tensor {:?} is stored outside the file; export with the weights inside it",
                tensor.name
            ));
        }
        let dims = tensor
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} is negative")))
            .collect::<Result<Vec<_>, _>>()?;
        let raw = &tensor.raw_data;
        let values: Vec<f64> = match tensor.data_type {
            FLOAT if !raw.is_empty() => raw
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            FLOAT => tensor.float_data.iter().map(|&v| f64::from(v)).collect(),
            DOUBLE if !raw.is_empty() => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            DOUBLE => tensor.double_data.clone(),
            INT64 if !raw.is_empty() => raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f64)
                .collect(),
            INT64 => tensor.int64_data.iter().map(|&v| v as f64).collect(),
            INT32 if !raw.is_empty() => raw
                .chunks_exact(4)
                .map(|b| f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            INT32 => tensor.int32_data.iter().map(|&v| f64::from(v)).collect(),
            other => {
                return Err(format!(
                    "tensor {:?} has element type {other}; hecnn reads float, double, int32 and int64",
                    tensor.name
                ));
            }
        };
        let expected: usize = dims.iter().product();
        if values.len() != expected {
            return Err(format!(
                "tensor {:?} has {} values for dimensions {dims:?}",
                tensor.name,
                values.len()
            ));
        }
        Ok(Self { dims, values })
    }
}

/// A decoded model: its graph's nodes in order, its constants, its input and output.
pub struct Graph {
    /// The nodes, in the file's order (topological, as ONNX requires).
    pub nodes: Vec<NodeProto>,
    /// Initializers by name.
    pub constants: HashMap<String, Tensor>,
    /// The one graph input that is not an initializer.
    pub input: String,
    /// Its dimensions; `None` for a symbolic one (the batch).
    pub input_dims: Vec<Option<usize>>,
    /// The one graph output.
    pub output: String,
}

impl Graph {
    /// Decodes an ONNX file's bytes.
    pub fn decode(bytes: &[u8], origin: &str) -> Result<Self, ImportError> {
        let not_onnx = |reason: String| ImportError::NotOnnx {
            origin: origin.to_string(),
            reason,
        };
        let graph_error = |reason: String| ImportError::Graph {
            origin: origin.to_string(),
            reason,
        };
        let model = ModelProto::parse_from_bytes(bytes).map_err(|e| not_onnx(e.to_string()))?;
        let Some(graph) = model.graph.as_ref() else {
            return Err(not_onnx("it has no graph".into()));
        };
        if graph.node.is_empty() {
            return Err(not_onnx("its graph has no nodes".into()));
        }
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .ok_or_else(|| not_onnx("it imports no default-domain opset".into()))?;
        if opset < MIN_OPSET {
            return Err(graph_error(format!(
                "opset {opset} is older than {MIN_OPSET}; export again with opset_version={MIN_OPSET} or later"
            )));
        }
        let constants = graph
            .initializer
            .iter()
            .map(|t| Ok((t.name.clone(), Tensor::read(t).map_err(&graph_error)?)))
            .collect::<Result<HashMap<_, _>, ImportError>>()?;
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !constants.contains_key(&i.name))
            .collect();
        let [input] = inputs[..] else {
            return Err(graph_error(format!(
                "the graph has {} inputs; hecnn imports networks of one image input",
                inputs.len()
            )));
        };
        let [output] = &graph.output[..] else {
            return Err(graph_error(format!(
                "the graph has {} outputs; hecnn imports networks of one output (the logits)",
                graph.output.len()
            )));
        };
        let input_dims = input
            .type_
            .tensor_type()
            .shape
            .dim
            .iter()
            .map(|d| {
                d.has_dim_value()
                    .then(|| usize::try_from(d.dim_value()).ok())
                    .flatten()
            })
            .collect();
        Ok(Self {
            nodes: graph.node.clone(),
            constants,
            input: input.name.clone(),
            input_dims,
            output: output.name.clone(),
        })
    }
}

/// A node's attributes, with the defaults of the ONNX operator specifications.
pub struct Attributes<'n>(&'n NodeProto);

impl<'n> Attributes<'n> {
    /// The attributes of `node`.
    pub fn of(node: &'n NodeProto) -> Self {
        Self(node)
    }

    fn get(&self, name: &str) -> Option<&'n AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }

    /// An integer attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }

    /// A float attribute, or `default`.
    pub fn float(&self, name: &str, default: f64) -> f64 {
        self.get(name).map_or(default, |a| f64::from(a.f))
    }

    /// An integer list attribute, if present.
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }

    /// A string attribute, if present.
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    /// A `Constant` node's value, whichever attribute holds it.
    pub fn constant(&self) -> Result<Tensor, String> {
        if let Some(tensor) = self.get("value").and_then(|a| a.t.as_ref()) {
            return Tensor::read(tensor);
        }
        let scalar = |value: f64| Tensor {
            dims: vec![],
            values: vec![value],
        };
        let vector = |values: Vec<f64>| Tensor {
            dims: vec![values.len()],
            values,
        };
        if let Some(a) = self.get("value_float") {
            Ok(scalar(f64::from(a.f)))
        } else if let Some(a) = self.get("value_int") {
            Ok(scalar(a.i as f64))
        } else if let Some(a) = self.get("value_floats") {
            Ok(vector(a.floats.iter().map(|&v| f64::from(v)).collect()))
        } else if let Some(a) = self.get("value_ints") {
            Ok(vector(a.ints.iter().map(|&v| v as f64).collect()))
        } else {
            Err("a Constant without a numeric value".into())
        }
    }
}
