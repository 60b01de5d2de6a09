//! The trainable network: burn modules built from an [`Architecture`], exported to (and
//! re-imported from) the compiler's model file.

use burn::module::{Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer};
use burn::prelude::*;
use burn::tensor::module::{avg_pool2d, conv2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions};
use hecnn_model::activation::Activation;
use hecnn_model::model::{
    InputSpec, Layer as FileLayer, MODEL_FORMAT, MODEL_VERSION, ModelFile, Shape, TrainingSummary,
};
use hecnn_model::quantize::{BitWidth, LutBits, QuantSettings};
use serde::{Deserialize, Serialize};

use crate::activation::{ActivationLayer, GridSettings};
use crate::architecture::{Architecture, LayerSpec};
use crate::quant::{fake_quantize_weight, fake_quantize_weight_at};

/// Width of the weights of layers that read the image: the client's fresh encryptions
/// carry ~2^33 times less noise than bootstrapped values ([`hecnn_compile::noise`]), so wide
/// first-layer weights cost nothing.
pub const FIRST_LAYER_WEIGHT_BITS: u8 = 8;

/// Hands out the weight widths of QAT in layer order: [`FIRST_LAYER_WEIGHT_BITS`] to the
/// first weight layer, then the settings' widths (the last repeating); none without QAT.
struct LayerWeightBits<'a> {
    quant: Option<&'a QuantSettings>,
    seen: usize,
}

impl<'a> LayerWeightBits<'a> {
    fn new(quant: Option<&'a QuantSettings>) -> Self {
        Self { quant, seen: 0 }
    }

    /// The width of the next weight layer.
    fn next(&mut self) -> Option<BitWidth> {
        let k = self.seen;
        self.seen += 1;
        self.quant.map(|q| match k {
            0 => BitWidth::new(FIRST_LAYER_WEIGHT_BITS).expect("valid width"),
            k => q.weight_bits_after_first(k - 1),
        })
    }
}

/// A convolution whose weights may be fake-quantised.
#[derive(Module, Debug)]
pub struct Conv {
    weight: Param<Tensor<4>>,
    bias: Param<Tensor<1>>,
    stride: [usize; 2],
    padding: [usize; 2],
    #[module(skip)]
    weight_bits: Option<BitWidth>,
}

/// A fully connected layer (`[out, in]` weights) whose weights may be fake-quantised.
#[derive(Module, Debug)]
pub struct Dense {
    weight: Param<Tensor<2>>,
    bias: Param<Tensor<1>>,
    #[module(skip)]
    weight_bits: Option<BitWidth>,
}

/// Average pooling without padding.
#[derive(Module, Debug)]
pub struct AvgPool {
    kernel: [usize; 2],
    stride: [usize; 2],
}

/// Feature map `[b, c, h, w]` to `[b, c*h*w, 1, 1]`.
#[derive(Module, Debug)]
pub struct Flatten;

/// One layer; every layer maps `[batch, channels, height, width]` tensors (vectors are
/// `[batch, n, 1, 1]`).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Layer {
    /// Convolution.
    Conv(Conv),
    /// Batch normalisation.
    BatchNorm(BatchNorm),
    /// Average pooling.
    AvgPool(AvgPool),
    /// Activation.
    Activation(ActivationLayer),
    /// Flatten.
    Flatten(Flatten),
    /// Fully connected.
    Dense(Dense),
}

/// Read noise sampled in circuit-aware training by default, in table entries: about twice
/// what the N = 2048 sets add to 4-bit reads, so that the network learns to keep its
/// decisions away from entry boundaries.
pub const DEFAULT_READ_NOISE: f64 = 0.15;

/// Circuit-aware training: every activation's inputs read on the grid of the table the
/// compiler will build, with the read noise of encrypted evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitTraining {
    /// Table bits of each activation layer in order, the last repeating.
    pub lut_bits: Vec<LutBits>,
    /// Standard deviation of the read noise sampled in training, in table entries, for
    /// each activation layer in order, the last repeating: a circuit's stages read with
    /// different noise (the first reads fresh encryptions, the others PBS outputs), as the
    /// compile report's `std (box)` column shows.
    pub read_noise: Vec<f64>,
}

