//! Grouping a model's layers into circuit stages: the one place that decides which layer
//! orders a circuit can take.
//!
//! A stage is a conv or dense layer, optionally a batch norm (folded into it), optionally
//! non-overlapping average pooling after a convolution (fused into it), then either an
//! activation (one table read per value) or the end of the network (the logits). Flatten
//! layers between stages and before an activation are no-ops on the flat ciphertext list.

use hecnn_model::model::{Layer, ModelFile};

/// A model the circuit cannot take, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    /// A layer where the circuit cannot have it.
    #[error("layer {index} ({kind}): expected {expected}")]
    Order {
        /// Index of the layer.
        index: usize,
        /// Its kind.
        kind: &'static str,
        /// What the circuit can take there.
        expected: &'static str,
    },
    /// An activation whose outputs were not quantised in training.
    #[error("layer {index} (activation): its outputs were not quantised in training")]
    NotQuantised {
        /// Index of the activation.
        index: usize,
    },
    /// Trained ranges asked of an activation trained without a read grid.
    #[error("layer {index} (activation): it was not trained on a read grid")]
    NoGrid {
        /// Index of the activation.
        index: usize,
    },
    /// A read grid that does not match the layer feeding it.
    #[error("layer {index} (activation): its read grid does not match the layer before it")]
    UnlinkedGrid {
        /// Index of the activation.
        index: usize,
    },
    /// Table bits other than those the activation was trained on.
    #[error("layer {index} (activation): trained on {trained}-bit tables, compiled with {asked}")]
    LutBits {
        /// Index of the activation.
        index: usize,
        /// Bits it was trained with.
        trained: u32,
        /// Bits asked for.
        asked: u32,
    },
}

/// The layers of one stage, by index into the model's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageLayers {
    /// The conv or dense layer.
    pub linear: usize,
    /// The batch norm folded into it.
    pub batch_norm: Option<usize>,
    /// The average pooling fused into it.
    pub pool: Option<usize>,
    /// The activation read by the stage's tables; `None` for the logits.
    pub activation: Option<usize>,
    /// One past the stage's last layer.
    pub end: usize,
}

/// Groups `model`'s layers into stages, refusing orders the circuit cannot take.
pub fn group(model: &ModelFile) -> Result<Vec<StageLayers>, LowerError> {
    let layers = &model.layers;
    let order = |index: usize, expected| LowerError::Order {
        index,
        kind: layers[index].kind(),
        expected,
    };
    let skip_flatten = |mut index: usize| {
        while matches!(layers.get(index), Some(Layer::Flatten)) {
            index += 1;
        }
        index
    };
    let mut stages = Vec::new();
    let mut index = skip_flatten(0);
    while index < layers.len() {
        let linear = index;
        let is_conv = match &layers[linear] {
            Layer::Conv2d { .. } => true,
            Layer::Dense { .. } => false,
            _ => return Err(order(linear, "a conv2d or dense layer")),
        };
        let mut next = linear + 1;
        let batch_norm = matches!(layers.get(next), Some(Layer::BatchNorm { .. })).then_some(next);
        next += usize::from(batch_norm.is_some());
        let pool = match layers.get(next) {
            Some(Layer::AvgPool { kernel, stride }) if is_conv && kernel == stride => Some(next),
            Some(Layer::AvgPool { .. }) if is_conv => {
                return Err(order(next, "non-overlapping pooling (kernel = stride)"));
            }
            Some(Layer::AvgPool { .. }) => {
                return Err(order(next, "pooling only right after a convolution"));
            }
            _ => None,
        };
        next = skip_flatten(next + usize::from(pool.is_some()));
        let activation = match layers.get(next) {
            None => None,
            Some(Layer::Activation { output_quant, .. }) => {
                if output_quant.is_none() {
                    return Err(LowerError::NotQuantised { index: next });
                }
                Some(next)
            }
            Some(_) => return Err(order(next, "an activation or the end of the network")),
        };
        let end = activation.map_or(next, |a| a + 1);
        stages.push(StageLayers {
            linear,
            batch_norm,
            pool,
            activation,
            end,
        });
        index = skip_flatten(end);
        if activation.is_none() && index < layers.len() {
            return Err(order(index, "the end of the network after the logits"));
        }
    }
    if stages.is_empty() {
        return Err(LowerError::Order {
            index: 0,
            kind: "none",
            expected: "a conv2d or dense layer",
        });
    }
    Ok(stages)
}

/// How reports name a stage: its layers joined by `+`, activations by their function.
pub fn label(model: &ModelFile, stage: &StageLayers) -> String {
    model.layers[stage.linear..stage.end]
        .iter()
        .filter(|layer| !matches!(layer, Layer::Flatten))
        .map(|layer| match layer {
            Layer::Activation { function, .. } => function.name(),
            other => other.kind(),
        })
        .collect::<Vec<_>>()
        .join("+")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{batch_norm, conv3x3, model, model_file};

    #[test]
    fn the_test_model_has_a_table_stage_and_the_logits() {
        let model = model();
        let stages = group(&model).unwrap();
        assert_eq!(
            stages,
            vec![
                StageLayers {
                    linear: 0,
                    batch_norm: Some(1),
                    pool: Some(2),
                    activation: Some(3),
                    end: 4,
                },
                StageLayers {
                    linear: 5,
                    batch_norm: None,
                    pool: None,
                    activation: None,
                    end: 6,
                },
            ]
        );
        assert_eq!(
            label(&model, &stages[0]),
            "conv2d+batch-norm+avg-pool+quad-relu"
        );
    }

    #[test]
    fn unsupported_orders_are_refused_with_the_layer() {
        let mut unquantised = model();
        if let Layer::Activation { output_quant, .. } = &mut unquantised.layers[3] {
            *output_quant = None;
        }
        assert_eq!(
            group(&unquantised),
            Err(LowerError::NotQuantised { index: 3 })
        );

        let mut overlapping = model();
        overlapping.layers[2] = Layer::AvgPool {
            kernel: [2, 2],
            stride: [1, 1],
        };
        assert!(matches!(
            group(&overlapping),
            Err(LowerError::Order { index: 2, .. })
        ));

        // A batch norm after pooling cannot fold.
        let mut layers = model().layers;
        layers.insert(3, batch_norm(4, 9));
        assert!(matches!(
            group(&model_file(layers)),
            Err(LowerError::Order {
                index: 3,
                kind: "batch-norm",
                ..
            })
        ));

        // Layers after the logits.
        let mut layers = model().layers;
        layers.push(conv3x3(0, None));
        assert!(matches!(
            group(&model_file(layers)),
            Err(LowerError::Order { index: 6, .. })
        ));
    }
}
