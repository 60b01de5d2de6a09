//! `hecnn train`.

use anyhow::{Context, Result};
use hecnn_compile::activation::Activation;
use hecnn_compile::model::ModelFile;
use hecnn_compile::quantize::{BitWidth, QuantSettings};
use hecnn_compile::evaluate::{accuracy, float_predictions};
use hecnn_compile::reference::ReferenceModel;
use hecnn_datasets::Split;
use hecnn_train::architecture::Architecture;
use hecnn_train::network::CircuitTraining;
use hecnn_train::trainer::{Checkpointing, TrainConfig, train};

use crate::cli::{ActivationArgs, TrainArgs};
use crate::commands::encrypted::labelled;

impl ActivationArgs {
    /// The activation these options describe.
    pub fn activation(&self) -> Result<Activation> {
        Ok(Activation::from_name(
            &self.activation,
            self.range,
            usize::from(self.poly_degree),
            &self.poly_init,
        )?)
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let source = args.data.source("mnist");
    let all = source
        .load(Split::Train)
        .with_context(|| format!("loading the {source} training set"))?;
    let test = source
        .load(Split::Test)
        .with_context(|| format!("loading the {source} test set"))?;
    if args.validation >= all.len() {
        anyhow::bail!(
            "--validation {} leaves no training image out of {}",
            args.validation,
            all.len()
        );
    }
    let (mut train_set, validation) = all.split_validation(args.validation);
    if let Some(limit) = args.limit {
        train_set = train_set.truncated(limit);
    }
    let quant = args
        .qat
        .then(|| -> Result<QuantSettings> {
            Ok(QuantSettings {
                weight_bits: BitWidth::new(args.weight_bits)?,
                activation_bits: BitWidth::new(args.activation_bits)?,
            })
        })
        .transpose()?;
    let init = args
        .init
        .as_ref()
        .map(|path| {
            ModelFile::load(path)
                .with_context(|| format!("loading the initial model {}", path.display()))
        })
        .transpose()?;
    let config = TrainConfig {
        architecture: Architecture::named(&args.model)?,
        activation: args.activation.activation()?,
        quant,
        circuit: args.lut_bits.as_ref().map(|widths| CircuitTraining {
            lut_bits: widths.0.clone(),
            read_noise: args.read_noise,
        }),
        init,
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        seed: args.seed,
        max_shift: args.max_shift,
    };
    println!(
        "training {} on {} ({} images, {} for validation){}{}",
        match &config.init {
            Some(model) => format!(
                "{} from {}",
                model.name,
                args.init.as_ref().expect("init").display()
            ),
            None => format!("{} with {}", config.architecture.name, config.activation),
        },
        source,
        train_set.len(),
        validation.len(),
        match quant {
            Some(q) => format!(
                ", QAT: {}-bit weights, {}-bit activations",
                q.weight_bits.bits(),
                q.activation_bits.bits()
            ),
            None => String::new(),
        },
        match &config.circuit {
            Some(c) => format!(
                ", tables of {} bits read with noise {} entries",
                c.lut_bits
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                c.read_noise
            ),
            None => String::new(),
        }
    );
    let checkpointing = Checkpointing {
        dir: args.checkpoint.clone(),
        resume: args.resume,
    };
    let outcome = train(
        &config,
        &train_set,
        &validation,
        &source.to_string(),
        &checkpointing,
        true,
        |r| {
            println!(
                "epoch {:>3}: loss {:.4}  train {:.2}%  validation {:.2}%  ({:.1} s)",
                r.epoch,
                r.loss,
                100.0 * r.train_accuracy,
                100.0 * r.validation_accuracy,
                r.seconds
            );
        },
    )?;
    let reference = ReferenceModel::new(&outcome.model);
    let test_accuracy =
        float_predictions(&reference, &labelled(&test), &|| {});
    let test_accuracy = accuracy(&test_accuracy, &labelled(&test).labels);
    outcome
        .model
        .save(&args.output)
        .with_context(|| format!("writing the model file {}", args.output.display()))?;
    println!(
        "test accuracy {:.2}% on {} images; {} activation values per image; {:.1} minutes; model written to {}",
        100.0 * test_accuracy,
        test.len(),
        outcome.model.activation_count(),
        outcome.minutes,
        args.output.display()
    );
    Ok(())
}
