//! The model file: a trained float network, the contract between `hecnn train` and the
//! compiler.
//!
//! JSON, versioned (`format` = [`MODEL_FORMAT`], `version` = [`MODEL_VERSION`]). It holds the
//! architecture, the float weights, the activation definitions (see
//! [`Activation`]), the input normalisation and, after quantisation-aware training, the
//! quantisation the network was trained with. Tensors are flat arrays in row-major order:
//! conv weights `[out_channels, in_channels, kernel_h, kernel_w]`, dense weights
//! `[out_features, in_features]`. The network's input is `(pixel / 255 - mean) / std` for
//! raw pixels `0..=255`, as `channels x height x width`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::activation::Activation;
use crate::grid::ReadGrid;
use crate::io::{FileError, read_limited, write_atomic};
use crate::quantize::{BitWidth, QuantRange};

/// The `format` field of every model file.
pub const MODEL_FORMAT: &str = "hecnn-model";
/// The version of the format this build writes and reads.
pub const MODEL_VERSION: u32 = 1;
/// Largest model file accepted.
pub const MAX_MODEL_BYTES: u64 = 256 << 20;

/// A `channels x height x width` feature map shape (a vector is `n x 1 x 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// Channels.
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl Shape {
    /// A flat vector of `n` values.
    pub fn vector(n: usize) -> Self {
        Self {
            channels: n,
            height: 1,
            width: 1,
        }
    }

    /// Number of values.
    pub fn len(self) -> usize {
        self.channels * self.height * self.width
    }

    /// The shape after a window of `kernel` sliding by `stride` over this map padded by
    /// `padding` (rows, columns), with `channels` output channels; `None` when the window
    /// does not fit.
    pub fn after_window(
        self,
        channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Option<Self> {
        Some(Self {
            channels,
            height: window_output(self.height, kernel[0], stride[0], padding[0])?,
            width: window_output(self.width, kernel[1], stride[1], padding[1])?,
        })
        .filter(|s| s.channels > 0)
    }

    /// Whether the shape holds no value.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// Output side of a sliding window: `(input + 2 padding - kernel) / stride + 1`, or `None`
/// when the window does not fit.
pub fn window_output(input: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = input + 2 * padding;
    (kernel > 0 && stride > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
}

/// Where a 2-D convolution with zero padding reads its input: shared by the float
/// reference and the integer circuit, so that both index alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvGeometry {
    /// Input shape.
    pub input: Shape,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Stride `[rows, columns]`.
    pub stride: [usize; 2],
    /// Zero padding on each side `[rows, columns]`.
    pub padding: [usize; 2],
}

impl ConvGeometry {
    /// Output shape, `None` when the kernel does not fit the input.
    pub fn output(&self) -> Option<Shape> {
        self.input
            .after_window(self.out_channels, self.kernel, self.stride, self.padding)
    }

    /// Number of weights, `[out, in, kh, kw]`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.input.channels * self.kernel[0] * self.kernel[1]
    }

    /// Calls `f(output, input, weight)` with the flat indices of every tap that reads the
    /// input (taps on the padding are skipped), outputs in order and, within an output,
    /// input channel, kernel row and kernel column in order. The geometry must fit.
    pub fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let out = self
            .output()
            .expect("for_each_tap is asked of fitting geometries");
        let Self {
            input,
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, pw],
            ..
        } = *self;
        for o in 0..out.channels {
            for oy in 0..out.height {
                for ox in 0..out.width {
                    let j = (o * out.height + oy) * out.width + ox;
                    for c in 0..input.channels {
                        for ky in 0..kh {
                            let Some(y) =
                                (oy * sh + ky).checked_sub(ph).filter(|&y| y < input.height)
                            else {
                                continue;
                            };
                            for kx in 0..kw {
                                let Some(x) =
                                    (ox * sw + kx).checked_sub(pw).filter(|&x| x < input.width)
                                else {
                                    continue;
                                };
                                f(
                                    j,
                                    (c * input.height + y) * input.width + x,
                                    ((o * input.channels + c) * kh + ky) * kw + kx,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How the network's input is made from raw pixels: `(pixel / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Shape of one input.
    pub shape: Shape,
    /// Mean subtracted from `pixel / 255`.
    pub mean: f64,
    /// Standard deviation `pixel / 255 - mean` is divided by.
    pub std: f64,
}

impl InputSpec {
    /// The network input of one raw pixel.
    pub fn normalise(&self, pixel: u8) -> f64 {
        (f64::from(pixel) / 255.0 - self.mean) / self.std
    }
}

/// Quantisation of an activation's outputs learnt in QAT: they become the next layer's
/// integer inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputQuant {
    /// Width of the levels.
    pub bits: BitWidth,
    /// Range mapped onto the levels (outputs outside are clamped).
    pub range: QuantRange,
}

/// One layer of a model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Layer {
    /// 2-D convolution with zero padding.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel `[height, width]`.
        kernel: [usize; 2],
        /// Stride `[rows, columns]`.
        stride: [usize; 2],
        /// Zero padding `[rows, columns]` on each side.
        padding: [usize; 2],
        /// `[out_channels, in_channels, kernel_h, kernel_w]`, row-major.
        weight: Vec<f32>,
        /// One per output channel.
        bias: Vec<f32>,
        /// Per-output-channel symmetric quantisation simulated in training, if any.
        weight_bits: Option<BitWidth>,
    },
    /// Batch normalisation with running statistics:
    /// `y = gamma (x - mean) / sqrt(var + epsilon) + beta`, per channel.
    BatchNorm {
        /// Scale per channel.
        gamma: Vec<f32>,
        /// Shift per channel.
        beta: Vec<f32>,
        /// Running mean per channel.
        mean: Vec<f32>,
        /// Running variance per channel.
        var: Vec<f32>,
        /// Added to the variance.
        epsilon: f64,
    },
    /// Average pooling, no padding.
    AvgPool {
        /// Window `[height, width]`.
        kernel: [usize; 2],
        /// Stride `[rows, columns]`.
        stride: [usize; 2],
    },
    /// An activation applied to every value.
    Activation {
        /// The function.
        function: Activation,
        /// Quantisation of its outputs simulated in training, if any.
        output_quant: Option<OutputQuant>,
        /// The table grid its inputs were read on in circuit-aware training, if any: the
        /// weights of the layer before are then quantised at the scales it implies
        /// ([`ModelFile::grid_weight_scales`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_grid: Option<ReadGrid>,
    },
    /// Feature map to vector, channel-major (as `[c, h, w]` row-major).
    Flatten,
    /// Fully connected layer.
    Dense {
        /// Inputs.
        in_features: usize,
        /// Outputs.
        out_features: usize,
        /// `[out_features, in_features]`, row-major.
        weight: Vec<f32>,
        /// One per output.
        bias: Vec<f32>,
        /// Per-output symmetric quantisation simulated in training, if any.
        weight_bits: Option<BitWidth>,
    },
}

impl Layer {
    /// Short name of the layer kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conv2d { .. } => "conv2d",
            Self::BatchNorm { .. } => "batch-norm",
            Self::AvgPool { .. } => "avg-pool",
            Self::Activation { .. } => "activation",
            Self::Flatten => "flatten",
            Self::Dense { .. } => "dense",
        }
    }

    /// A batch normalisation as the per-channel affine map it computes at inference,
    /// `y = k_c x + h_c` with `k_c = gamma_c / sqrt(var_c + epsilon)` and
    /// `h_c = beta_c - k_c mean_c`: `(k, h)`. `None` for other layers.
    pub fn batch_norm_affine(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        let Self::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            epsilon,
        } = self
        else {
            return None;
        };
        let scale: Vec<f64> = gamma
            .iter()
            .zip(var)
            .map(|(g, v)| f64::from(*g) / (f64::from(*v) + epsilon).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(mean)
            .zip(&scale)
            .map(|((b, m), k)| f64::from(*b) - k * f64::from(*m))
            .collect();
        Some((scale, shift))
    }

    /// The shape this layer outputs for `input`, after checking that its parameters fit.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, LayerError> {
        let expect_len = |what: &'static str, found: usize, expected: usize| {
            if found == expected {
                Ok(())
            } else {
                Err(LayerError::Length {
                    what,
                    found,
                    expected,
                })
            }
        };
        match self {
            Self::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                weight,
                bias,
                ..
            } => {
                if *in_channels != input.channels {
                    return Err(LayerError::Channels {
                        expected: *in_channels,
                        found: input.channels,
                    });
                }
                expect_len(
                    "weight",
                    weight.len(),
                    out_channels * in_channels * kernel[0] * kernel[1],
                )?;
                expect_len("bias", bias.len(), *out_channels)?;
                input
                    .after_window(*out_channels, *kernel, *stride, *padding)
                    .ok_or(LayerError::Window {
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                        input,
                    })
            }
            Self::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                epsilon,
            } => {
                for (what, values) in [
                    ("gamma", gamma),
                    ("beta", beta),
                    ("mean", mean),
                    ("var", var),
                ] {
                    expect_len(what, values.len(), input.channels)?;
                }
                if var.iter().any(|v| !v.is_finite() || *v < 0.0)
                    || !epsilon.is_finite()
                    || *epsilon < 0.0
                {
                    return Err(LayerError::NegativeVariance);
                }
                Ok(input)
            }
            Self::AvgPool { kernel, stride } => input
                .after_window(input.channels, *kernel, *stride, [0, 0])
                .ok_or(LayerError::Window {
                    kernel: *kernel,
                    stride: *stride,
                    padding: [0, 0],
                    input,
                }),
            Self::Activation {
                function,
                output_quant,
                input_grid,
            } => {
                function.validate()?;
                if let Some(grid) = input_grid {
                    grid.validate(input.channels)?;
                }
                if let Some(q) = output_quant
                    && !(q.range.hi > q.range.lo
                        && q.range.lo.is_finite()
                        && q.range.hi.is_finite())
                {
                    return Err(LayerError::EmptyOutputRange(q.range));
                }
                Ok(input)
            }
            Self::Flatten => Ok(Shape::vector(input.len())),
            Self::Dense {
                in_features,
                out_features,
                weight,
                bias,
                ..
            } => {
                if (input.height, input.width) != (1, 1) {
                    return Err(LayerError::NotAVector(input));
                }
                if *in_features != input.channels {
                    return Err(LayerError::Features {
                        expected: *in_features,
                        found: input.channels,
                    });
                }
                expect_len("weight", weight.len(), in_features * out_features)?;
                expect_len("bias", bias.len(), *out_features)?;
                Ok(Shape::vector(*out_features))
            }
        }
    }
}

