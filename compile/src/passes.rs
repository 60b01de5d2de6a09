//! Lowering passes over a model: each a small pure function that keeps the network's
//! function (up to float rounding) while moving it towards the integer circuit.

use crate::model::{Layer, ModelFile};

/// Folds every batch normalisation that directly follows a conv or dense layer into that
/// layer: with the normalisation's `y = k_c x + h_c` ([`Layer::batch_norm_affine`]),
/// `W'_c = k_c W_c` and `b'_c = k_c b_c + h_c`.
///
/// Per-channel symmetric quantisation commutes with this per-channel scaling
/// (`round(k w / (|k| s)) = sign(k) round(w / s)`, ties to even being symmetric), so a
/// layer trained with quantised weights keeps exactly its function once folded.
/// Batch normalisations elsewhere are left in place.
pub fn fold_batch_norm(model: &ModelFile) -> ModelFile {
    let mut layers: Vec<Layer> = Vec::with_capacity(model.layers.len());
    for layer in &model.layers {
        if let (
            Some((scale, shift)),
            Some(Layer::Conv2d { weight, bias, .. } | Layer::Dense { weight, bias, .. }),
        ) = (layer.batch_norm_affine(), layers.last_mut())
        {
            let per_channel = weight.len() / bias.len();
            for ((row, b), (k, h)) in weight
                .chunks_mut(per_channel)
                .zip(bias.iter_mut())
                .zip(scale.iter().zip(&shift))
            {
                row.iter_mut().for_each(|w| *w = (f64::from(*w) * k) as f32);
                *b = (k * f64::from(*b) + h) as f32;
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
    use crate::testing::{batch_norm, conv3x3, image, model_file, values};

    /// A small CNN with batch norms after a conv and a dense layer, and one standing
    /// alone after pooling.
    fn model(weight_bits: Option<BitWidth>) -> ModelFile {
        model_file(vec![
            conv3x3(1, weight_bits),
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
