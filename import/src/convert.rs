//! The graph walk: nodes in order, each either a layer of the model file, part of an
//! activation written as arithmetic, or a no-op; anything else is refused by name.

use std::collections::HashMap;

use hecnn_model::model::{Layer, Shape};
use onnx_ir::NodeProto;

use crate::elementwise::Elementwise;
use crate::error::{ImportError, SUPPORTED_OPS};
use crate::onnx::{Attributes, Graph, Tensor};

/// What a tensor of the graph holds.
#[derive(Debug, Clone)]
enum Value {
    /// A constant (an initializer, a `Constant` node, or arithmetic on them).
    Constant(Tensor),
    /// `function` of the feature map after the first `layers` layers.
    Map {
        layers: usize,
        function: Elementwise,
    },
    /// A final softmax of a map: only the graph's output may be one.
    Softmax {
        node: String,
        layers: usize,
        function: Elementwise,
    },
}

/// What the walk read.
pub struct Converted {
    /// The layers, input to output.
    pub layers: Vec<Layer>,
    /// The affine map `a x + b` the graph applies to its input before the first layer.
    pub input_affine: Option<(f64, f64)>,
    /// What was recognised or left out, for the user.
    pub notes: Vec<String>,
}

/// Layers read so far and the state of the walk.
struct Converter<'a> {
    origin: &'a str,
    swish_range: f64,
    values: HashMap<String, Value>,
    layers: Vec<Layer>,
    shape: Shape,
    input_affine: Option<(f64, f64)>,
    notes: Vec<String>,
}

/// Walks `graph`, whose input has shape `shape`, into layers; swish is fitted on
/// `[-swish_range, swish_range]`.
pub fn convert(
    graph: &Graph,
    shape: Shape,
    swish_range: f64,
    origin: &str,
) -> Result<Converted, ImportError> {
    let mut values: HashMap<String, Value> = graph
        .constants
        .iter()
        .map(|(name, t)| (name.clone(), Value::Constant(t.clone())))
        .collect();
    values.insert(
        graph.input.clone(),
        Value::Map {
            layers: 0,
            function: Elementwise::identity(),
        },
    );
    let mut converter = Converter {
        origin,
        swish_range,
        values,
        layers: Vec::new(),
        shape,
        input_affine: None,
        notes: Vec::new(),
    };
    for node in &graph.nodes {
        converter.node(node)?;
    }
    let output = converter.values.get(&graph.output).cloned();
    let (layers, function) = match output {
        Some(Value::Map { layers, function }) => (layers, function),
        Some(Value::Softmax {
            node,
            layers,
            function,
        }) => {
            converter.notes.push(format!(
                "{node:?} (the last softmax) is left out: the model's outputs are the logits before it, of the same class"
            ));
            (layers, function)
        }
        _ => {
            return Err(ImportError::Graph {
                origin: origin.to_string(),
                reason: format!(
                    "the output {:?} is not computed from the input",
                    graph.output
                ),
            });
        }
    };
    converter.apply("the graph's output", layers, &function)?;
    Ok(Converted {
        layers: converter.layers,
        input_affine: converter.input_affine,
        notes: converter.notes,
    })
}

