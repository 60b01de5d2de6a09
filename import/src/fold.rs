//! Layer orders PyTorch networks use but the circuit does not place: pooling and batch
//! norms after an activation (`conv -> relu -> pool -> ...`). A circuit stage is a conv or
//! dense layer, its batch norm and pooling, then an activation, so such layers are folded
//! into the conv or dense layer after them, which then computes the same function (the
//! table reads, one per activation value, do not change).

use hecnn_model::model::{Layer, Shape};

/// A linear layer that waits to be folded into the next conv or dense layer, with the
/// shape it reads.
struct Pending {
    layer: Layer,
    input: Shape,
}

/// `layers` (reading `input`) with every pooling, batch norm and flatten that follows an
/// activation folded into the next conv or dense layer; `notes` hears what was folded.
pub fn fold_after_activations(
    layers: Vec<Layer>,
    input: Shape,
    notes: &mut Vec<String>,
) -> Result<Vec<Layer>, String> {
    let mut folded = Vec::with_capacity(layers.len());
    let mut pending: Vec<Pending> = Vec::new();
    let mut shape = input;
    let mut after_activation = false;
    for (index, layer) in layers.into_iter().enumerate() {
        let next = layer
            .output_shape(shape)
            .map_err(|e| format!("layer {index}: {e}"))?;
        match layer {
            Layer::AvgPool { .. } | Layer::BatchNorm { .. } | Layer::Flatten
                if after_activation =>
            {
                pending.push(Pending {
                    layer,
                    input: shape,
                });
            }
            Layer::Conv2d { .. } | Layer::Dense { .. } => {
                let mut linear = layer;
                if let (Layer::Dense { .. }, Some(first)) = (&linear, pending.first()) {
                    // The folded dense layer reads the map the first folded layer read.
                    if first.input.height * first.input.width != 1 {
                        folded.push(Layer::Flatten);
                    }
                }
                if !pending.is_empty() {
                    let kinds: Vec<_> = pending.iter().map(|p| p.layer.kind()).collect();
                    notes.push(format!(
                        "{} after an activation folded into the {} after it (the same function)",
                        kinds.join(" + "),
                        linear.kind()
                    ));
                }
                while let Some(Pending { layer, input }) = pending.pop() {
                    linear = fold(linear, &layer, input)?;
                }
                folded.push(linear);
                after_activation = false;
            }
            Layer::Activation { .. } => {
                if let Some(p) = pending.first() {
                    return Err(format!(
                        "a {} between two activations: hecnn needs a conv or dense layer to fold it into",
                        p.layer.kind()
                    ));
                }
                folded.push(layer);
                after_activation = true;
            }
            other => folded.push(other),
        }
        shape = next;
    }
    if let Some(p) = pending.first() {
        return Err(format!(
            "a {} after the last activation with no conv or dense layer after it",
            p.layer.kind()
        ));
    }
    Ok(folded)
}

/// `linear` after `op` (which reads `input`), as one layer.
fn fold(linear: Layer, op: &Layer, input: Shape) -> Result<Layer, String> {
    match (linear, op) {
        (linear, Layer::Flatten) => Ok(linear),
        (
            Layer::Dense {
                out_features,
                weight,
                bias,
                weight_bits,
                ..
            },
            op,
        ) => {
            let (weight, bias) = dense_after(out_features, &weight, &bias, op, input);
            Ok(Layer::Dense {
                in_features: input.len(),
                out_features,
                weight,
                bias,
                weight_bits,
            })
        }
        (conv @ Layer::Conv2d { .. }, op) => conv_after(conv, op, input),
        (other, _) => Ok(other),
    }
}

