//! Lowering passes over a model: each a small pure function that keeps the network's
//! function (up to float rounding) while moving it towards the integer circuit.

use crate::model::{Layer, ModelFile};

/// Folds every batch normalisation that directly follows a conv or dense layer into that
/// layer: with `k_c = gamma_c / sqrt(var_c + epsilon)`,
/// `W'_c = k_c W_c` and `b'_c = k_c (b_c - mean_c) + beta_c`.
///
/// Per-channel symmetric quantisation commutes with this per-channel scaling
/// (`round(k w / (|k| s)) = sign(k) round(w / s)`, ties to even being symmetric), so a
/// layer trained with quantised weights keeps exactly its function once folded.
/// Batch normalisations elsewhere are left in place.
pub fn fold_batch_norm(model: &ModelFile) -> ModelFile {
    let mut layers: Vec<Layer> = Vec::with_capacity(model.layers.len());
    for layer in &model.layers {
        if let (
            Layer::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                epsilon,
            },
            Some(Layer::Conv2d { weight, bias, .. } | Layer::Dense { weight, bias, .. }),
        ) = (layer, layers.last_mut())
        {
            let scale = |c: usize| f64::from(gamma[c]) / (f64::from(var[c]) + epsilon).sqrt();
            let shift = |c: usize, b: f32| {
                (scale(c) * (f64::from(b) - f64::from(mean[c])) + f64::from(beta[c])) as f32
            };
            let per_channel = weight.len() / bias.len();
            for (c, (row, b)) in weight
                .chunks_mut(per_channel)
                .zip(bias.iter_mut())
                .enumerate()
            {
                let k = scale(c);
                row.iter_mut().for_each(|w| *w = (f64::from(*w) * k) as f32);
                *b = shift(c, *b);
            }
            continue;
        }
        layers.push(layer.clone());
    }
    ModelFile {
        layers,
        ..model.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::quantize::BitWidth;
    use crate::reference::ReferenceModel;
    use crate::testing::{image, model_file, values};

    fn batch_norm(channels: usize, seed: u64) -> Layer {
        let v = values(seed, 4 * channels);
        Layer::BatchNorm {
            // Negative gammas included: the sign must fold too.
            gamma: v[..channels].iter().map(|g| 1.5 * g).collect(),
            beta: v[channels..2 * channels].to_vec(),
            mean: v[2 * channels..3 * channels].to_vec(),
            var: v[3 * channels..].iter().map(|x| x.abs() + 0.1).collect(),
            epsilon: 1e-5,
        }
    }

    /// A small CNN with batch norms after a conv and a dense layer, and one standing
    /// alone after pooling.
    fn model(weight_bits: Option<BitWidth>) -> ModelFile {
        model_file(vec![
            Layer::Conv2d {
                in_channels: 1,
                out_channels: 4,
                kernel: [3, 3],
                stride: [1, 1],
                padding: [1, 1],
                weight: values(1, 36),
                bias: values(2, 4),
                weight_bits,
            },
            batch_norm(4, 3),
            Layer::AvgPool {
                kernel: [2, 2],
                stride: [2, 2],
            },
            batch_norm(4, 4),
            Layer::Activation {
                function: Activation::Swish4 { range: 4.0 },
                output_quant: None,
            },
            Layer::Flatten,
            Layer::Dense {
                in_features: 64,
                out_features: 3,
                weight: values(5, 192),
                bias: values(6, 3),
                weight_bits,
            },
            batch_norm(3, 7),
        ])
    }

    #[test]
    fn folding_keeps_the_function() {
        for bits in [None, Some(BitWidth::new(3).unwrap())] {
            let original = model(bits);
            let folded = fold_batch_norm(&original);
            folded.validate("folded").unwrap();
            let kinds: Vec<&str> = folded.layers.iter().map(Layer::kind).collect();
            assert_eq!(
                kinds,
                [
                    "conv2d",
                    "avg-pool",
                    "batch-norm",
                    "activation",
                    "flatten",
                    "dense"
                ]
            );
            let (a, b) = (ReferenceModel::new(&original), ReferenceModel::new(&folded));
            for seed in 0..20 {
                let image = image(100 + seed);
                for (x, y) in a.logits(&image).iter().zip(b.logits(&image)) {
                    assert!(
                        (x - y).abs() < 1e-4 * (1.0 + x.abs()),
                        "{bits:?}: {x} vs {y}"
                    );
                }
            }
        }
    }
}