impl Converter<'_> {
    fn node_error(&self, node: &NodeProto, reason: impl Into<String>) -> ImportError {
        ImportError::Node {
            origin: self.origin.to_string(),
            node: node.name.clone(),
            op: node.op_type.clone(),
            reason: reason.into(),
        }
    }

    /// Input `index` of `node`, if it names a value.
    fn input(&self, node: &NodeProto, index: usize) -> Result<Option<&Value>, ImportError> {
        match node.input.get(index).filter(|name| !name.is_empty()) {
            None => Ok(None),
            Some(name) => self.values.get(name).map(Some).ok_or_else(|| {
                self.node_error(node, format!("reads {name:?}, which nothing computes"))
            }),
        }
    }

    /// Input `index` of `node`, which must be a constant (weights, shapes, exponents).
    fn constant(&self, node: &NodeProto, index: usize, what: &str) -> Result<Tensor, ImportError> {
        match self.input(node, index)? {
            Some(Value::Constant(t)) => Ok(t.clone()),
            Some(_) => Err(self.node_error(
                node,
                format!("its {what} is computed from the input; hecnn needs it constant"),
            )),
            None => Err(self.node_error(node, format!("it has no {what}"))),
        }
    }

    /// Makes input `index` of `node` the current feature map, applying the activation it
    /// carries as a layer first: what a layer node does before its own layer.
    fn take_map(&mut self, node: &NodeProto, index: usize) -> Result<(), ImportError> {
        match self.input(node, index)?.cloned() {
            Some(Value::Map { layers, function }) => {
                self.apply(&format!("node {:?}", node.name), layers, &function)
            }
            Some(Value::Softmax { node: softmax, .. }) => Err(self.node_error(
                node,
                format!("reads the softmax {softmax:?}; a softmax can only be the last node"),
            )),
            _ => Err(self.node_error(node, "does not read the feature map")),
        }
    }

    /// Applies `function` to the feature map after `layers` layers: nothing for `x`, the
    /// input's normalisation for an affine map before any layer, an activation layer
    /// otherwise. `reader` names what reads it, for errors.
    fn apply(
        &mut self,
        reader: &str,
        layers: usize,
        function: &Elementwise,
    ) -> Result<(), ImportError> {
        if layers != self.layers.len() {
            return Err(ImportError::Graph {
                origin: self.origin.to_string(),
                reason: format!(
                    "{reader} reads the feature map after layer {layers}, not the last one ({}): skip connections are not supported",
                    self.layers.len()
                ),
            });
        }
        if function.is_identity() {
            return Ok(());
        }
        if let (0, Some(affine)) = (layers, function.affine()) {
            self.input_affine = Some(affine);
            self.notes.push(format!(
                "input normalisation in the graph: {:.6} x + {:.6}",
                affine.0, affine.1
            ));
            return Ok(());
        }
        let (activation, how) =
            function
                .activation(self.swish_range)
                .map_err(|reason| ImportError::Graph {
                    origin: self.origin.to_string(),
                    reason: format!(
                        "{reader} reads an elementwise function hecnn cannot name: {reason}"
                    ),
                })?;
        self.notes
            .push(format!("activation {}: {how}", self.layers.len()));
        self.push(Layer::Activation {
            function: activation,
            output_quant: None,
            input_grid: None,
        })
    }

    /// Adds a layer after checking that it fits the feature map.
    fn push(&mut self, layer: Layer) -> Result<(), ImportError> {
        let index = self.layers.len();
        self.shape = layer
            .output_shape(self.shape)
            .map_err(|reason| ImportError::Graph {
                origin: self.origin.to_string(),
                reason: format!("layer {index} ({}): {reason}", layer.kind()),
            })?;
        self.layers.push(layer);
        Ok(())
    }

    /// Output 0 of `node` is the feature map after the last layer.
    fn output_map(&mut self, node: &NodeProto) {
        self.set_output(
            node,
            Value::Map {
                layers: self.layers.len(),
                function: Elementwise::identity(),
            },
        );
    }

    fn set_output(&mut self, node: &NodeProto, value: Value) {
        if let Some(name) = node.output.first() {
            self.values.insert(name.clone(), value);
        }
    }

    fn node(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(self.node_error(
                node,
                format!(
                    "operator of domain {:?}; hecnn imports {SUPPORTED_OPS}",
                    node.domain
                ),
            ));
        }
        match node.op_type.as_str() {
            "Constant" => {
                let value = Attributes::of(node)
                    .constant()
                    .map_err(|reason| self.node_error(node, reason))?;
                self.set_output(node, Value::Constant(value));
            }
            "Identity" | "Dropout" => {
                let value = self
                    .input(node, 0)?
                    .cloned()
                    .ok_or_else(|| self.node_error(node, "it has no input"))?;
                self.set_output(node, value);
            }
            "Conv" => self.conv(node)?,
            "BatchNormalization" => self.batch_norm(node)?,
            "AveragePool" => self.average_pool(node)?,
            "GlobalAveragePool" => {
                self.take_map(node, 0)?;
                let kernel = [self.shape.height, self.shape.width];
                self.push(Layer::AvgPool {
                    kernel,
                    stride: kernel,
                })?;
                self.output_map(node);
            }
            "Relu" => {
                self.take_map(node, 0)?;
                self.notes
                    .push(format!("layer {}: relu", self.layers.len()));
                self.push(Layer::Activation {
                    function: hecnn_model::activation::Activation::Relu,
                    output_quant: None,
                    input_grid: None,
                })?;
                self.output_map(node);
            }
            "Flatten" => {
                if Attributes::of(node).int("axis", 1) != 1 {
                    return Err(self.node_error(node, "flattens from an axis other than 1"));
                }
                self.take_map(node, 0)?;
                self.push(Layer::Flatten)?;
                self.output_map(node);
            }
            "Reshape" => self.reshape(node)?,
            "Gemm" => self.gemm(node)?,
            "MatMul" => self.matmul(node)?,
            "Add" | "Sub" | "Mul" | "Div" | "Pow" => self.arithmetic(node)?,
            "Sigmoid" => {
                let value = match self.input(node, 0)?.cloned() {
                    Some(Value::Map { layers, function }) => function
                        .sigmoid()
                        .map(|function| Value::Map { layers, function }),
                    _ => None,
                };
                let value = value.ok_or_else(|| {
                    self.node_error(
                        node,
                        "hecnn knows a sigmoid only as part of x sigmoid(x) (swish)",
                    )
                })?;
                self.set_output(node, value);
            }
            "Softmax" | "LogSoftmax" => match self.input(node, 0)?.cloned() {
                Some(Value::Map { layers, function }) => self.set_output(
                    node,
                    Value::Softmax {
                        node: node.name.clone(),
                        layers,
                        function,
                    },
                ),
                _ => return Err(self.node_error(node, "does not read the feature map")),
            },
            "MaxPool" | "GlobalMaxPool" => {
                return Err(self.node_error(
                    node,
                    "max pooling is not supported: each max is a comparison, that is extra table reads (PBS) per output; replace it by average pooling (nn.AvgPool2d), which is free in the circuit, and fine-tune",
                ));
            }
            "Shape" | "Gather" | "Unsqueeze" | "Concat" => {
                return Err(self.node_error(
                    node,
                    format!("not supported (shape arithmetic, as `x.view(x.size(0), -1)` exports: write `torch.flatten(x, 1)` or nn.Flatten instead); hecnn imports {SUPPORTED_OPS}"),
                ));
            }
            _ => {
                return Err(self.node_error(
                    node,
                    format!("operator not supported; hecnn imports {SUPPORTED_OPS}"),
                ));
            }
        }
        Ok(())
    }

    /// `[height, width]` of a 2-D attribute list, or `default`.
    fn pair(
        &self,
        node: &NodeProto,
        name: &str,
        default: usize,
    ) -> Result<[usize; 2], ImportError> {
        match Attributes::of(node).ints(name) {
            None => Ok([default; 2]),
            Some(v) => match v[..] {
                [a, b] if a >= 0 && b >= 0 => Ok([a as usize, b as usize]),
                _ => Err(self.node_error(
                    node,
                    format!("{name} {v:?} is not two sizes of a 2-D window"),
                )),
            },
        }
    }

    /// Symmetric zero padding `[rows, columns]` from ONNX's `pads` `[top, left, bottom,
    /// right]`; `auto_pad` other than `NOTSET` or `VALID` is refused.
    fn padding(&self, node: &NodeProto) -> Result<[usize; 2], ImportError> {
        let attributes = Attributes::of(node);
        match attributes.string("auto_pad").as_deref() {
            None | Some("NOTSET") => {}
            Some("VALID") => return Ok([0, 0]),
            Some(other) => {
                return Err(self.node_error(
                    node,
                    format!("auto_pad {other} is not supported; export explicit padding"),
                ));
            }
        }
        match attributes.ints("pads").as_deref() {
            None => Ok([0, 0]),
            Some(&[top, left, bottom, right])
                if top == bottom && left == right && top >= 0 && left >= 0 =>
            {
                Ok([top as usize, left as usize])
            }
            Some(pads) => Err(self.node_error(
                node,
                format!("pads {pads:?}: hecnn pads symmetrically (top = bottom, left = right)"),
            )),
        }
    }

    fn no_dilation(&self, node: &NodeProto) -> Result<(), ImportError> {
        match Attributes::of(node).ints("dilations") {
            Some(d) if d.iter().any(|&d| d != 1) => {
                Err(self.node_error(node, format!("dilations {d:?} are not supported (only 1)")))
            }
            _ => Ok(()),
        }
    }

    fn conv(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        let attributes = Attributes::of(node);
        let groups = attributes.int("group", 1);
        if groups != 1 {
            return Err(self.node_error(
                node,
                format!("groups = {groups}: hecnn's convolutions read every input channel (groups = 1); export the network with ordinary convolutions"),
            ));
        }
        self.no_dilation(node)?;
        let weight = self.constant(node, 1, "weight")?;
        let &[out_channels, in_channels, kh, kw] = &weight.dims[..] else {
            return Err(self.node_error(
                node,
                format!(
                    "weight of dimensions {:?}: hecnn imports 2-D convolutions",
                    weight.dims
                ),
            ));
        };
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => self.constant(node, 2, "bias")?.values,
            None => vec![0.0; out_channels],
        };
        let stride = self.pair(node, "strides", 1)?;
        let padding = self.padding(node)?;
        self.take_map(node, 0)?;
        self.push(Layer::Conv2d {
            in_channels,
            out_channels,
            kernel: [kh, kw],
            stride,
            padding,
            weight: to_f32(&weight.values),
            bias: to_f32(&bias),
            weight_bits: None,
        })?;
        self.output_map(node);
        Ok(())
    }

    fn batch_norm(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        let attributes = Attributes::of(node);
        if attributes.int("training_mode", 0) != 0
            || node.output.iter().skip(1).any(|o| !o.is_empty())
        {
            return Err(self.node_error(
                node,
                "a batch norm in training mode; export the model in eval mode (model.eval())",
            ));
        }
        let [gamma, beta, mean, var] = [
            self.constant(node, 1, "scale")?,
            self.constant(node, 2, "bias")?,
            self.constant(node, 3, "running mean")?,
            self.constant(node, 4, "running variance")?,
        ];
        self.take_map(node, 0)?;
        self.push(Layer::BatchNorm {
            gamma: to_f32(&gamma.values),
            beta: to_f32(&beta.values),
            mean: to_f32(&mean.values),
            var: to_f32(&var.values),
            epsilon: attributes.float("epsilon", 1e-5),
        })?;
        self.output_map(node);
        Ok(())
    }

    fn average_pool(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        let attributes = Attributes::of(node);
        if self.padding(node)? != [0, 0] {
            return Err(self.node_error(
                node,
                "padded average pooling is not supported (padding = 0)",
            ));
        }
        if attributes.int("ceil_mode", 0) != 0 {
            return Err(self.node_error(node, "ceil_mode = 1 is not supported (ceil_mode=False)"));
        }
        self.no_dilation(node)?;
        let kernel = match attributes.ints("kernel_shape") {
            Some(_) => self.pair(node, "kernel_shape", 1)?,
            None => return Err(self.node_error(node, "it has no kernel_shape")),
        };
        let stride = self.pair(node, "strides", 1)?;
        self.take_map(node, 0)?;
        self.push(Layer::AvgPool { kernel, stride })?;
        self.output_map(node);
        Ok(())
    }

    /// A reshape to `[batch, features]` is a flatten; other reshapes are refused.
    fn reshape(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        let target = self.constant(node, 1, "shape")?.values;
        let features = self.shape.len() as f64;
        let flattens = matches!(target[..], [batch, f] if (batch == -1.0 || batch == 0.0 || batch == 1.0) && (f == -1.0 || f == features));
        if !flattens {
            return Err(self.node_error(
                node,
                format!("reshapes the {} feature map to {target:?}; hecnn only reshapes to [batch, features] (a flatten)", self.shape),
            ));
        }
        self.take_map(node, 0)?;
        self.push(Layer::Flatten)?;
        self.output_map(node);
        Ok(())
    }

    /// `alpha A B' + beta C` with `B' = B` or its transpose: a dense layer.
    fn gemm(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        let attributes = Attributes::of(node);
        if attributes.int("transA", 0) != 0 {
            return Err(self.node_error(node, "transA = 1 is not supported"));
        }
        let alpha = attributes.float("alpha", 1.0);
        let beta = attributes.float("beta", 1.0);
        let weight = self.constant(node, 1, "weight")?;
        let weight = self.dense_weight(node, &weight, attributes.int("transB", 0) != 0)?;
        let out = weight.len() / self.shape.len().max(1);
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            None => vec![0.0; out],
            Some(_) => {
                let c = self.constant(node, 2, "bias")?;
                match (c.scalar(), c.values.len()) {
                    (Some(v), _) => vec![beta * v; out],
                    (None, n) if n == out => c.values.iter().map(|v| beta * v).collect(),
                    _ => {
                        return Err(self.node_error(
                            node,
                            format!("bias of dimensions {:?} for {out} outputs", c.dims),
                        ));
                    }
                }
            }
        };
        let weight: Vec<f64> = weight.iter().map(|w| alpha * w).collect();
        self.dense(node, weight, bias)
    }

    /// `A B`, a dense layer without bias (an `Add` after it gives one).
    fn matmul(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        let weight = self.constant(node, 1, "weight")?;
        let weight = self.dense_weight(node, &weight, false)?;
        let out = weight.len() / self.shape.len().max(1);
        self.dense(node, weight, vec![0.0; out])
    }

    /// The `[out, in]` weights of a dense layer reading the current feature map, from an
    /// ONNX `[in, out]` matrix (`[out, in]` when `transposed`).
    fn dense_weight(
        &self,
        node: &NodeProto,
        weight: &Tensor,
        transposed: bool,
    ) -> Result<Vec<f64>, ImportError> {
        let features = self.shape.len();
        let &[rows, columns] = &weight.dims[..] else {
            return Err(self.node_error(
                node,
                format!("weight of dimensions {:?} is not a matrix", weight.dims),
            ));
        };
        let (inputs, outputs) = if transposed {
            (columns, rows)
        } else {
            (rows, columns)
        };
        if inputs != features {
            return Err(self.node_error(
                node,
                format!(
                    "reads {inputs} features but the feature map has {features} ({})",
                    self.shape
                ),
            ));
        }
        Ok(if transposed {
            weight.values.clone()
        } else {
            (0..outputs)
                .flat_map(|o| (0..inputs).map(move |i| weight.values[i * outputs + o]))
                .collect()
        })
    }

    fn dense(
        &mut self,
        node: &NodeProto,
        weight: Vec<f64>,
        bias: Vec<f64>,
    ) -> Result<(), ImportError> {
        self.take_map(node, 0)?;
        if self.shape.height != 1 || self.shape.width != 1 {
            self.notes.push(format!(
                "{:?} reads a {} feature map: flattened first",
                node.name, self.shape
            ));
            self.push(Layer::Flatten)?;
        }
        self.push(Layer::Dense {
            in_features: self.shape.len(),
            out_features: bias.len(),
            weight: to_f32(&weight),
            bias: to_f32(&bias),
            weight_bits: None,
        })?;
        self.output_map(node);
        Ok(())
    }

    /// `Add`, `Sub`, `Mul`, `Div`, `Pow` on constants and functions of the feature map.
    fn arithmetic(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        let (Some(a), Some(b)) = (self.input(node, 0)?.cloned(), self.input(node, 1)?.cloned())
        else {
            return Err(self.node_error(node, "it needs two inputs"));
        };
        let op = node.op_type.as_str();
        let unknown = || {
            self.node_error(
                node,
                "this arithmetic is not an activation hecnn knows (polynomials of one feature map, x sigmoid(x), and scalar constants)",
            )
        };
        let value = match (a, b) {
            (Value::Constant(a), Value::Constant(b)) => {
                Value::Constant(fold(op, &a, &b).ok_or_else(unknown)?)
            }
            (
                Value::Map {
                    layers,
                    function: f,
                },
                Value::Map {
                    layers: other,
                    function: g,
                },
            ) => {
                if layers != other {
                    return Err(self.node_error(node, "combines two different feature maps (a skip connection), which hecnn does not support"));
                }
                let function = match op {
                    "Add" => f.add(&g),
                    "Sub" => g.scale(-1.0).and_then(|g| f.add(&g)),
                    "Mul" => f.mul(&g),
                    _ => None,
                };
                Value::Map {
                    layers,
                    function: function.ok_or_else(unknown)?,
                }
            }
            (Value::Map { layers, function }, Value::Constant(c)) => {
                if let Some(v) = c.scalar() {
                    let function = match op {
                        "Add" => function.shift(v),
                        "Sub" => function.shift(-v),
                        "Mul" => function.scale(v),
                        "Div" if v != 0.0 => function.scale(1.0 / v),
                        "Pow" if v.fract() == 0.0 && (0.0..=8.0).contains(&v) => {
                            function.pow(v as u32)
                        }
                        _ => None,
                    };
                    Value::Map {
                        layers,
                        function: function.ok_or_else(unknown)?,
                    }
                } else if op == "Add" && function.is_identity() && layers == self.layers.len() {
                    self.add_bias(node, &c)?;
                    Value::Map { layers, function }
                } else {
                    return Err(self.node_error(node, format!("a constant of dimensions {:?}: hecnn applies scalar constants to the feature map (and a bias after MatMul)", c.dims)));
                }
            }
            (Value::Constant(c), Value::Map { layers, function }) => {
                let v = c.scalar().ok_or_else(unknown)?;
                let function = match op {
                    "Add" => function.shift(v),
                    "Sub" => function.scale(-1.0).and_then(|f| f.shift(v)),
                    "Mul" => function.scale(v),
                    _ => None,
                };
                Value::Map {
                    layers,
                    function: function.ok_or_else(unknown)?,
                }
            }
            _ => return Err(unknown()),
        };
        self.set_output(node, value);
        Ok(())
    }

    /// `x + c` right after a dense layer, with one value per output: its bias.
    fn add_bias(&mut self, node: &NodeProto, c: &Tensor) -> Result<(), ImportError> {
        match self.layers.last_mut() {
            Some(Layer::Dense { bias, .. }) if bias.len() == c.values.len() => {
                for (b, v) in bias.iter_mut().zip(&c.values) {
                    *b += *v as f32;
                }
                Ok(())
            }
            _ => Err(self.node_error(node, format!("adds a constant of dimensions {:?} that is not the bias of the dense layer before it", c.dims))),
        }
    }
}

/// Arithmetic on two constants, elementwise (equal sizes, or one a scalar).
fn fold(op: &str, a: &Tensor, b: &Tensor) -> Option<Tensor> {
    let f = |x: f64, y: f64| match op {
        "Add" => Some(x + y),
        "Sub" => Some(x - y),
        "Mul" => Some(x * y),
        "Div" => Some(x / y),
        "Pow" => Some(x.powf(y)),
        _ => None,
    };
    let (dims, values) = match (a.scalar(), b.scalar()) {
        (_, Some(y)) => (
            a.dims.clone(),
            a.values
                .iter()
                .map(|&x| f(x, y))
                .collect::<Option<Vec<_>>>()?,
        ),
        (Some(x), None) => (
            b.dims.clone(),
            b.values
                .iter()
                .map(|&y| f(x, y))
                .collect::<Option<Vec<_>>>()?,
        ),
        (None, None) if a.dims == b.dims => (
            a.dims.clone(),
            a.values
                .iter()
                .zip(&b.values)
                .map(|(&x, &y)| f(x, y))
                .collect::<Option<Vec<_>>>()?,
        ),
        _ => return None,
    };
    Some(Tensor { dims, values })
}

fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}
