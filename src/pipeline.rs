//! The pipeline's steps as the commands run them: train and save a model, compile one,
//! load circuits and data, printing what a user follows as they go. Commands (and the demo
//! and the experiments, which chain them) call these; no command calls another.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use hecnn_compile::circuit_file::CircuitFile;
use hecnn_compile::compiler::{CompileError, CompileOptions, Compiled, compile};
use hecnn_compile::evaluate::{LabelledSet, accuracy, float_predictions};
use hecnn_compile::lower::LowerError;
use hecnn_compile::reference::ReferenceModel;
use hecnn_datasets::image_file::load_image;
use hecnn_datasets::{DEFAULT_VALIDATION_IMAGES, DatasetSource, LabelledImages, Split};
use hecnn_model::model::ModelFile;
use hecnn_train::trainer::{Checkpointing, TrainConfig, train};
use hecnn_train::{ConfigError, TrainError};

use crate::calibration;
use crate::cli::ImageArgs;
use crate::progress::EpochBars;

/// A training run as `hecnn train` describes it.
pub struct TrainJob {
    /// What to train.
    pub config: TrainConfig,
    /// On which data.
    pub source: DatasetSource,
    /// Training images held out for validation (the last ones).
    pub validation: usize,
    /// Only the first training images.
    pub limit: Option<usize>,
    /// Checkpoints.
    pub checkpointing: Checkpointing,
    /// Where the model file goes.
    pub output: PathBuf,
}

/// Trains, prints each epoch and the test accuracy, and saves the model file.
pub fn train_model(job: &TrainJob) -> Result<ModelFile> {
    let source = &job.source;
    let all = source
        .load(Split::Train)
        .with_context(|| format!("loading the {source} training set"))?;
    let test = source
        .load(Split::Test)
        .with_context(|| format!("loading the {source} test set"))?;
    if job.validation >= all.len() {
        anyhow::bail!(
            "--validation {} leaves no training image out of {}",
            job.validation,
            all.len()
        );
    }
    let (mut train_set, validation) = all.split_validation(job.validation);
    if let Some(limit) = job.limit {
        train_set = train_set.truncated(limit);
    }
    let config = &job.config;
    println!(
        "training {} on {} ({} images, {} for validation){}{}{}",
        match &config.init {
            Some(model) => format!("{} from a model file", model.name),
            None => format!("{} with {}", config.architecture.name, config.activation),
        },
        source,
        train_set.len(),
        validation.len(),
        match &config.quant {
            Some(q) => format!(
                ", QAT: {}-bit weights, {}-bit activations",
                comma_list(q.weight_bits.iter().map(|b| b.bits())),
                q.activation_bits.bits()
            ),
            None => String::new(),
        },
        match &config.circuit {
            Some(c) => format!(
                ", tables of {} bits read with noise {} entries",
                comma_list(&c.lut_bits),
                comma_list(&c.read_noise)
            ),
            None => String::new(),
        },
        match &config.distillation {
            Some(d) => format!(
                ", distilled from {} (weight {}, temperature {})",
                d.teacher.name, d.weight, d.temperature
            ),
            None => String::new(),
        }
    );
    let outcome = train(
        config,
        &train_set,
        &validation,
        &source.to_string(),
        &job.checkpointing,
        &mut EpochBars::default(),
    )
    .map_err(|e| {
        let hint = match &e {
            TrainError::Config(ConfigError::NoEpochs) => " (--epochs)",
            TrainError::Config(ConfigError::NoBatch) => " (--batch-size)",
            TrainError::Config(ConfigError::LearningRate(_)) => " (--lr)",
            TrainError::Config(ConfigError::ReadNoise(_) | ConfigError::NoReadNoise) => {
                " (--read-noise)"
            }
            TrainError::Config(ConfigError::DistillWeight(_)) => " (--distill-weight)",
            TrainError::Config(ConfigError::Temperature(_)) => " (--distill-temperature)",
            TrainError::Config(
                ConfigError::TeacherInput { .. } | ConfigError::TeacherClasses { .. },
            ) => " (--teacher)",
            TrainError::Config(ConfigError::ResumeWithoutCheckpoint) => ": give --checkpoint DIR",
            TrainError::Diverged { .. } => ": lower --lr, or use a smaller --range",
            _ => "",
        };
        anyhow::anyhow!("{e}{hint}")
    })?;
    let test_set = labelled(&test);
    let predicted = float_predictions(&ReferenceModel::new(&outcome.model), &test_set, &|| {});
    outcome
        .model
        .save(&job.output)
        .with_context(|| format!("writing the model file {}", job.output.display()))?;
    println!(
        "test accuracy {:.2}% on {} images; {} activation values per image; {:.1} minutes; model written to {}",
        100.0 * accuracy(&predicted, &test_set.labels),
        test.len(),
        outcome.model.activation_count(),
        outcome.minutes,
        job.output.display()
    );
    Ok(outcome.model)
}

/// The calibration images of a model: the first `count` of its data set's validation split
/// (never the test set).
pub fn calibration_images(
    model: &ModelFile,
    source: &DatasetSource,
    count: usize,
) -> Result<LabelledImages> {
    let train = source
        .load(Split::Train)
        .with_context(|| format!("loading the {source} training set for calibration"))?;
    let (_, validation) = train.split_validation(DEFAULT_VALIDATION_IMAGES);
    if validation.image_len() != model.input.shape.len() {
        anyhow::bail!(
            "the {source} images have {}x{} pixels, the model expects {}",
            validation.rows,
            validation.cols,
            model.input.shape
        );
    }
    Ok(validation.truncated(count))
}