impl CircuitTraining {
    /// The grid of the `k`-th activation layer.
    fn settings(&self, k: usize) -> GridSettings {
        GridSettings {
            lut_bits: self.lut_bits[k.min(self.lut_bits.len() - 1)],
            read_noise: self.read_noise[k.min(self.read_noise.len() - 1)],
        }
    }
}

/// A weight layer whose outputs an activation reads on a grid: where its batch norm and
/// activation are, and the pooling area between them (as
/// [`ModelFile::grid_weight_scales`] links them).
#[derive(Debug, Clone, Copy, PartialEq)]
struct GridLink {
    batch_norm: Option<usize>,
    area: f64,
    activation: usize,
}

/// A network and what it was built for.
#[derive(Module, Debug)]
pub struct Network {
    layers: Vec<Layer>,
    /// Per layer, its grid link if it is a weight layer feeding a read grid.
    #[module(skip)]
    links: Vec<Option<GridLink>>,
    #[module(skip)]
    name: String,
    #[module(skip)]
    input: InputSpec,
    #[module(skip)]
    class_names: Vec<String>,
}

/// burn's default initialisation for conv and dense layers (Kaiming uniform, gain 1/sqrt 3).
fn kaiming() -> Initializer {
    Initializer::KaimingUniform {
        gain: 1.0 / 3f64.sqrt(),
        fan_out_only: false,
    }
}

impl Network {
    /// Builds `architecture` for `input` with `activation` at every activation layer and,
    /// if `quant` is given, quantisation-aware layers.
    pub fn new(
        architecture: &Architecture,
        input: InputSpec,
        class_names: Vec<String>,
        activation: &Activation,
        quant: Option<&QuantSettings>,
        circuit: Option<&CircuitTraining>,
        device: &Device,
    ) -> Result<Self, crate::TrainError> {
        let shapes = architecture.shapes(input.shape, class_names.len())?;
        let mut activations_seen = 0;
        let mut weight_bits = LayerWeightBits::new(quant);
        let layers = architecture
            .layers
            .iter()
            .zip(&shapes)
            .map(|(spec, shape)| match *spec {
                LayerSpec::Conv2d {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                } => {
                    let fan_in = shape.channels * kernel * kernel;
                    let fan_out = out_channels * kernel * kernel;
                    Layer::Conv(Conv {
                        weight: kaiming().init_with(
                            [out_channels, shape.channels, kernel, kernel],
                            Some(fan_in),
                            Some(fan_out),
                            device,
                        ),
                        bias: kaiming().init_with(
                            [out_channels],
                            Some(fan_in),
                            Some(fan_out),
                            device,
                        ),
                        stride: [stride; 2],
                        padding: [padding; 2],
                        weight_bits: weight_bits.next(),
                    })
                }
                LayerSpec::BatchNorm => {
                    Layer::BatchNorm(BatchNormConfig::new(shape.channels).init(device))
                }
                LayerSpec::AvgPool { kernel, stride } => Layer::AvgPool(AvgPool {
                    kernel: [kernel; 2],
                    stride: [stride.unwrap_or(kernel); 2],
                }),
                LayerSpec::Activation => {
                    let grid = circuit.map(|c| (c.settings(activations_seen), shape.channels));
                    activations_seen += 1;
                    Layer::Activation(ActivationLayer::with_grid(
                        activation,
                        quant.map(|q| q.activation_bits),
                        grid,
                        device,
                    ))
                }
                LayerSpec::Flatten => Layer::Flatten(Flatten),
                LayerSpec::Dense { out_features } => {
                    let fan_in = shape.len();
                    Layer::Dense(Dense {
                        weight: kaiming().init_with(
                            [out_features, fan_in],
                            Some(fan_in),
                            Some(out_features),
                            device,
                        ),
                        bias: kaiming().init_with(
                            [out_features],
                            Some(fan_in),
                            Some(out_features),
                            device,
                        ),
                        weight_bits: weight_bits.next(),
                    })
                }
            })
            .collect();
        Ok(Self::linked(
            layers,
            architecture.name.clone(),
            input,
            class_names,
        ))
    }