/// A layer whose parameters do not fit its input or each other.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayerError {
    /// A parameter array of the wrong length.
    #[error("{what} has {found} values, expected {expected}")]
    Length {
        /// The array (`weight`, `bias`, `gamma`, ...).
        what: &'static str,
        /// Its length.
        found: usize,
        /// The length the layer's sizes imply.
        expected: usize,
    },
    /// Input channels other than the convolution's.
    #[error("expects {expected} input channels, gets {found}")]
    Channels {
        /// What the layer reads.
        expected: usize,
        /// What it is given.
        found: usize,
    },
    /// Input features other than the dense layer's.
    #[error("expects {expected} inputs, gets {found}")]
    Features {
        /// What the layer reads.
        expected: usize,
        /// What it is given.
        found: usize,
    },
    /// A window that does not fit the input.
    #[error(
        "window {kernel:?} with stride {stride:?} and padding {padding:?} does not fit a {input} input"
    )]
    Window {
        /// Window rows and columns.
        kernel: [usize; 2],
        /// Stride rows and columns.
        stride: [usize; 2],
        /// Padding rows and columns.
        padding: [usize; 2],
        /// The input.
        input: Shape,
    },
    /// A batch norm with a negative or non-finite variance or epsilon.
    #[error("variance and epsilon must not be negative")]
    NegativeVariance,
    /// An activation output range that is empty or not finite.
    #[error("empty output range {0:?}")]
    EmptyOutputRange(QuantRange),
    /// A dense layer after a layer with rows and columns.
    #[error("needs a vector input, gets {0}: add a flatten layer")]
    NotAVector(Shape),
    /// An unusable activation function.
    #[error(transparent)]
    Activation(#[from] crate::activation::InvalidActivation),
    /// An unusable read grid.
    #[error(transparent)]
    Grid(#[from] crate::grid::GridError),
}

/// How a model was trained, for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSummary {
    /// Epochs run.
    pub epochs: usize,
    /// Random seed.
    pub seed: u64,
    /// Accuracy on the validation split after the last epoch.
    pub validation_accuracy: f64,
    /// Wall-clock minutes spent training.
    pub minutes: f64,
}

