//! The training loop: AdamW (decoupled weight decay) with a linear warm-up and a cosine
//! learning-rate schedule, label smoothing, distillation from a teacher, shift and flip
//! augmentation, validation after each epoch, checkpoints to resume from, and export of the
//! model file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use hecnn_datasets::LabelledImages;
use hecnn_model::activation::Activation;
use hecnn_model::io::{read_limited, write_atomic};
use hecnn_model::model::{InputSpec, ModelFile, Shape, TrainingSummary};
use hecnn_model::quantize::QuantSettings;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::architecture::Architecture;
use crate::distill::{Distillation, Teacher};
use crate::network::{CircuitTraining, Network, input_tensor};
use crate::{ConfigError, TrainError};

/// Passes over the training data by default.
pub const DEFAULT_EPOCHS: usize = 10;
/// Images per optimiser step by default.
pub const DEFAULT_BATCH_SIZE: usize = 64;
/// Initial learning rate by default.
pub const DEFAULT_LEARNING_RATE: f64 = 3e-3;
/// Seed by default.
pub const DEFAULT_SEED: u64 = 1;
/// Augmentation shift by default, in pixels.
pub const DEFAULT_MAX_SHIFT: usize = 1;
/// Decoupled weight decay by default (per unit of learning rate, as in AdamW).
pub const DEFAULT_WEIGHT_DECAY: f64 = 0.0;
/// Warm-up by default, as a share of the run's steps (one epoch of twenty).
pub const DEFAULT_WARMUP: f64 = 0.05;
/// Label smoothing by default.
pub const DEFAULT_LABEL_SMOOTHING: f64 = 0.0;

/// Learning rate at the end of the cosine schedule, relative to the initial one.
const FINAL_LR_FRACTION: f64 = 0.01;
/// Largest checkpoint file accepted.
const MAX_CHECKPOINT_BYTES: u64 = 1 << 30;
/// Images per forward pass when evaluating.
const EVAL_BATCH: usize = 1000;

/// Everything that determines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network.
    pub architecture: Architecture,
    /// The activation at every activation layer.
    pub activation: Activation,
    /// Quantisation-aware training, if wanted.
    pub quant: Option<QuantSettings>,
    /// Circuit-aware training (with `quant`): activations read on their tables' grids.
    pub circuit: Option<CircuitTraining>,
    /// A model to start from instead of a fresh `architecture` (whose layers, weights and
    /// activations it brings; `architecture` and `activation` are then unused).
    pub init: Option<ModelFile>,
    /// A teacher to distil from, if any.
    #[serde(default)]
    pub distillation: Option<Distillation>,
    /// Passes over the training data.
    pub epochs: usize,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// Peak AdamW learning rate, reached after the warm-up and decayed along a cosine to 1%
    /// of itself.
    pub learning_rate: f64,
    /// Decoupled weight decay: every step multiplies each parameter by
    /// `1 - learning_rate * weight_decay` (Loshchilov and Hutter, AdamW).
    #[serde(default)]
    pub weight_decay: f64,
    /// Share of the run's optimiser steps over which the learning rate rises linearly from
    /// 0 (`warmup_ratio` in other trainers).
    #[serde(default)]
    pub warmup: f64,
    /// Label smoothing `eps`: the target puts `1 - eps` on the label and spreads `eps`
    /// over all classes.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
    /// Data augmentation: each training image is shifted by up to this many pixels in
    /// each direction (0: none).
    pub max_shift: usize,
    /// Data augmentation: each training image is mirrored left-right with probability 1/2
    /// (for data whose classes are mirror-symmetric, such as clothing; not for digits).
    #[serde(default)]
    pub flip: bool,
}

