//! Knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the knowledge in a
//! neural network"): the student learns the labels and also a stronger teacher's softened
//! class probabilities, which carry how alike the classes look to the teacher. A network
//! held to a table-read budget has few activations; a teacher without that limit (a float
//! model of any architecture the trainer knows) passes on more than the labels alone do.

use burn::nn::loss::{KLDivLoss, KLDivLossConfig, Reduction};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use hecnn_model::model::ModelFile;
use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::network::{Network, input_tensor};

/// Share of the loss given to the teacher by default (`alpha`).
pub const DEFAULT_DISTILL_WEIGHT: f64 = 0.5;
/// Softmax temperature of distillation by default (`T`).
pub const DEFAULT_TEMPERATURE: f64 = 4.0;

/// What the student learns from a teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distillation {
    /// The teacher: a model file, evaluated as it is (inference mode, never trained).
    pub teacher: ModelFile,
    /// `alpha` in `(1 - alpha) CE(labels) + alpha T^2 KL(teacher || student)`, in (0, 1].
    pub weight: f64,
    /// `T`, dividing both networks' logits before the softmax; at least 1.
    pub temperature: f64,
}

impl Distillation {
    /// Checks the settings and that the teacher reads `image_len` pixels and scores
    /// `classes` classes, as the student does.
    pub fn validate(&self, image_len: usize, classes: usize) -> Result<(), ConfigError> {
        if !(self.weight > 0.0 && self.weight <= 1.0) {
            return Err(ConfigError::DistillWeight(self.weight));
        }
        if !(self.temperature >= 1.0 && self.temperature <= 100.0) {
            return Err(ConfigError::Temperature(self.temperature));
        }
        if self.teacher.input.shape.len() != image_len {
            return Err(ConfigError::TeacherInput {
                teacher: self.teacher.input.shape,
                images: image_len,
            });
        }
        if self.teacher.class_names.len() != classes {
            return Err(ConfigError::TeacherClasses {
                teacher: self.teacher.class_names.len(),
                student: classes,
            });
        }
        Ok(())
    }
}

/// A teacher ready to score training batches.
pub(crate) struct Teacher {
    network: Network,
    /// `KL(p_t || p_s)` from log-probabilities, averaged over the batch.
    divergence: KLDivLoss,
    device: Device,
    weight: f64,
    temperature: f64,
}

impl Teacher {
    /// The teacher of `distillation`, on the plain (no autodiff) `device`, so that it runs
    /// in inference mode and takes no part in the student's backward pass.
    pub(crate) fn new(distillation: &Distillation, device: &Device) -> Self {
        Self {
            network: Network::from_model_file(&distillation.teacher, device),
            divergence: KLDivLossConfig::new().with_log_target(true).init(),
            device: device.clone(),
            weight: distillation.weight,
            temperature: distillation.temperature,
        }
    }