    /// The network of `layers`, each weight layer linked to the read grid it feeds.
    fn linked(
        layers: Vec<Layer>,
        name: String,
        input: InputSpec,
        class_names: Vec<String>,
    ) -> Self {
        let links = (0..layers.len())
            .map(|index| {
                if !matches!(layers[index], Layer::Conv(_) | Layer::Dense(_)) {
                    return None;
                }
                let mut next = index + 1;
                let batch_norm =
                    matches!(layers.get(next), Some(Layer::BatchNorm(_))).then_some(next);
                next += usize::from(batch_norm.is_some());
                let mut area = 1.0;
                if let Some(Layer::AvgPool(pool)) = layers.get(next) {
                    area = (pool.kernel[0] * pool.kernel[1]) as f64;
                    next += 1;
                }
                match layers.get(next) {
                    Some(Layer::Activation(act)) if act.grid_bits().is_some() => Some(GridLink {
                        batch_norm,
                        area,
                        activation: next,
                    }),
                    _ => None,
                }
            })
            .collect();
        Self {
            layers,
            links,
            name,
            input,
            class_names,
        }
    }

    /// The network a (validated) model file describes, for inference or further training.
    pub fn from_model_file(model: &ModelFile, device: &Device) -> Self {
        Self::fine_tuned(model, None, None, device)
    }