/// Compiles `model` with `options` on `calibration` images of its data set `source`. The
/// calibration images serve calibrated ranges, the automatic table width, the choice of the
/// parameter set by accuracy, the logits' encoding and the report of how tables are used.
pub fn compile_model(
    model: &ModelFile,
    options: &CompileOptions,
    source: &DatasetSource,
    calibration: usize,
) -> Result<Compiled> {
    let images = calibration_images(model, source, calibration)?;
    compile(model, options, &labelled(&images)).map_err(|e| {
        let hint = match &e {
            CompileError::Lower(LowerError::NotQuantised { .. }) => "; train with --qat",
            CompileError::Lower(LowerError::NoGrid { .. }) => {
                "; compile with --ranges calibrated, or train with --qat --lut-bits N"
            }
            CompileError::Lower(LowerError::LutBits { .. }) => {
                "; leave --lut-bits out to use the trained widths, or compile with --ranges calibrated"
            }
            CompileError::NoFit(_) => "; use fewer weight or table bits, or a looser --p-error",
            _ => "",
        };
        anyhow::anyhow!("{e}{hint}")
    })
}

/// Where the compile report's latency comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyFrom {
    /// Table reads of the chosen set timed on this machine (cached for an hour).
    Calibration,
    /// The compiler's table of costs measured on a machine of this kind, or its estimate.
    Table,
}

/// Compiles `model` as [`compile_model`] does, writes the circuit file to `output` and
/// prints the compile report (as JSON with `json`), its latency predicted from `latency`.
pub fn compile_and_save(
    model: &ModelFile,
    options: &CompileOptions,
    source: &DatasetSource,
    calibration: usize,
    output: &Path,
    json: bool,
    latency: LatencyFrom,
) -> Result<Compiled> {
    let started = Instant::now();
    let mut compiled = compile_model(model, options, source, calibration)?;
    let calibrated = if latency == LatencyFrom::Calibration {
        let (cost, origin) =
            calibration::pbs_cost(compiled.report.parameter_set, calibration::CACHE_LIFE)?;
        compiled.report = compiled.report.with_pbs_cost(cost);
        Some(origin)
    } else {
        None
    };
    compiled
        .file
        .save(output)
        .with_context(|| format!("writing the circuit file {}", output.display()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&compiled.report).expect("reports serialise")
        );
    } else {
        println!("{}", compiled.report);
        match calibrated {
            Some(calibration::Origin::Measured { reads }) => println!(
                "calibration        {reads} table reads timed on this machine now (cached for an hour; --no-calibrate skips it)"
            ),
            Some(calibration::Origin::Cached { age }) => println!(
                "calibration        timed on this machine {:.1} h ago (cached; --no-calibrate skips it)",
                age.as_secs_f64() / 3600.0
            ),
            None => {}
        }
        println!(
            "circuit written to {} ({} table bits) in {:.1} s",
            output.display(),
            compiled.file.circuit.lut_widths(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(compiled)
}

/// Reads a model file.
pub fn load_model(path: &Path) -> Result<ModelFile> {
    ModelFile::load(path).with_context(|| format!("loading the model file {}", path.display()))
}

/// Reads a circuit file.
pub fn load_circuit(path: &Path) -> Result<CircuitFile> {
    CircuitFile::load(path).with_context(|| format!("loading the circuit file {}", path.display()))
}

/// The images named on the command line (files, then test-set indices), checked against
/// `circuit`'s input.
pub fn load_images(circuit: &CircuitFile, args: &ImageArgs) -> Result<Vec<Vec<u8>>> {
    if args.images.is_empty() && args.test_index.is_empty() {
        anyhow::bail!("nothing to encrypt: give image files or --test-index");
    }
    let mut images = Vec::new();
    for path in &args.images {
        images.push(load_image(path)?);
    }
    if !args.test_index.is_empty() {
        let test = test_images(circuit, &args.data.source(&circuit.dataset))?;
        for &index in &args.test_index {
            if index >= test.len() {
                anyhow::bail!(
                    "--test-index {index} is past the {} test images",
                    test.len()
                );
            }
            images.push(test.image(index).to_vec());
        }
    }
    Ok(images)
}

/// The test set of `source`, checked against a circuit's input.
pub fn test_images(circuit: &CircuitFile, source: &DatasetSource) -> Result<LabelledImages> {
    let test = source
        .load(Split::Test)
        .with_context(|| format!("loading the {source} test set"))?;
    if test.image_len() != circuit.input.shape.len() {
        anyhow::bail!(
            "the {source} images have {}x{} pixels, the circuit {} reads {}",
            test.rows,
            test.cols,
            circuit.name,
            circuit.input.shape
        );
    }
    Ok(test)
}

/// The images of a data set as the libraries take them.
pub fn labelled(data: &LabelledImages) -> LabelledSet<'_> {
    LabelledSet {
        images: (0..data.len()).map(|i| data.image(i)).collect(),
        labels: data.labels.iter().map(|&l| usize::from(l)).collect(),
    }
}

/// `values` as the command line takes a list: `4,5`.
pub fn comma_list<T: std::fmt::Display>(values: impl IntoIterator<Item = T>) -> String {
    values
        .into_iter()
        .map(|value| value.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