impl TrainConfig {
    /// A float run of `architecture` with `activation` and the default settings.
    pub fn new(architecture: Architecture, activation: Activation) -> Self {
        Self {
            architecture,
            activation,
            quant: None,
            circuit: None,
            init: None,
            distillation: None,
            epochs: DEFAULT_EPOCHS,
            batch_size: DEFAULT_BATCH_SIZE,
            learning_rate: DEFAULT_LEARNING_RATE,
            weight_decay: DEFAULT_WEIGHT_DECAY,
            warmup: DEFAULT_WARMUP,
            label_smoothing: DEFAULT_LABEL_SMOOTHING,
            seed: DEFAULT_SEED,
            max_shift: DEFAULT_MAX_SHIFT,
            flip: false,
        }
    }

    /// Checks the numeric settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.epochs == 0 {
            return Err(ConfigError::NoEpochs);
        }
        if self.batch_size == 0 {
            return Err(ConfigError::NoBatch);
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(ConfigError::LearningRate(self.learning_rate));
        }
        if !(0.0..1.0).contains(&self.weight_decay) {
            return Err(ConfigError::WeightDecay(self.weight_decay));
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return Err(ConfigError::Warmup(self.warmup));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(ConfigError::LabelSmoothing(self.label_smoothing));
        }
        if self
            .quant
            .as_ref()
            .is_some_and(|q| q.weight_bits.is_empty())
        {
            return Err(ConfigError::NoWeightBits);
        }
        if let Some(circuit) = &self.circuit {
            if self.quant.is_none() {
                return Err(ConfigError::CircuitWithoutQuantisation);
            }
            if circuit.lut_bits.is_empty() {
                return Err(ConfigError::NoTableBits);
            }
            if circuit.read_noise.is_empty() {
                return Err(ConfigError::NoReadNoise);
            }
            if let Some(&noise) = circuit
                .read_noise
                .iter()
                .find(|&&noise| !(0.0..8.0).contains(&noise))
            {
                return Err(ConfigError::ReadNoise(noise));
            }
        }
        Ok(self.activation.validate()?)
    }

    /// Learning rate at optimiser step `step` of `total`, with `w = warmup total` warm-up
    /// steps: `lr (step + 1) / w` during the warm-up, then
    /// `lr_min + (lr - lr_min) (1 + cos(pi (step - w) / (total - w))) / 2`.
    pub fn learning_rate_at(&self, step: usize, total: usize) -> f64 {
        let warmup = (self.warmup * total as f64) as usize;
        if step < warmup {
            return self.learning_rate * (step + 1) as f64 / warmup as f64;
        }
        let min = self.learning_rate * FINAL_LR_FRACTION;
        let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
        min + (self.learning_rate - min) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
    }
}

/// What one epoch achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Accuracy on the training batches, as they were seen.
    pub train_accuracy: f64,
    /// Accuracy on the validation split.
    pub validation_accuracy: f64,
    /// Seconds the epoch took.
    pub seconds: f64,
}

/// Told how training advances (the CLI draws a progress bar per epoch from it).
pub trait TrainingProgress {
    /// Epoch `epoch` (from 1) of `epochs` starts, over `images` training images.
    fn epoch_started(&mut self, _epoch: usize, _epochs: usize, _images: usize) {}
    /// A batch of `images` is done; `loss` and `accuracy` are the epoch's so far.
    fn batch_done(&mut self, _images: usize, _loss: f64, _accuracy: f64) {}
    /// The epoch is done and validated.
    fn epoch_finished(&mut self, _report: &EpochReport) {}
}

/// Reports nothing.
pub struct Quiet;

impl TrainingProgress for Quiet {}

/// Where checkpoints go, and whether to resume from one.
#[derive(Debug, Clone, Default)]
pub struct Checkpointing {
    /// Folder of the checkpoint (written after each epoch), if any.
    pub dir: Option<PathBuf>,
    /// Continue from the checkpoint in `dir`.
    pub resume: bool,
}

/// The state that lets a run continue: written last, so it names only complete files.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    input: InputSpec,
    history: Vec<EpochReport>,
}

const STATE_FILE: &str = "state.json";
const MODEL_FILE: &str = "model.bpk";
const OPTIMIZER_FILE: &str = "optimizer.bpk";