    /// The network of a (validated) model file, to be trained further with `quant` and
    /// `circuit`: layers the file quantises keep their learnt quantisation, the others get
    /// these settings (the first weight layer 8-bit weights) and learn their ranges from
    /// the first batch.
    pub fn fine_tuned(
        model: &ModelFile,
        quant: Option<&QuantSettings>,
        circuit: Option<&CircuitTraining>,
        device: &Device,
    ) -> Self {
        let tensor = |values: &[f32]| Tensor::<1>::from_floats(values, device);
        let shapes = model.shapes("model").expect("the model file is validated");
        let mut widths = LayerWeightBits::new(quant);
        let mut bits_of = |file_bits: Option<BitWidth>| {
            let width = widths.next();
            file_bits.or(width)
        };
        let mut activations_seen = 0;
        let layers = model
            .layers
            .iter()
            .zip(&shapes)
            .map(|(layer, shape)| match layer {
                FileLayer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    weight,
                    bias,
                    weight_bits,
                } => Layer::Conv(Conv {
                    weight: Param::from_tensor(tensor(weight).reshape([
                        *out_channels,
                        *in_channels,
                        kernel[0],
                        kernel[1],
                    ])),
                    bias: Param::from_tensor(tensor(bias)),
                    stride: *stride,
                    padding: *padding,
                    weight_bits: bits_of(*weight_bits),
                }),
                FileLayer::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    epsilon,
                } => {
                    let mut bn = BatchNormConfig::new(gamma.len())
                        .with_epsilon(*epsilon)
                        .init(device);
                    bn.gamma = Param::from_tensor(tensor(gamma));
                    bn.beta = Param::from_tensor(tensor(beta));
                    bn.running_mean = RunningState::new(tensor(mean));
                    bn.running_var = RunningState::new(tensor(var));
                    Layer::BatchNorm(bn)
                }
                FileLayer::AvgPool { kernel, stride } => Layer::AvgPool(AvgPool {
                    kernel: *kernel,
                    stride: *stride,
                }),
                FileLayer::Activation {
                    function,
                    output_quant,
                    input_grid,
                } => {
                    let grid = circuit.map(|c| (c.settings(activations_seen), shape.channels));
                    activations_seen += 1;
                    Layer::Activation(ActivationLayer::from_file(
                        function,
                        *output_quant,
                        input_grid.as_ref(),
                        quant.map(|q| q.activation_bits),
                        grid,
                        device,
                    ))
                }
                FileLayer::Flatten => Layer::Flatten(Flatten),
                FileLayer::Dense {
                    in_features,
                    out_features,
                    weight,
                    bias,
                    weight_bits,
                } => Layer::Dense(Dense {
                    weight: Param::from_tensor(
                        tensor(weight).reshape([*out_features, *in_features]),
                    ),
                    bias: Param::from_tensor(tensor(bias)),
                    weight_bits: bits_of(*weight_bits),
                }),
            })
            .collect();
        Self::linked(
            layers,
            model.name.clone(),
            model.input,
            model.class_names.clone(),
        )
    }

    /// The input specification.
    pub fn input(&self) -> &InputSpec {
        &self.input
    }

    /// How many classes it scores.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }

    /// Logits `[batch, classes]` of normalised inputs `[batch, channels, height, width]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let batch = x.dims()[0];
        // The step of the current layer's input levels: pixels, then each quantised
        // activation's outputs.
        let mut input_step = self.pixel_step();
        let mut x = x;
        for (index, layer) in self.layers.iter().enumerate() {
            x = match layer {
                Layer::Conv(conv) => {
                    let weight = self.quantised_weight(
                        index,
                        conv.weight.val(),
                        conv.weight_bits,
                        input_step,
                    );
                    conv2d(
                        x,
                        weight,
                        Some(conv.bias.val()),
                        ConvOptions::new(conv.stride, conv.padding, [1, 1], 1),
                    )
                }
                Layer::BatchNorm(bn) => bn.forward(x),
                Layer::AvgPool(pool) => {
                    avg_pool2d(x, AvgPoolOptions::new(pool.kernel).with_stride(pool.stride))
                }
                Layer::Activation(act) => {
                    let y = act.forward(x);
                    if let Some(q) = act.output_quant() {
                        input_step = q.range.step(q.bits);
                    }
                    y
                }
                Layer::Flatten(_) => {
                    let [b, c, h, w] = x.dims();
                    x.reshape([b, c * h * w, 1, 1])
                }
                Layer::Dense(dense) => {
                    let weight = self.quantised_weight(
                        index,
                        dense.weight.val(),
                        dense.weight_bits,
                        input_step,
                    );
                    let [b, n, _, _] = x.dims();
                    let out_features = weight.dims()[0];
                    let y =
                        x.reshape([b, n]).matmul(weight.transpose()) + dense.bias.val().unsqueeze();
                    y.reshape([b, out_features, 1, 1])
                }
            };
        }
        x.reshape([batch as i32, -1])
    }

    /// The weights of layer `index` as the circuit will have them. Feeding a read grid,
    /// they are quantised at the grid's scales `sigma_c = step_c area / (alpha D |k_c|)`
    /// ([`hecnn_model::grid`]), with `D` recomputed at every training step
    /// ([`GridRead::accumulator_step`]) and kept for inference; otherwise per-channel symmetric
    /// at `bits`, if any.
    fn quantised_weight<const D: usize>(
        &self,
        index: usize,
        weight: Tensor<D>,
        bits: Option<BitWidth>,
        input_step: f64,
    ) -> Tensor<D> {
        let Some(bits) = bits else {
            return weight;
        };
        let Some(read) = self.grid_read(index, &weight) else {
            return fake_quantize_weight(weight, bits);
        };
        let d = if read.recorded_step > 0.0 && !weight.device().is_autodiff() {
            read.recorded_step
        } else {
            let d = read.accumulator_step(&weight, bits, input_step);
            read.activation.set_accumulator_step(d);
            d
        };
        let scales = read
            .step
            .mul_scalar(read.link.area / (input_step * d))
            .div(read.gain);
        fake_quantize_weight_at(weight, scales)
    }

    /// How layer `index`'s outputs reach a read grid, if they do: the grid's steps and the
    /// batch-norm gains `|k_c| = |gamma_c| / sqrt(var_c + eps)` between (1 without one).
    fn grid_read<const D: usize>(&self, index: usize, weight: &Tensor<D>) -> Option<GridRead<'_>> {
        let link = self.links[index]?;
        let Layer::Activation(activation) = &self.layers[link.activation] else {
            unreachable!("links point at activations")
        };
        let (step, recorded_step) = activation.grid_steps()?;
        let channels = weight.dims()[0];
        let device = weight.device();
        let gain = match link.batch_norm.map(|i| &self.layers[i]) {
            Some(Layer::BatchNorm(bn)) => {
                let var = bn.running_var.value_sync();
                let var = Tensor::<1>::from_data(var.into_data(), &device);
                bn.gamma.val().detach().abs() / var.add_scalar(bn.epsilon).sqrt()
            }
            _ => Tensor::ones([channels], &device),
        };
        Some(GridRead {
            link,
            activation,
            step: Tensor::from_data(step.into_data(), &device),
            recorded_step,
            gain: gain.clamp_min(f32::MIN_POSITIVE),
        })
    }

    /// Recomputes every stage's accumulator step `D` from the network as it now is.
    ///
    /// A training step fixes `D` in its forward pass; the optimiser step and the grids'
    /// range tracking after it move the weights, batch-norm variances and grid steps, so
    /// the last pass's `D` is off what the final network implies (by 0.01-0.5% on compact),
    /// enough for a channel's largest weight to round one level beyond its width. Settled
    /// after each epoch, validation and the model file use the final network's `D`.
    pub fn settle_accumulator_steps(&self) {
        let mut input_step = self.pixel_step();
        for (index, layer) in self.layers.iter().enumerate() {
            match layer {
                Layer::Conv(conv) => self.settle_accumulator_step(
                    index,
                    conv.weight.val(),
                    conv.weight_bits,
                    input_step,
                ),
                Layer::Dense(dense) => self.settle_accumulator_step(
                    index,
                    dense.weight.val(),
                    dense.weight_bits,
                    input_step,
                ),
                Layer::Activation(act) => {
                    if let Some(q) = act.output_quant() {
                        input_step = q.range.step(q.bits);
                    }
                }
                Layer::BatchNorm(_) | Layer::AvgPool(_) | Layer::Flatten(_) => {}
            }
        }
    }

    fn settle_accumulator_step<const D: usize>(
        &self,
        index: usize,
        weight: Tensor<D>,
        bits: Option<BitWidth>,
        input_step: f64,
    ) {
        let read = bits.zip(self.grid_read(index, &weight));
        if let Some((bits, read)) = read {
            let d = read.accumulator_step(&weight, bits, input_step);
            read.activation.set_accumulator_step(d);
        }
    }

    /// The step of the image's input levels: one pixel level, normalised.
    fn pixel_step(&self) -> f64 {
        1.0 / (255.0 * self.input.std)
    }

    /// The model file of this network.
    pub fn export(&self, dataset: &str, training: Option<TrainingSummary>) -> ModelFile {
        let floats = |t: Tensor<1>| -> Vec<f32> {
            t.into_data().convert::<f32>().try_to_vec().expect("f32")
        };
        let flat = |t: Tensor<4>| floats(t.flatten(0, 3));
        let layers = self
            .layers
            .iter()
            .map(|layer| match layer {
                Layer::Conv(conv) => {
                    let [out_channels, in_channels, kh, kw] = conv.weight.dims();
                    FileLayer::Conv2d {
                        in_channels,
                        out_channels,
                        kernel: [kh, kw],
                        stride: conv.stride,
                        padding: conv.padding,
                        weight: flat(conv.weight.val()),
                        bias: floats(conv.bias.val()),
                        weight_bits: conv.weight_bits,
                    }
                }
                Layer::BatchNorm(bn) => FileLayer::BatchNorm {
                    gamma: floats(bn.gamma.val()),
                    beta: floats(bn.beta.val()),
                    mean: floats(bn.running_mean.value_sync()),
                    var: floats(bn.running_var.value_sync()),
                    epsilon: bn.epsilon,
                },
                Layer::AvgPool(pool) => FileLayer::AvgPool {
                    kernel: pool.kernel,
                    stride: pool.stride,
                },
                Layer::Activation(act) => FileLayer::Activation {
                    function: act.function(),
                    output_quant: act.output_quant(),
                    input_grid: act.read_grid(),
                },
                Layer::Flatten(_) => FileLayer::Flatten,
                Layer::Dense(dense) => {
                    let [out_features, in_features] = dense.weight.dims();
                    FileLayer::Dense {
                        in_features,
                        out_features,
                        weight: floats(dense.weight.val().flatten(0, 1)),
                        bias: floats(dense.bias.val()),
                        weight_bits: dense.weight_bits,
                    }
                }
            })
            .collect();
        ModelFile {
            format: MODEL_FORMAT.into(),
            version: MODEL_VERSION,
            name: self.name.clone(),
            dataset: dataset.into(),
            class_names: self.class_names.clone(),
            input: self.input,
            layers,
            training,
        }
    }
}