    /// The student's loss on a batch of `pixels` (raw bytes, as the student read them),
    /// from its hard-label loss `hard` and its `logits` (on the training device):
    /// `(1 - alpha) hard + alpha T^2 KL(p_t || p_s)`, with `p = softmax(logits / T)` and
    /// `KL(p_t || p_s) = sum_c p_t(c) (log p_t(c) - log p_s(c))` averaged over the batch.
    /// The factor `T^2` keeps the soft gradients, which shrink as `1 / T^2`, on the scale of
    /// the hard ones (Hinton et al., section 2). The teacher's term `p_t log p_t` is a
    /// constant that leaves the gradient alone; it is kept so that the soft part of the
    /// loss printed is 0 when the student matches the teacher.
    pub(crate) fn loss(&self, hard: Tensor<1>, logits: Tensor<2>, pixels: &[u8]) -> Tensor<1> {
        let t = self.temperature;
        let teacher_logits =
            self.network
                .forward(input_tensor(self.network.input(), pixels, &self.device));
        let teacher_log_p = Tensor::<2>::from_data(
            log_softmax(teacher_logits.div_scalar(t), 1).into_data(),
            &logits.device(),
        );
        let soft = self
            .divergence
            .forward(
                log_softmax(logits.div_scalar(t), 1),
                teacher_log_p,
                Reduction::BatchMean,
            )
            .mul_scalar(t * t);
        hard.mul_scalar(1.0 - self.weight) + soft.mul_scalar(self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::architecture::Architecture;
    use hecnn_model::activation::Activation;
    use hecnn_model::model::{InputSpec, Shape};

    fn input() -> InputSpec {
        InputSpec {
            shape: Shape {
                channels: 1,
                height: 4,
                width: 4,
            },
            mean: 0.5,
            std: 0.25,
        }
    }

    fn teacher(device: &Device) -> ModelFile {
        let classes: Vec<String> = (0..10).map(|c| c.to_string()).collect();
        let architecture = Architecture::named("mlp").unwrap();
        Network::new(
            &architecture,
            input(),
            classes,
            &Activation::Relu,
            None,
            None,
            device,
        )
        .unwrap()
        .export("test", None)
    }

    #[test]
    fn the_soft_loss_is_the_temperature_scaled_divergence_from_the_teachers_softmax() {
        let device = Device::flex();
        let model = teacher(&device);
        let distillation = Distillation {
            teacher: model.clone(),
            weight: 0.25,
            temperature: 2.0,
        };
        let teacher = Teacher::new(&distillation, &device);
        let pixels: Vec<u8> = (0..32).map(|i| (i * 7 % 256) as u8).collect();
        let student: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let logits = Tensor::<2>::from_data(TensorData::new(student.clone(), [2, 10]), &device);
        let hard = Tensor::<1>::from_data(TensorData::new(vec![0.8f32], [1]), &device);
        let loss: f32 = teacher.loss(hard, logits, &pixels).into_scalar();

        // The same formula by hand, from the teacher's own logits.
        let network = Network::from_model_file(&model, &device);
        let t_logits: Vec<f32> = network
            .forward(input_tensor(&input(), &pixels, &device))
            .into_data()
            .try_to_vec()
            .unwrap();
        let softmax_row = |row: &[f32], t: f32| -> Vec<f32> {
            let exps: Vec<f32> = row.iter().map(|v| (v / t).exp()).collect();
            let total: f32 = exps.iter().sum();
            exps.iter().map(|e| e / total).collect()
        };
        let mut divergence = 0.0;
        for (t_row, s_row) in t_logits.chunks(10).zip(student.chunks(10)) {
            let (p_t, p_s) = (softmax_row(t_row, 2.0), softmax_row(s_row, 2.0));
            divergence += p_t
                .iter()
                .zip(&p_s)
                .map(|(p, q)| p * (p.ln() - q.ln()))
                .sum::<f32>();
        }
        let expected = 0.75 * 0.8 + 0.25 * 4.0 * divergence / 2.0;
        assert!(
            (loss - expected).abs() < 1e-4,
            "loss {loss}, expected {expected}"
        );
        // A student that scores as the teacher does pays the hard loss alone.
        let same = Tensor::<2>::from_data(TensorData::new(t_logits, [2, 10]), &device);
        let hard = Tensor::<1>::from_data(TensorData::new(vec![0.8f32], [1]), &device);
        let loss: f32 = teacher.loss(hard, same, &pixels).into_scalar();
        assert!((loss - 0.75 * 0.8).abs() < 1e-5, "loss {loss}");
    }

    #[test]
    fn a_teacher_for_other_images_or_classes_or_out_of_range_settings_is_refused() {
        let model = teacher(&Device::flex());
        let good = Distillation {
            teacher: model,
            weight: DEFAULT_DISTILL_WEIGHT,
            temperature: DEFAULT_TEMPERATURE,
        };
        assert_eq!(good.validate(16, 10), Ok(()));
        assert!(matches!(
            good.validate(784, 10),
            Err(ConfigError::TeacherInput { images: 784, .. })
        ));
        assert_eq!(
            good.validate(16, 3),
            Err(ConfigError::TeacherClasses {
                teacher: 10,
                student: 3
            })
        );
        let with = |weight, temperature| Distillation {
            weight,
            temperature,
            ..good.clone()
        };
        assert_eq!(
            with(0.0, 4.0).validate(16, 10),
            Err(ConfigError::DistillWeight(0.0))
        );
        assert_eq!(
            with(0.5, 0.5).validate(16, 10),
            Err(ConfigError::Temperature(0.5))
        );
    }
}