/// A finished run.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The exported model.
    pub model: ModelFile,
    /// One report per epoch (resumed epochs included).
    pub history: Vec<EpochReport>,
    /// Minutes spent in this process.
    pub minutes: f64,
}

/// Input normalisation from the training pixels: `mean` and `std` of `pixel / 255`.
pub fn normalisation(train: &LabelledImages) -> InputSpec {
    let n = train.pixels.len() as f64;
    let (sum, sum_sq) = train.pixels.iter().fold((0.0, 0.0), |(s, q), &p| {
        let v = f64::from(p) / 255.0;
        (s + v, q + v * v)
    });
    let mean = sum / n;
    let std = (sum_sq / n - mean * mean).max(1e-12).sqrt();
    InputSpec {
        shape: Shape {
            channels: 1,
            height: train.rows,
            width: train.cols,
        },
        mean,
        std,
    }
}

/// How many rows of `logits` have their largest value at the matching label.
fn count_correct(logits: Tensor<2>, labels: impl Iterator<Item = i64>) -> usize {
    let predictions: Vec<i64> = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec()
        .expect("argmax yields integers");
    predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == *l)
        .count()
}

/// Accuracy of `network` on `data` (in inference mode, batch by batch).
pub fn accuracy(network: &Network, data: &LabelledImages, device: &Device) -> f64 {
    let valid = network.valid();
    let n = data.image_len();
    let mut correct = 0usize;
    for (pixels, labels) in data
        .pixels
        .chunks(EVAL_BATCH * n)
        .zip(data.labels.chunks(EVAL_BATCH))
    {
        let logits = valid.forward(input_tensor(network.input(), pixels, device));
        correct += count_correct(logits, labels.iter().map(|&l| i64::from(l)));
    }
    correct as f64 / data.len().max(1) as f64
}

