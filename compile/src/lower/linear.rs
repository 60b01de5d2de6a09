//! A stage's linear part: integer weights at given scales, the batch norm folded into the
//! real map of each channel, average pooling fused into the convolution, and the real
//! value `z_j = S_j A_j + C_j` each accumulator stands for.

use crate::circuit::Linear;
use hecnn_model::model::{ConvGeometry, Layer, Shape};
use hecnn_model::quantize::{BitWidth, symmetric_scale};

/// A conv or dense layer's float weights, bias and channel count.
fn parameters(layer: &Layer) -> (&[f32], &[f32], usize) {
    match layer {
        Layer::Conv2d {
            weight,
            bias,
            out_channels,
            ..
        }
        | Layer::Dense {
            weight,
            bias,
            out_features: out_channels,
            ..
        } => (weight, bias, *out_channels),
        _ => unreachable!("stages start with a conv or dense layer"),
    }
}

/// Per channel, the symmetric scale `max |w_c| / q_max` of `bits`-bit weights.
pub fn symmetric_scales(layer: &Layer, bits: BitWidth) -> Vec<f64> {
    let (weight, _, channels) = parameters(layer);
    weight
        .chunks(weight.len() / channels)
        .map(|row| symmetric_scale(row, bits))
        .collect()
}

/// Per channel, the largest weight magnitude after folding a batch norm of scale `k`:
/// `|k_c| max |w_c|`.
pub fn folded_weight_max(layer: &Layer, batch_norm_scale: Option<&[f64]>) -> Vec<f64> {
    let (weight, _, channels) = parameters(layer);
    weight
        .chunks(weight.len() / channels)
        .enumerate()
        .map(|(c, row)| {
            let max = row.iter().fold(0.0f64, |m, w| m.max(f64::from(w.abs())));
            max * batch_norm_scale.map_or(1.0, |k| k[c].abs())
        })
        .collect()
}

/// The real map of a stage's channels: `z = scale_c A + bias_c` before pooling, for
/// accumulators `A` of integer weights over integer input levels.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelAffine {
    /// Per channel, positive.
    pub scale: Vec<f64>,
    /// Per channel.
    pub bias: Vec<f64>,
}

/// The integer map of `layer` (reading `input`) with channel `c`'s weights quantised at
/// `scales[c]` (`q = round(w / s_c)`, ties to even, as training rounds), the batch norm
/// `y = k_c x + h_c` folded in, and the real map of its accumulators for input levels worth
/// `input_step` each. A channel with `k_c < 0` has its integer weights negated, so that
/// every scale is positive: `scale_c = |k_c| s_c input_step`, `bias_c = k_c b_c + h_c`.
pub fn quantise(
    layer: &Layer,
    input: Shape,
    scales: &[f64],
    batch_norm: Option<&(Vec<f64>, Vec<f64>)>,
    input_step: f64,
) -> (Linear, ChannelAffine) {
    let (weight, bias, channels) = parameters(layer);
    let per_channel = weight.len() / channels;
    let mut weights = Vec::with_capacity(weight.len());
    let mut affine = ChannelAffine {
        scale: Vec::with_capacity(channels),
        bias: Vec::with_capacity(channels),
    };
    for (c, row) in weight.chunks(per_channel).enumerate() {
        let (k, h) = batch_norm.map_or((1.0, 0.0), |(k, h)| (k[c], h[c]));
        let sign = if k < 0.0 { -1 } else { 1 };
        weights.extend(
            row.iter()
                .map(|&w| sign * (f64::from(w) / scales[c]).round_ties_even() as i32),
        );
        affine.scale.push(k.abs() * scales[c] * input_step);
        affine.bias.push(k * f64::from(bias[c]) + h);
    }
    let linear = match layer {
        Layer::Conv2d {
            kernel,
            stride,
            padding,
            ..
        } => Linear::Conv {
            geometry: ConvGeometry {
                input,
                out_channels: channels,
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
            },
            weights,
        },
        _ => Linear::Dense {
            inputs: input.len(),
            weights,
        },
    };
    (linear, affine)
}

