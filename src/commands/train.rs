//! `hecnn train`.

use anyhow::{Context, Result};
use hecnn_model::quantize::{BitWidth, QuantSettings};
use hecnn_train::architecture::Architecture;
use hecnn_train::distill::Distillation;
use hecnn_train::network::CircuitTraining;
use hecnn_train::trainer::{Checkpointing, TrainConfig};

use crate::cli::TrainArgs;
use crate::pipeline::{TrainJob, load_model, train_model};

pub fn run(args: &TrainArgs) -> Result<()> {
    let quant = args
        .qat
        .then(|| -> Result<QuantSettings> {
            Ok(QuantSettings {
                weight_bits: args.weight_bits.0.clone(),
                activation_bits: BitWidth::new(args.activation_bits)?,
            })
        })
        .transpose()?;
    let init = args
        .init
        .as_deref()
        .map(load_model)
        .transpose()
        .context("the model to start from (--init)")?;
    let distillation = args
        .teacher
        .as_deref()
        .map(|path| -> Result<Distillation> {
            Ok(Distillation {
                teacher: load_model(path).context("the teacher (--teacher)")?,
                weight: args.distill_weight,
                temperature: args.distill_temperature,
            })
        })
        .transpose()?;
    let job = TrainJob {
        config: TrainConfig {
            architecture: Architecture::named(&args.model)?,
            activation: args.activation.activation()?,
            quant,
            circuit: args.lut_bits.as_ref().map(|widths| CircuitTraining {
                lut_bits: widths.0.clone(),
                read_noise: args.read_noise.clone(),
            }),
            init,
            distillation,
            epochs: args.epochs,
            batch_size: args.batch_size,
            learning_rate: args.lr,
            weight_decay: args.weight_decay,
            warmup: args.warmup,
            label_smoothing: args.label_smoothing,
            seed: args.seed,
            max_shift: args.max_shift,
            flip: args.flip,
        },
        source: args.data.source("mnist"),
        validation: args.validation,
        limit: args.limit,
        checkpointing: Checkpointing {
            dir: args.checkpoint.clone(),
            resume: args.resume,
        },
        output: args.output.clone(),
    };
    train_model(&job)?;
    Ok(())
}