fn record_error(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Trains on `train`, validating on `validation` after every epoch, and exports the model;
/// `progress` hears each epoch and batch.
pub fn train(
    config: &TrainConfig,
    train: &LabelledImages,
    validation: &LabelledImages,
    dataset: &str,
    checkpointing: &Checkpointing,
    progress: &mut dyn TrainingProgress,
) -> Result<TrainOutcome, TrainError> {
    config.validate()?;
    if train.is_empty() {
        return Err(ConfigError::EmptyTrainingSet.into());
    }
    let started = Instant::now();
    let plain = Device::flex();
    let device = plain.clone().autodiff();
    device.seed(config.seed);

    let resumed = match (&checkpointing.dir, checkpointing.resume) {
        (Some(dir), true) => Some(load_state(dir, config)?),
        (None, true) => return Err(ConfigError::ResumeWithoutCheckpoint.into()),
        _ => None,
    };
    let (input, network) = initial_network(config, train, resumed.as_ref(), &device)?;
    if let Some(distillation) = &config.distillation {
        distillation.validate(train.image_len(), network.classes())?;
    }
    let optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .init();
    let (mut network, mut optimizer, mut history) = match (resumed, &checkpointing.dir) {
        (Some(state), Some(dir)) => {
            let (network, optimizer) = load_checkpoint(dir, network, optimizer)?;
            (network, optimizer, state.history)
        }
        _ => (network, optimizer, Vec::new()),
    };

    let loss_fn = CrossEntropyLossConfig::new()
        .with_smoothing((config.label_smoothing > 0.0).then_some(config.label_smoothing as f32))
        .init(&device);
    let batches = Batches {
        config,
        train,
        input: &input,
        loss_fn: &loss_fn,
        teacher: config
            .distillation
            .as_ref()
            .map(|distillation| Teacher::new(distillation, &plain)),
        device: &device,
    };
    for epoch in history.len()..config.epochs {
        let epoch_started = Instant::now();
        let mut rng = StdRng::seed_from_u64(config.seed.wrapping_add(epoch as u64));
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        progress.epoch_started(epoch + 1, config.epochs, train.len());
        let (trained, loss, train_accuracy) =
            batches.run_epoch(epoch, &order, &mut rng, network, &mut optimizer, progress)?;
        network = trained;
        network.settle_accumulator_steps();
        let report = EpochReport {
            epoch: epoch + 1,
            loss,
            train_accuracy,
            validation_accuracy: accuracy(&network, validation, &plain),
            seconds: epoch_started.elapsed().as_secs_f64(),
        };
        progress.epoch_finished(&report);
        history.push(report);
        if let Some(dir) = &checkpointing.dir {
            save_checkpoint(dir, config, input, &history, &network, &optimizer)?;
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let summary = TrainingSummary {
        epochs: config.epochs,
        seed: config.seed,
        validation_accuracy: history.last().map_or(0.0, |r| r.validation_accuracy),
        minutes: history.iter().map(|r| r.seconds).sum::<f64>() / 60.0,
    };
    Ok(TrainOutcome {
        model: network.valid().export(dataset, Some(summary)),
        history,
        minutes,
    })
}

/// The network a run starts from: the initial model's (fine-tuning), or a fresh one of the
/// architecture, normalised on the training images (or as the resumed run was).
fn initial_network(
    config: &TrainConfig,
    train: &LabelledImages,
    resumed: Option<&CheckpointState>,
    device: &Device,
) -> Result<(InputSpec, Network), TrainError> {
    match &config.init {
        Some(model) => {
            if model.input.shape.len() != train.image_len() {
                return Err(ConfigError::InitialInput {
                    model: model.input.shape,
                    images: train.image_len(),
                }
                .into());
            }
            let network = Network::fine_tuned(
                model,
                config.quant.as_ref(),
                config.circuit.as_ref(),
                device,
            );
            Ok((model.input, network))
        }
        None => {
            let input = resumed.map_or_else(|| normalisation(train), |s| s.input);
            let network = Network::new(
                &config.architecture,
                input,
                train.class_names.clone(),
                &config.activation,
                config.quant.as_ref(),
                config.circuit.as_ref(),
                device,
            )?;
            Ok((input, network))
        }
    }
}

/// The network's and the optimiser's state from the checkpoint in `dir`.
fn load_checkpoint(
    dir: &Path,
    network: Network,
    optimizer: ModuleOptimizer,
) -> Result<(Network, ModuleOptimizer), TrainError> {
    let read = |name: &str| -> Result<Bytes, TrainError> {
        let path = dir.join(name);
        Ok(Bytes::from_bytes_vec(read_limited(
            &path,
            MAX_CHECKPOINT_BYTES,
        )?))
    };
    let model_path = dir.join(MODEL_FILE);
    let record = ModuleRecord::from_bytes(read(MODEL_FILE)?)
        .map_err(|e| record_error(&model_path, format!("{e:?}")))?;
    let network = network
        .try_load_record(record)
        .map_err(|e| record_error(&model_path, format!("{e:?}")))?;
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let optimizer = optimizer
        .from_bytes(read(OPTIMIZER_FILE)?)
        .map_err(|e| record_error(&optimizer_path, format!("{e:?}")))?;
    Ok((network, optimizer))
}

/// What every optimiser step of a run uses.
struct Batches<'a> {
    config: &'a TrainConfig,
    train: &'a LabelledImages,
    input: &'a InputSpec,
    loss_fn: &'a CrossEntropyLoss,
    teacher: Option<Teacher>,
    device: &'a Device,
}

impl Batches<'_> {
    /// Trains `network` on every batch of epoch `epoch` (from 0), the training images taken
    /// in `order` and augmented with `rng`; the network, the epoch's mean loss and its
    /// training accuracy.
    fn run_epoch(
        &self,
        epoch: usize,
        order: &[usize],
        rng: &mut StdRng,
        mut network: Network,
        optimizer: &mut ModuleOptimizer,
        progress: &mut dyn TrainingProgress,
    ) -> Result<(Network, f64, f64), TrainError> {
        let (config, train) = (self.config, self.train);
        let steps_per_epoch = train.len().div_ceil(config.batch_size);
        let total_steps = steps_per_epoch * config.epochs;
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        for (step, batch) in order.chunks(config.batch_size).enumerate() {
            let mut pixels = Vec::with_capacity(batch.len() * train.image_len());
            for &i in batch {
                let shift = config.max_shift as i64;
                let (dx, dy) = (
                    rng.random_range(-shift..=shift),
                    rng.random_range(-shift..=shift),
                );
                let mirrored = config.flip && rng.random_bool(0.5);
                extend_augmented(&mut pixels, train.image(i), train.cols, (dx, dy), mirrored);
            }
            let labels: Vec<i64> = batch.iter().map(|&i| i64::from(train.labels[i])).collect();
            let targets = Tensor::<1, Int>::from_data(
                TensorData::new(labels.clone(), [batch.len()]),
                self.device,
            );
            let logits = network.forward(input_tensor(self.input, &pixels, self.device));
            let loss = self.loss_fn.forward(logits.clone(), targets);
            let loss = match &self.teacher {
                Some(teacher) => teacher.loss(loss, logits.clone(), &pixels),
                None => loss,
            };
            let loss_value = f64::from(loss.clone().into_scalar::<f32>());
            if !loss_value.is_finite() {
                return Err(TrainError::Diverged { epoch: epoch + 1 });
            }
            correct += count_correct(logits, labels.iter().copied());
            seen += batch.len();
            loss_sum += loss_value * batch.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &network);
            let lr = config.learning_rate_at(epoch * steps_per_epoch + step, total_steps);
            network = optimizer.step(lr, network, grads);
            progress.batch_done(
                batch.len(),
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
            );
        }
        Ok((
            network,
            loss_sum / seen as f64,
            correct as f64 / seen as f64,
        ))
    }
}

