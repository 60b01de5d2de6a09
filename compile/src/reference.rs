//! The float model evaluated in plain Rust, exactly as it was trained (fake quantisation
//! included): the reference the integer circuit is checked against (`--mode float`).

use hecnn_model::activation::ActivationFn;
use hecnn_model::grid::ReadGrid;
use hecnn_model::model::{ConvGeometry, Layer, ModelFile, OutputQuant, Shape};
use hecnn_model::quantize::{BitWidth, fake_quantize_at_scales, fake_quantize_per_channel};

/// One layer ready to run: weights already fake-quantised, activations precomputed.
#[derive(Debug, Clone)]
enum Step {
    Conv {
        geometry: ConvGeometry,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    /// Batch norm as `y = scale x + shift` per channel.
    Affine {
        scale: Vec<f64>,
        shift: Vec<f64>,
    },
    AvgPool {
        kernel: [usize; 2],
        stride: [usize; 2],
    },
    Activation {
        function: ActivationFn,
        output_quant: Option<OutputQuant>,
        input_grid: Option<ReadGrid>,
    },
    Flatten,
    Dense {
        in_features: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
}

/// A validated model prepared for fast float evaluation.
#[derive(Debug, Clone)]
pub struct ReferenceModel {
    model: ModelFile,
    shapes: Vec<Shape>,
    steps: Vec<Step>,
}

/// A layer's weights as trained: at the scales of the grid they feed, else per-channel
/// symmetric at `bits`, else as they are.
fn quantised(
    weight: &[f32],
    channels: usize,
    bits: Option<BitWidth>,
    grid_scales: Option<&[f64]>,
) -> Vec<f32> {
    let mut weight = weight.to_vec();
    match (grid_scales, bits) {
        (Some(scales), _) => fake_quantize_at_scales(&mut weight, scales),
        (None, Some(bits)) => {
            fake_quantize_per_channel(&mut weight, channels, bits);
        }
        (None, None) => {}
    }
    weight
}

impl ReferenceModel {
    /// Prepares `model`, which must be valid ([`ModelFile::validate`]).
    pub fn new(model: &ModelFile) -> Self {
        let shapes = model
            .shapes("model")
            .expect("ReferenceModel::new is given a validated model");
        let grid_scales = model.grid_weight_scales();
        let steps = model
            .layers
            .iter()
            .zip(&shapes)
            .zip(&grid_scales)
            .map(|((layer, &input), grid_scales)| match layer {
                Layer::Conv2d {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    weight,
                    bias,
                    weight_bits,
                    ..
                } => Step::Conv {
                    geometry: ConvGeometry {
                        input,
                        out_channels: *out_channels,
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                    },
                    weight: quantised(weight, *out_channels, *weight_bits, grid_scales.as_deref()),
                    bias: bias.clone(),
                },
                layer @ Layer::BatchNorm { .. } => {
                    let (scale, shift) = layer
                        .batch_norm_affine()
                        .expect("a batch norm has an affine map");
                    Step::Affine { scale, shift }
                }
                Layer::AvgPool { kernel, stride } => Step::AvgPool {
                    kernel: *kernel,
                    stride: *stride,
                },
                Layer::Activation {
                    function,
                    output_quant,
                    input_grid,
                } => Step::Activation {
                    function: function.evaluator(),
                    output_quant: *output_quant,
                    input_grid: input_grid.clone(),
                },
                Layer::Flatten => Step::Flatten,
                Layer::Dense {
                    in_features,
                    out_features,
                    weight,
                    bias,
                    weight_bits,
                } => Step::Dense {
                    in_features: *in_features,
                    weight: quantised(weight, *out_features, *weight_bits, grid_scales.as_deref()),
                    bias: bias.clone(),
                },
            })
            .collect();
        Self {
            model: model.clone(),
            shapes,
            steps,
        }
    }

    /// The model this was prepared from.
    pub fn model(&self) -> &ModelFile {
        &self.model
    }

    /// The logits for one image of raw pixels (`0..=255`, as many as the input shape holds).
    pub fn logits(&self, pixels: &[u8]) -> Vec<f64> {
        assert_eq!(pixels.len(), self.model.input.shape.len(), "image size");
        let mut x: Vec<f64> = pixels
            .iter()
            .map(|&p| self.model.input.normalise(p))
            .collect();
        for (step, &shape) in self.steps.iter().zip(&self.shapes) {
            x = run_step(step, shape, &x);
        }
        x
    }

    /// The predicted class: the index of the largest logit.
    pub fn predict(&self, pixels: &[u8]) -> usize {
        argmax(&self.logits(pixels))
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

fn run_step(step: &Step, shape: Shape, x: &[f64]) -> Vec<f64> {
    let Shape {
        channels,
        height,
        width,
    } = shape;
    match step {
        Step::Conv {
            geometry,
            weight,
            bias,
        } => {
            let out = geometry.output().expect("validated models fit");
            let per_channel = out.height * out.width;
            let mut acc: Vec<f64> = (0..out.len())
                .map(|j| f64::from(bias[j / per_channel]))
                .collect();
            geometry.for_each_tap(|j, i, k| acc[j] += f64::from(weight[k]) * x[i]);
            acc
        }
        Step::Affine { scale, shift } => x
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let c = i / (height * width);
                v * scale[c] + shift[c]
            })
            .collect(),
        Step::AvgPool {
            kernel: [kh, kw],
            stride: [sh, sw],
        } => {
            let out_h = (height - kh) / sh + 1;
            let out_w = (width - kw) / sw + 1;
            let area = (kh * kw) as f64;
            let mut out = Vec::with_capacity(channels * out_h * out_w);
            for c in 0..channels {
                for oy in 0..out_h {
                    for ox in 0..out_w {
                        let sum: f64 = (0..*kh)
                            .flat_map(|ky| (0..*kw).map(move |kx| (oy * sh + ky, ox * sw + kx)))
                            .map(|(y, xx)| x[(c * height + y) * width + xx])
                            .sum();
                        out.push(sum / area);
                    }
                }
            }
            out
        }
        Step::Activation {
            function,
            output_quant,
            input_grid,
        } => x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let v = match input_grid {
                    Some(grid) => grid.read(i / (height * width), v),
                    None => v,
                };
                let y = function.eval(v);
                match output_quant {
                    Some(q) => q.range.fake_quantize(y, q.bits),
                    None => y,
                }
            })
            .collect(),
        Step::Flatten => x.to_vec(),
        Step::Dense {
            in_features,
            weight,
            bias,
        } => weight
            .chunks(*in_features)
            .zip(bias)
            .map(|(row, b)| {
                f64::from(*b)
                    + row
                        .iter()
                        .zip(x)
                        .map(|(w, v)| f64::from(*w) * v)
                        .sum::<f64>()
            })
            .collect(),
    }
}