/// A model file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// Always [`MODEL_VERSION`] for files this build writes.
    pub version: u32,
    /// Architecture name (`paper-cnn`, `compact`, ... or the architecture file's name).
    pub name: String,
    /// Data set trained on.
    pub dataset: String,
    /// Name of each class, by output index.
    pub class_names: Vec<String>,
    /// Input shape and normalisation.
    pub input: InputSpec,
    /// The layers, input to output.
    pub layers: Vec<Layer>,
    /// How it was trained.
    pub training: Option<TrainingSummary>,
}

/// A model file cannot be read or is not a valid model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading or writing failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// Not JSON of the model format.
    #[error("{path}: not a hecnn model file: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// Another format or version.
    #[error("{path}: {reason}")]
    Foreign {
        /// The file.
        path: String,
        /// What was found instead.
        reason: String,
    },
    /// Inconsistent content.
    #[error("{path}: layer {index} ({kind}): {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// Index of the faulty layer.
        index: usize,
        /// Its kind.
        kind: &'static str,
        /// What is wrong.
        reason: Box<LayerError>,
    },
    /// Inconsistent content outside the layers.
    #[error("{path}: {reason}")]
    Inconsistent {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl ModelFile {
    /// Shapes after each layer (the first is the input's), checking every layer fits.
    /// `origin` names the model in errors.
    pub fn shapes(&self, origin: &str) -> Result<Vec<Shape>, ModelError> {
        let mut shapes = vec![self.input.shape];
        for (index, layer) in self.layers.iter().enumerate() {
            let next = layer
                .output_shape(shapes[index])
                .map_err(|reason| ModelError::Invalid {
                    path: origin.to_string(),
                    index,
                    kind: layer.kind(),
                    reason: Box::new(reason),
                })?;
            shapes.push(next);
        }
        Ok(shapes)
    }

    /// Checks the whole model: every layer fits its input, the output has one value per
    /// class, the normalisation is usable.
    pub fn validate(&self, origin: &str) -> Result<(), ModelError> {
        let inconsistent = |reason: String| {
            Err(ModelError::Inconsistent {
                path: origin.to_string(),
                reason,
            })
        };
        if !(self.input.std > 0.0 && self.input.std.is_finite() && self.input.mean.is_finite()) {
            return inconsistent(format!(
                "input normalisation mean {} std {} is unusable",
                self.input.mean, self.input.std
            ));
        }
        if self.input.shape.is_empty() {
            return inconsistent("input shape is empty".into());
        }
        let shapes = self.shapes(origin)?;
        let output = *shapes.last().expect("shapes start with the input");
        if output != Shape::vector(self.class_names.len()) {
            return inconsistent(format!(
                "the network outputs {output} but there are {} classes",
                self.class_names.len()
            ));
        }
        Ok(())
    }

    /// Reads and validates a model file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = read_limited(path, MAX_MODEL_BYTES)?;
        let origin = path.display().to_string();
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| ModelError::Parse {
                path: origin.clone(),
                source,
            })?;
        let format = value.get("format").and_then(|f| f.as_str());
        if format != Some(MODEL_FORMAT) {
            return Err(ModelError::Foreign {
                path: origin,
                reason: format!(
                    "format {format:?}, expected \"{MODEL_FORMAT}\": not a hecnn model file"
                ),
            });
        }
        let version = value.get("version").and_then(|v| v.as_u64());
        if version != Some(u64::from(MODEL_VERSION)) {
            return Err(ModelError::Foreign {
                path: origin,
                reason: format!(
                    "model format version {version:?}; this build reads version {MODEL_VERSION}"
                ),
            });
        }
        let model: Self = serde_json::from_value(value).map_err(|source| ModelError::Parse {
            path: origin.clone(),
            source,
        })?;
        model.validate(&origin)?;
        Ok(model)
    }

    /// Validates and writes the model atomically (a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        self.validate(&path.display().to_string())?;
        let json = serde_json::to_vec(self).expect("a model serialises to JSON");
        write_atomic(path, &json)?;
        Ok(())
    }

    /// Per layer, the per-channel scales that a conv or dense layer's weights are
    /// quantised at when the activation it feeds was read on a trained grid; `None` for
    /// other layers. With the grid's folded scale `sigma'_c = step_c area / (alpha D)`
    /// ([`ReadGrid::folded_weight_scale`]) and a batch norm `k_c` between them, the weights
    /// as trained use `sigma_c = sigma'_c / |k_c|` (folding multiplies them by `k_c`).
    /// `alpha` is the step of the layer's input levels: the previous activation's output
    /// step, or `1 / (255 std)` for pixels. The activation must follow the layer directly,
    /// or through one batch norm and one average pooling.
    pub fn grid_weight_scales(&self) -> Vec<Option<Vec<f64>>> {
        let mut input_step = 1.0 / (255.0 * self.input.std);
        let mut scales = vec![None; self.layers.len()];
        for (index, layer) in self.layers.iter().enumerate() {
            match layer {
                Layer::Activation {
                    output_quant: Some(q),
                    ..
                } => input_step = q.range.step(q.bits),
                Layer::Conv2d { out_channels, .. }
                | Layer::Dense {
                    out_features: out_channels,
                    ..
                } => {
                    let mut next = index + 1;
                    let batch_norm = self.layers.get(next).and_then(Layer::batch_norm_affine);
                    if batch_norm.is_some() {
                        next += 1;
                    }
                    let mut area = 1.0;
                    if let Some(Layer::AvgPool { kernel, .. }) = self.layers.get(next) {
                        area = (kernel[0] * kernel[1]) as f64;
                        next += 1;
                    }
                    if let Some(Layer::Activation {
                        input_grid: Some(grid),
                        ..
                    }) = self.layers.get(next)
                        && grid.channels() == *out_channels
                    {
                        scales[index] = Some(grid.weight_scales(
                            input_step,
                            area,
                            batch_norm.as_ref().map(|(k, _)| k.as_slice()),
                        ));
                    }
                }
                _ => {}
            }
        }
        scales
    }

    /// Number of activation values computed per input (each is one PBS once encrypted).
    pub fn activation_count(&self) -> usize {
        let shapes = self
            .shapes("model")
            .expect("activation_count is asked of validated models");
        self.layers
            .iter()
            .zip(&shapes[1..])
            .filter(|(layer, _)| matches!(layer, Layer::Activation { .. }))
            .map(|(_, shape)| shape.len())
            .sum()
    }
}