/// Appends `image` (`cols` wide) moved by `(dx, dy)` pixels and, if `mirrored`, flipped
/// left-right (before the move), filling with background.
fn extend_augmented(
    out: &mut Vec<u8>,
    image: &[u8],
    cols: usize,
    (dx, dy): (i64, i64),
    mirrored: bool,
) {
    let rows = image.len() / cols;
    let width = cols as i64;
    for y in 0..rows as i64 {
        for x in 0..width {
            let (sx, sy) = (x - dx, y - dy);
            let inside = (0..width).contains(&sx) && (0..rows as i64).contains(&sy);
            let sx = if mirrored { width - 1 - sx } else { sx };
            out.push(if inside {
                image[(sy * width + sx) as usize]
            } else {
                0
            });
        }
    }
}

fn save_checkpoint(
    dir: &Path,
    config: &TrainConfig,
    input: InputSpec,
    history: &[EpochReport],
    network: &Network,
    optimizer: &burn::optim::ModuleOptimizer,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| record_error(dir, e))?;
    let model_bytes = network
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| record_error(&dir.join(MODEL_FILE), format!("{e:?}")))?;
    write_atomic(&dir.join(MODEL_FILE), &model_bytes)?;
    let optimizer_bytes = optimizer
        .into_bytes()
        .map_err(|e| record_error(&dir.join(OPTIMIZER_FILE), format!("{e:?}")))?;
    write_atomic(&dir.join(OPTIMIZER_FILE), &optimizer_bytes)?;
    let state = CheckpointState {
        config: config.clone(),
        input,
        history: history.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&state).expect("state serialises");
    write_atomic(&dir.join(STATE_FILE), &json)?;
    Ok(())
}