/// A dense layer `W` after `op`: `W A` and `b + W c` for `op(x) = A x + c`, with `A` and
/// `c` of a batch norm (`k_c x + h_c` per channel) or an average pooling (the mean of a
/// window, so `W'[o, i] = sum over the windows holding i of W[o, window] / area`).
fn dense_after(
    outputs: usize,
    weight: &[f32],
    bias: &[f32],
    op: &Layer,
    input: Shape,
) -> (Vec<f32>, Vec<f32>) {
    let inputs = input.len();
    let before = weight.len() / outputs;
    let mut folded = vec![0.0f64; outputs * inputs];
    let mut bias: Vec<f64> = bias.iter().map(|&b| f64::from(b)).collect();
    let plane = input.height * input.width;
    match op {
        Layer::BatchNorm { .. } => {
            let (k, h) = op.batch_norm_affine().expect("a batch norm");
            for o in 0..outputs {
                for i in 0..inputs {
                    let w = f64::from(weight[o * before + i]);
                    folded[o * inputs + i] = w * k[i / plane];
                    bias[o] += w * h[i / plane];
                }
            }
        }
        Layer::AvgPool { kernel, stride } => {
            let out = input
                .after_window(input.channels, *kernel, *stride, [0, 0])
                .expect("the pooling fits its input");
            let area = (kernel[0] * kernel[1]) as f64;
            for o in 0..outputs {
                for c in 0..out.channels {
                    for py in 0..out.height {
                        for px in 0..out.width {
                            let w = f64::from(
                                weight[o * before + (c * out.height + py) * out.width + px],
                            ) / area;
                            for ky in 0..kernel[0] {
                                for kx in 0..kernel[1] {
                                    let y = py * stride[0] + ky;
                                    let x = px * stride[1] + kx;
                                    folded[o * inputs + c * plane + y * input.width + x] += w;
                                }
                            }
                        }
                    }
                }
            }
        }
        _ => unreachable!("only batch norms and pooling wait to be folded"),
    }
    (
        folded.into_iter().map(|w| w as f32).collect(),
        bias.into_iter().map(|b| b as f32).collect(),
    )
}

/// A convolution after `op`: after a batch norm (without padding, where the padded zeros
/// would not see the shift), `w k_c` and `b + sum w h_c`; after an average pooling of
/// kernel = stride `s` that tiles its input, a convolution of kernel `k s`, stride `t s`
/// and padding `p s` whose taps are `w / s^2` (each pooled value is the mean of an `s x s`
/// block).
fn conv_after(conv: Layer, op: &Layer, input: Shape) -> Result<Layer, String> {
    let Layer::Conv2d {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        weight,
        bias,
        weight_bits,
    } = conv
    else {
        unreachable!("conv_after folds into convolutions")
    };
    let taps = kernel[0] * kernel[1];
    match op {
        Layer::BatchNorm { .. } => {
            if padding != [0, 0] {
                return Err("a batch norm after an activation feeds a padded convolution: it cannot be folded exactly (put it before the activation)".into());
            }
            let (k, h) = op.batch_norm_affine().expect("a batch norm");
            let mut bias: Vec<f64> = bias.iter().map(|&b| f64::from(b)).collect();
            let weight = weight
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    let c = (i / taps) % in_channels;
                    bias[i / (taps * in_channels)] += f64::from(w) * h[c];
                    (f64::from(w) * k[c]) as f32
                })
                .collect();
            Ok(Layer::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                weight,
                bias: bias.into_iter().map(|b| b as f32).collect(),
                weight_bits,
            })
        }
        Layer::AvgPool {
            kernel: [sh, sw],
            stride: pool_stride,
        } if [*sh, *sw] == *pool_stride
            && input.height.is_multiple_of(*sh)
            && input.width.is_multiple_of(*sw) =>
        {
            let (sh, sw) = (*sh, *sw);
            let [kh, kw] = [kernel[0] * sh, kernel[1] * sw];
            let area = (sh * sw) as f32;
            let mut folded = vec![0.0f32; out_channels * in_channels * kh * kw];
            for (i, &w) in weight.iter().enumerate() {
                let (oc, ky, kx) = (i / taps, (i % taps) / kernel[1], i % kernel[1]);
                for a in 0..sh {
                    for b in 0..sw {
                        folded[(oc * kh + ky * sh + a) * kw + kx * sw + b] = w / area;
                    }
                }
            }
            Ok(Layer::Conv2d {
                in_channels,
                out_channels,
                kernel: [kh, kw],
                stride: [stride[0] * sh, stride[1] * sw],
                padding: [padding[0] * sh, padding[1] * sw],
                weight: folded,
                bias,
                weight_bits,
            })
        }
        other => Err(format!(
            "a {} after an activation before a convolution: hecnn folds only batch norms and pooling of kernel = stride that tiles its input there",
            other.kind()
        )),
    }
}
