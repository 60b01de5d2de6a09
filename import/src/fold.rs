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
fn conv_after(mut conv: Layer, op: &Layer, input: Shape) -> Result<Layer, String> {
    let Layer::Conv2d {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        weight,
        bias,
        ..
    } = &mut conv
    else {
        unreachable!("conv_after folds into convolutions")
    };
    let (in_channels, out_channels) = (*in_channels, *out_channels);
    let taps = kernel[0] * kernel[1];
    (*weight, *bias, *kernel, *stride, *padding) = match op {
        Layer::BatchNorm { .. } => {
            if *padding != [0, 0] {
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
            let bias = bias.into_iter().map(|b| b as f32).collect();
            (weight, bias, *kernel, *stride, *padding)
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
            let stride = [stride[0] * sh, stride[1] * sw];
            (
                folded,
                std::mem::take(bias),
                [kh, kw],
                stride,
                [padding[0] * sh, padding[1] * sw],
            )
        }
        other => {
            return Err(format!(
                "a {} after an activation before a convolution: hecnn folds only batch norms and pooling of kernel = stride that tiles its input there",
                other.kind()
            ));
        }
    };
    Ok(conv)
}

#[cfg(test)]
mod tests {
    use hecnn_compile::reference::ReferenceModel;
    use hecnn_compile::testing::{batch_norm, model_file, values};
    use hecnn_model::activation::Activation;

    use super::*;

    fn conv(in_channels: usize, out_channels: usize, padding: usize, seed: u64) -> Layer {
        Layer::Conv2d {
            in_channels,
            out_channels,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [padding; 2],
            weight: values(seed, out_channels * in_channels * 9),
            bias: values(seed + 1, out_channels),
            weight_bits: None,
        }
    }

    fn activation() -> Layer {
        Layer::Activation {
            function: Activation::Square,
            output_quant: None,
            input_grid: None,
        }
    }

    const POOL: Layer = Layer::AvgPool {
        kernel: [2, 2],
        stride: [2, 2],
    };

    /// The input of [`model_file`]'s models.
    const INPUT: Shape = Shape {
        channels: 1,
        height: 8,
        width: 8,
    };

    #[test]
    fn folded_layers_compute_the_same_logits() {
        // conv -> square -> pool -> bn -> conv (no padding) -> square -> pool -> bn ->
        // flatten -> dense: both pool + bn runs fold, into the conv and into the dense.
        let layers = vec![
            conv(1, 2, 1, 1),
            activation(),
            POOL,
            batch_norm(2, 3),
            conv(2, 3, 0, 5),
            activation(),
            POOL,
            batch_norm(3, 7),
            Layer::Flatten,
            Layer::Dense {
                in_features: 3,
                out_features: 3,
                weight: values(9, 9),
                bias: values(10, 3),
                weight_bits: None,
            },
        ];
        let original = model_file(layers.clone());
        original.validate("original").unwrap();
        let mut notes = Vec::new();
        let folded = model_file(fold_after_activations(layers, INPUT, &mut notes).unwrap());
        folded.validate("folded").unwrap();
        let kinds: Vec<_> = folded.layers.iter().map(Layer::kind).collect();
        assert_eq!(
            kinds,
            [
                "conv2d",
                "activation",
                "conv2d",
                "activation",
                "flatten",
                "dense"
            ]
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        let (before, after) = (ReferenceModel::new(&original), ReferenceModel::new(&folded));
        for seed in 0..5 {
            let image: Vec<u8> = values(100 + seed, 64)
                .iter()
                .map(|v| ((v + 1.0) * 127.0) as u8)
                .collect();
            for (a, b) in before.logits(&image).iter().zip(after.logits(&image)) {
                assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} against {b}");
            }
        }
    }

    #[test]
    fn what_cannot_fold_exactly_is_refused() {
        let refuse = |layers: Vec<Layer>| {
            fold_after_activations(layers, INPUT, &mut Vec::new()).unwrap_err()
        };
        // A batch norm before a padded convolution: the padding would not see its shift.
        let error = refuse(vec![
            conv(1, 2, 1, 1),
            activation(),
            batch_norm(2, 3),
            conv(2, 3, 1, 5),
        ]);
        assert!(error.contains("padded convolution"), "{error}");
        // Pooling that does not tile its input (8 is not a multiple of 5).
        let uneven = Layer::AvgPool {
            kernel: [5, 5],
            stride: [5, 5],
        };
        let error = refuse(vec![
            conv(1, 2, 1, 1),
            activation(),
            uneven,
            conv(2, 3, 1, 5),
        ]);
        assert!(error.contains("tiles its input"), "{error}");
        // Between two activations there is nothing to fold into.
        let error = refuse(vec![conv(1, 2, 1, 1), activation(), POOL, activation()]);
        assert!(error.contains("between two activations"), "{error}");
    }
}