fn load_state(dir: &Path, config: &TrainConfig) -> Result<CheckpointState, TrainError> {
    let path = dir.join(STATE_FILE);
    let bytes = read_limited(&path, MAX_CHECKPOINT_BYTES)?;
    let state: CheckpointState =
        serde_json::from_slice(&bytes).map_err(|e| record_error(&path, e))?;
    let mut same_run = state.config.clone();
    same_run.epochs = config.epochs;
    if same_run != *config {
        return Err(record_error(
            &path,
            "the checkpoint is of another run (architecture, activation, quantisation, batch size, learning rate or seed differ); only the number of epochs may change when resuming",
        ));
    }
    if state.history.len() > config.epochs {
        return Err(record_error(
            &path,
            format!(
                "already {} epochs done, more than the {} asked",
                state.history.len(),
                config.epochs
            ),
        ));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augmentation_moves_and_mirrors_pixels_and_fills_background() {
        let image: Vec<u8> = (1..=9).collect();
        let augmented = |shift, mirrored| {
            let mut out = Vec::new();
            extend_augmented(&mut out, &image, 3, shift, mirrored);
            out
        };
        assert_eq!(augmented((1, -1), false), vec![0, 4, 5, 0, 7, 8, 0, 0, 0]);
        assert_eq!(augmented((0, 0), false), image);
        assert_eq!(augmented((0, 0), true), vec![3, 2, 1, 6, 5, 4, 9, 8, 7]);
        assert_eq!(augmented((1, 0), true), vec![0, 3, 2, 0, 6, 5, 0, 9, 8]);
    }

    #[test]
    fn schedule_warms_up_then_decays_along_a_cosine_to_one_percent() {
        let mut config = TrainConfig {
            learning_rate: 0.1,
            warmup: 0.0,
            ..TrainConfig::new(Architecture::named("mlp").unwrap(), Activation::Relu)
        };
        assert!((config.learning_rate_at(0, 100) - 0.1).abs() < 1e-12);
        assert!((config.learning_rate_at(50, 100) - 0.0505).abs() < 1e-12);
        assert!((config.learning_rate_at(100, 100) - 0.001).abs() < 1e-12);
        // A quarter of the run: the first 25 of 100 steps ramp up, 75 decay.
        config.warmup = 0.25;
        assert!((config.learning_rate_at(0, 100) - 0.004).abs() < 1e-12);
        assert!((config.learning_rate_at(24, 100) - 0.1).abs() < 1e-12);
        assert!((config.learning_rate_at(25, 100) - 0.1).abs() < 1e-12);
        assert!((config.learning_rate_at(25 + 75 / 2, 100) - 0.0505).abs() < 2e-3);
        assert!((config.learning_rate_at(100, 100) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn recipe_settings_out_of_range_are_refused() {
        let base = TrainConfig::new(Architecture::named("mlp").unwrap(), Activation::Relu);
        let refused = |config: TrainConfig| config.validate().unwrap_err();
        assert_eq!(
            refused(TrainConfig {
                weight_decay: -0.1,
                ..base.clone()
            }),
            ConfigError::WeightDecay(-0.1)
        );
        assert_eq!(
            refused(TrainConfig {
                warmup: 1.0,
                ..base.clone()
            }),
            ConfigError::Warmup(1.0)
        );
        assert_eq!(
            refused(TrainConfig {
                label_smoothing: 1.0,
                ..base.clone()
            }),
            ConfigError::LabelSmoothing(1.0)
        );
        // Per-layer read noise: every layer's value is checked, and one is needed.
        let circuit_aware = |read_noise: Vec<f64>| TrainConfig {
            quant: Some(QuantSettings {
                weight_bits: vec![hecnn_model::quantize::BitWidth::new(4).unwrap()],
                activation_bits: hecnn_model::quantize::BitWidth::new(4).unwrap(),
            }),
            circuit: Some(CircuitTraining {
                lut_bits: vec![hecnn_model::quantize::LutBits::new(4).unwrap()],
                read_noise,
            }),
            ..base.clone()
        };
        assert_eq!(circuit_aware(vec![0.14, 0.1]).validate(), Ok(()));
        assert_eq!(
            refused(circuit_aware(vec![0.1, 9.0])),
            ConfigError::ReadNoise(9.0)
        );
        assert_eq!(refused(circuit_aware(vec![])), ConfigError::NoReadNoise);
    }
}
