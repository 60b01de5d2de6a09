//! `hecnn experiment`: the runs that make docs/'s measured tables and plots.

mod activations;
mod frontier;

use std::path::Path;

use anyhow::Result;
use hecnn_compile::circuit_file::CircuitFile;
use hecnn_compile::evaluate::{LabelledSet, accuracy};
use hecnn_datasets::{DEFAULT_VALIDATION_IMAGES, DatasetSource};
use hecnn_model::model::ModelFile;
use hecnn_train::trainer::{Checkpointing, TrainConfig};

pub use activations::activations;
pub use frontier::frontier;

use crate::cli::Mode;
use crate::measure::mode_predictions;
use crate::pipeline::{TrainJob, load_model, train_model};

/// The model at `path`, trained on MNIST first (the default validation split held out)
/// when the file is absent or `retrain` is set: experiments reuse what an earlier run
/// trained.
fn trained_model(
    path: &Path,
    retrain: bool,
    config: impl FnOnce() -> Result<TrainConfig>,
) -> Result<ModelFile> {
    if retrain || !path.exists() {
        train_model(&TrainJob {
            config: config()?,
            source: DatasetSource::Mnist,
            validation: DEFAULT_VALIDATION_IMAGES,
            limit: None,
            checkpointing: Checkpointing::default(),
            output: path.to_path_buf(),
        })?;
    }
    load_model(path)
}

/// Float, clear and simulate accuracy of a model and its circuit on one set.
struct Accuracies {
    float: f64,
    clear: f64,
    simulate: f64,
}

impl Accuracies {
    /// Measured on `set`, with the clear circuit's predictions (what encrypted results are
    /// compared with).
    fn measure(
        model: &ModelFile,
        file: &CircuitFile,
        set: &LabelledSet,
    ) -> Result<(Self, Vec<usize>)> {
        let predict = |mode| mode_predictions(mode, Some(model), Some(file), set, 1);
        let (float, clear, simulate) = (
            predict(Mode::Float)?,
            predict(Mode::Clear)?,
            predict(Mode::Simulate)?,
        );
        let measured = Self {
            float: accuracy(&float, &set.labels),
            clear: accuracy(&clear, &set.labels),
            simulate: accuracy(&simulate, &set.labels),
        };
        Ok((measured, clear))
    }
}

/// `V1_6_PARAM_MESSAGE_3_CARRY_1_KS_PBS_GAUSSIAN_2M128` -> `3_1 GAUSSIAN 2M128`.
fn short_set(name: &str) -> String {
    name.split("MESSAGE_")
        .nth(1)
        .map_or(name.to_string(), |rest| {
            rest.replace("_CARRY_", "_")
                .replace("_KS_PBS_", " ")
                .replace('_', " ")
        })
}