/// A weight layer's path to the read grid its outputs are read on.
struct GridRead<'a> {
    link: GridLink,
    /// The activation whose grid it is.
    activation: &'a ActivationLayer,
    /// The grid's step per channel.
    step: Tensor<1>,
    /// The accumulator step `D` recorded so far (0 until set).
    recorded_step: f64,
    /// The batch-norm gain `|k_c|` per channel.
    gain: Tensor<1>,
}

impl GridRead<'_> {
    /// The accumulator step `D` at which no channel's integer weights exceed `bits`, as
    /// [`hecnn_model::grid::accumulator_step`] computes it from the model file:
    /// `D = min_c q_max step_c area / (alpha m_c)`, with `alpha` the input step and `m_c`
    /// the channel's largest weight magnitude times its batch-norm gain `|k_c|`.
    fn accumulator_step<const D: usize>(
        &self,
        weight: &Tensor<D>,
        bits: BitWidth,
        input_step: f64,
    ) -> f64 {
        let channels = weight.dims()[0];
        let weight_max: Tensor<1> = weight
            .clone()
            .detach()
            .reshape([channels as i32, -1])
            .abs()
            .max_dim(1)
            .squeeze_dim(1)
            .mul(self.gain.clone());
        let per_channel = self
            .step
            .clone()
            .mul_scalar(bits.symmetric_max() * self.link.area / input_step)
            .div(weight_max.clamp_min(f32::MIN_POSITIVE));
        f64::from(per_channel.min().into_scalar::<f32>())
    }
}

/// The tensor `[batch, channels, height, width]` of normalised images.
pub fn input_tensor(input: &InputSpec, pixels: &[u8], device: &Device) -> Tensor<4> {
    let Shape {
        channels,
        height,
        width,
    } = input.shape;
    let batch = pixels.len() / input.shape.len();
    let values: Vec<f32> = pixels.iter().map(|&p| input.normalise(p) as f32).collect();
    Tensor::from_data(
        TensorData::new(values, [batch, channels, height, width]),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table widths and read noise are given per activation layer, the last repeating.
    #[test]
    fn each_activation_layer_gets_its_own_table_width_and_read_noise() {
        let bits = |b| LutBits::new(b).unwrap();
        let circuit = CircuitTraining {
            lut_bits: vec![bits(5), bits(4)],
            read_noise: vec![0.14, 0.1, 0.05],
        };
        let settings: Vec<(LutBits, f64)> = (0..4)
            .map(|k| circuit.settings(k))
            .map(|s| (s.lut_bits, s.read_noise))
            .collect();
        assert_eq!(
            settings,
            [
                (bits(5), 0.14),
                (bits(4), 0.1),
                (bits(4), 0.05),
                (bits(4), 0.05)
            ]
        );
    }
}