/// A convolution followed by non-overlapping average pooling of `pool`, as one
/// convolution: kernel `k + (P - 1) s`, stride `s P`, integer weights summed over the
/// window (`W'[K] = sum_{p} W[K - p s]`).
///
/// # Panics
/// On a dense map; [`super::stages::group`] only pools after convolutions.
pub fn fuse_pool(linear: Linear, pool: [usize; 2]) -> Linear {
    let Linear::Conv { geometry, weights } = linear else {
        unreachable!("stages pool only after convolutions")
    };
    let ([kh, kw], [sh, sw]) = (geometry.kernel, geometry.stride);
    let [ph, pw] = pool;
    let fused_geometry = ConvGeometry {
        kernel: [kh + (ph - 1) * sh, kw + (pw - 1) * sw],
        stride: [sh * ph, sw * pw],
        ..geometry
    };
    let [fh, fw] = fused_geometry.kernel;
    let mut fused = vec![0i32; fused_geometry.weight_len()];
    for (index, &w) in weights.iter().enumerate() {
        // index = ((o * in + c) * kh + ky) * kw + kx; the tap moves by (py s, px s).
        let (kx, rest) = (index % kw, index / kw);
        let (ky, filter) = (rest % kh, rest / kh);
        for py in 0..ph {
            for px in 0..pw {
                fused[(filter * fh + py * sh + ky) * fw + px * sw + kx] += w;
            }
        }
    }
    Linear::Conv {
        geometry: fused_geometry,
        weights: fused,
    }
}

/// The real value of each output's accumulator: `z_j = S_j A_j + C_j`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputAffine {
    /// `S_j`.
    pub scale: Vec<f64>,
    /// `C_j`.
    pub shift: Vec<f64>,
}

impl OutputAffine {
    /// For inputs `u = alpha x + beta` of integer levels `x` (`input_step` alpha,
    /// `input_shift` beta) and pooling of `area` values fused into `linear`:
    /// `S_j = scale_c / area` and `C_j = S_j (beta / alpha) W_j + bias_c`, where `W_j` sums
    /// the weights output `j` applies (padding taps excluded).
    pub fn new(
        linear: &Linear,
        channel: &ChannelAffine,
        area: f64,
        input_step: f64,
        input_shift: f64,
    ) -> Self {
        let out = linear.output_shape();
        let per_channel = out.len() / out.channels;
        let weight_sums = linear.apply(&vec![1; linear.input_len()]);
        let (scale, shift) = weight_sums
            .iter()
            .enumerate()
            .map(|(j, &sum)| {
                let c = j / per_channel;
                let s = channel.scale[c] / area;
                (
                    s,
                    s * input_shift / input_step * sum as f64 + channel.bias[c],
                )
            })
            .unzip();
        Self { scale, shift }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ReferenceModel;
    use crate::testing::{batch_norm, conv3x3, image, model_file};

    /// The folded, quantised, pooled stage computes the float layers it came from (with
    /// the same quantised weights) up to float rounding, negative batch-norm scales
    /// included.
    #[test]
    fn the_real_map_is_the_float_layers() {
        let bits = BitWidth::new(4).unwrap();
        let layers = vec![
            conv3x3(1, Some(bits)),
            batch_norm(4, 3),
            Layer::AvgPool {
                kernel: [2, 2],
                stride: [2, 2],
            },
        ];
        let model = model_file(layers.clone());
        let input = model.input.shape;
        let reference = ReferenceModel::new(&model_file(layers));
        let bn = model.layers[1].batch_norm_affine().unwrap();
        assert!(
            bn.0.iter().any(|&k| k < 0.0),
            "the fixture has a negative scale"
        );
        let alpha = 1.0 / (255.0 * model.input.std);
        let beta = -model.input.mean / model.input.std;
        let scales = symmetric_scales(&model.layers[0], bits);
        let (linear, channel) = quantise(&model.layers[0], input, &scales, Some(&bn), alpha);
        let linear = fuse_pool(linear, [2, 2]);
        let affine = OutputAffine::new(&linear, &channel, 4.0, alpha, beta);
        for seed in 0..10 {
            let pixels = image(seed);
            let x: Vec<i64> = pixels.iter().map(|&p| i64::from(p)).collect();
            let z: Vec<f64> = linear
                .apply(&x)
                .iter()
                .enumerate()
                .map(|(j, &a)| affine.scale[j] * a as f64 + affine.shift[j])
                .collect();
            let expected = reference.logits(&pixels);
            assert_eq!(z.len(), expected.len());
            for (a, b) in z.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn pooling_fuses_into_the_convolution() {
        let model = model_file(vec![conv3x3(0, None)]);
        let scales = vec![0.1; 4];
        let (linear, _) = quantise(&model.layers[0], model.input.shape, &scales, None, 1.0);
        let Linear::Conv { geometry, .. } = fuse_pool(linear, [2, 2]) else {
            panic!("a convolution")
        };
        assert_eq!((geometry.kernel, geometry.stride), ([4, 4], [2, 2]));
        assert_eq!(geometry.output().unwrap().len(), 36);
    }
}
