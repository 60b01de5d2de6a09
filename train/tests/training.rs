//! Training end to end on small data: it learns, the exported model file computes what the
//! burn network computes, checkpoints resume, and bad files are refused.

use burn::prelude::*;
use hecnn_compile::compiler::{CompileOptions, compile, has_read_grids};
use hecnn_compile::evaluate::LabelledSet;
use hecnn_compile::reference::{ReferenceModel, argmax};
use hecnn_compile::simulate::Simulator;
use hecnn_datasets::{DatasetSource, LabelledImages, Split};
use hecnn_model::activation::Activation;
use hecnn_model::model::{Layer, ModelFile};
use hecnn_model::quantize::{BitWidth, LutBits, QuantSettings};
use hecnn_train::architecture::Architecture;
use hecnn_train::network::{CircuitTraining, Network, input_tensor};
use hecnn_train::trainer::{
    Checkpointing, EpochReport, Quiet, TrainConfig, TrainOutcome, TrainingProgress, normalisation,
    train,
};
use hecnn_train::{ConfigError, TrainError};

fn small_mnist(train_images: usize) -> (LabelledImages, LabelledImages) {
    let all = DatasetSource::Mnist.load(Split::Train).unwrap();
    let (train_set, validation) = all.split_validation(500);
    (train_set.truncated(train_images), validation)
}

fn config(
    model: &str,
    activation: &str,
    quant: Option<QuantSettings>,
    epochs: usize,
) -> TrainConfig {
    TrainConfig {
        quant,
        epochs,
        batch_size: 64,
        learning_rate: 3e-3,
        seed: 7,
        max_shift: 1,
        ..TrainConfig::new(
            Architecture::named(model).unwrap(),
            Activation::from_name(activation, 4.0, 3, "quad-relu").unwrap(),
        )
    }
}

fn qat(bits: u8) -> Option<QuantSettings> {
    let bits = BitWidth::new(bits).unwrap();
    Some(QuantSettings::uniform(bits, bits))
}

/// The epochs' reports, as training gives them.
#[derive(Default)]
struct Reports(Vec<EpochReport>);

impl TrainingProgress for Reports {
    fn epoch_finished(&mut self, report: &EpochReport) {
        self.0.push(report.clone());
    }
}

/// Trains `config` quietly.
fn run(
    config: &TrainConfig,
    train_set: &LabelledImages,
    validation: &LabelledImages,
    checkpointing: &Checkpointing,
) -> Result<TrainOutcome, TrainError> {
    train(
        config,
        train_set,
        validation,
        "mnist",
        checkpointing,
        &mut Quiet,
    )
}

/// Fraction of `data` the reference (plain Rust) evaluation of `model` gets right.
fn reference_accuracy(model: &ModelFile, data: &LabelledImages) -> f64 {
    let reference = ReferenceModel::new(model);
    let correct = (0..data.len())
        .filter(|&i| reference.predict(data.image(i)) == usize::from(data.labels[i]))
        .count();
    correct as f64 / data.len() as f64
}

#[test]
fn a_short_run_learns_well_above_chance() {
    let (train_set, validation) = small_mnist(3000);
    let mut reports = Reports::default();
    let outcome = train(
        &config("paper-cnn", "swish4", None, 2),
        &train_set,
        &validation,
        "mnist",
        &Checkpointing::default(),
        &mut reports,
    )
    .unwrap();
    let reports = reports.0;
    assert_eq!(reports.len(), 2);
    assert!(reports[1].loss < reports[0].loss, "{reports:?}");
    assert!(reports[1].validation_accuracy > 0.85, "{reports:?}");
    // The exported file, evaluated without burn, keeps that accuracy.
    assert!(reference_accuracy(&outcome.model, &validation) > 0.85);
}

#[test]
fn exported_model_computes_what_the_network_computes() {
    let (train_set, validation) = small_mnist(1000);
    for (model, activation, quant) in [
        ("compact", "kernel-relu2", None),
        ("paper-cnn", "poly", qat(4)),
        ("mlp", "relu", qat(3)),
    ] {
        let outcome = run(
            &config(model, activation, quant, 1),
            &train_set,
            &validation,
            &Checkpointing::default(),
        )
        .unwrap();
        // Load the exported file back into burn and compare with the plain-Rust evaluation.
        let device = Device::flex();
        let exported = &outcome.model;
        let reference = ReferenceModel::new(exported);
        let images = validation.truncated(20);
        let network_logits = rebuild(exported, &images, &device);
        for (i, logits) in network_logits.iter().enumerate() {
            let expected = reference.logits(images.image(i));
            for (a, b) in logits.iter().zip(&expected) {
                assert!(
                    (f64::from(*a) - b).abs() < 2e-3 * (1.0 + b.abs()),
                    "{model}/{activation}: image {i}: {a} vs {b}"
                );
            }
        }
    }
}

/// The logits of `images` from the model file's weights loaded back into a burn network.
fn rebuild(model: &ModelFile, images: &LabelledImages, device: &Device) -> Vec<Vec<f32>> {
    let network = Network::from_model_file(model, device);
    let logits = network.forward(input_tensor(&model.input, &images.pixels, device));
    let values: Vec<f32> = logits.into_data().try_to_vec().unwrap();
    values
        .chunks(model.class_names.len())
        .map(<[f32]>::to_vec)
        .collect()
}

#[test]
fn model_file_round_trip_and_bad_files() {
    let (train_set, validation) = small_mnist(500);
    let outcome = run(
        &config("mlp", "swish4", qat(4), 1),
        &train_set,
        &validation,
        &Checkpointing::default(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    outcome.model.save(&path).unwrap();
    assert_eq!(ModelFile::load(&path).unwrap(), outcome.model);

    let text = std::fs::read_to_string(&path).unwrap();
    let cases = [
        (
            "truncated.json",
            text[..text.len() / 2].to_string(),
            "not a hecnn model file",
        ),
        (
            "foreign.json",
            r#"{"format":"onnx","version":1}"#.to_string(),
            "not a hecnn model file",
        ),
        (
            "future.json",
            text.replace("\"version\":1", "\"version\":99"),
            "version",
        ),
        (
            "inconsistent.json",
            text.replace("\"in_features\":784", "\"in_features\":783"),
            "layer 1 (dense)",
        ),
    ];
    for (name, content, expected) in cases {
        let bad = dir.path().join(name);
        std::fs::write(&bad, content).unwrap();
        let err = ModelFile::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains(name) && err.contains(expected),
            "{name}: {err}"
        );
    }
}

#[test]
fn resuming_a_checkpoint_continues_the_same_run() {
    let (train_set, validation) = small_mnist(800);
    let dir = tempfile::tempdir().unwrap();
    let checkpointing = Checkpointing {
        dir: Some(dir.path().to_path_buf()),
        resume: false,
    };
    let straight = run(
        &config("compact", "swish4", qat(4), 2),
        &train_set,
        &validation,
        &Checkpointing::default(),
    )
    .unwrap();
    // One epoch, then resume to two.
    run(
        &config("compact", "swish4", qat(4), 1),
        &train_set,
        &validation,
        &checkpointing,
    )
    .unwrap();
    let resume = Checkpointing {
        resume: true,
        ..checkpointing
    };
    let mut reports = Reports::default();
    let resumed = train(
        &config("compact", "swish4", qat(4), 2),
        &train_set,
        &validation,
        "mnist",
        &resume,
        &mut reports,
    )
    .unwrap();
    let epochs_run: Vec<usize> = reports.0.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs_run, vec![2], "only the missing epoch runs");
    assert_eq!(resumed.history.len(), 2);
    // The second epoch starts from the checkpointed weights and optimiser state: its loss
    // continues to fall from the first epoch's instead of starting over.
    let first = &resumed.history[0];
    let second = &resumed.history[1];
    assert!(second.loss < 0.9 * first.loss, "{:?}", resumed.history);
    assert!(
        second.validation_accuracy > first.validation_accuracy,
        "{:?}",
        resumed.history
    );
    // An uninterrupted two-epoch run ends in about the same place.
    assert!(
        (straight.history[1].validation_accuracy - second.validation_accuracy).abs() < 0.1,
        "{:?} vs {:?}",
        straight.history,
        resumed.history
    );

    // Another run's checkpoint is refused, by name.
    let err = run(
        &config("mlp", "swish4", qat(4), 3),
        &train_set,
        &validation,
        &resume,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("another run") && err.contains("state.json"),
        "{err}"
    );

    // A corrupt checkpoint is refused, by name.
    std::fs::write(dir.path().join("model.bpk"), b"garbage").unwrap();
    let err = run(
        &config("compact", "swish4", qat(4), 3),
        &train_set,
        &validation,
        &resume,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model.bpk"), "{err}");
}

#[test]
fn bad_settings_are_refused() {
    let (train_set, validation) = small_mnist(100);
    let mut bad = config("mlp", "relu", None, 1);
    bad.learning_rate = -1.0;
    let err = run(&bad, &train_set, &validation, &Checkpointing::default()).unwrap_err();
    assert!(
        matches!(err, TrainError::Config(ConfigError::LearningRate(lr)) if lr == -1.0),
        "{err}"
    );
    let mut no_widths = config("mlp", "relu", qat(4), 1);
    no_widths.quant.as_mut().unwrap().weight_bits.clear();
    let err = run(
        &no_widths,
        &train_set,
        &validation,
        &Checkpointing::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, TrainError::Config(ConfigError::NoWeightBits)),
        "{err}"
    );
    let input = normalisation(&train_set);
    assert!(
        (input.mean - 0.13).abs() < 0.01 && (input.std - 0.31).abs() < 0.01,
        "{input:?}"
    );
}

/// Circuit-aware training, from scratch and as fine-tuning of a float model: the model file
/// records a read grid per activation, the compiler builds its tables on them, and the
/// trained network (burn, in inference), its plain-Rust reference and the clear circuit
/// classify alike.
#[test]
fn circuit_aware_training_makes_the_circuit_the_trained_network() {
    let (train_set, validation) = small_mnist(2000);
    let circuit = CircuitTraining {
        lut_bits: vec![LutBits::new(4).unwrap(), LutBits::new(5).unwrap()],
        read_noise: vec![0.15],
    };
    // Per-layer weight widths: the first layer keeps 8 bits, then 5 and 3.
    let widths = |bits: &[u8]| bits.iter().map(|&b| BitWidth::new(b).unwrap()).collect();
    let scratch = TrainConfig {
        circuit: Some(circuit.clone()),
        ..config(
            "compact",
            "swish4",
            Some(QuantSettings {
                weight_bits: widths(&[5, 3]),
                activation_bits: BitWidth::new(4).unwrap(),
            }),
            1,
        )
    };
    let float = run(
        &config("compact", "swish4", None, 1),
        &train_set,
        &validation,
        &Checkpointing::default(),
    )
    .unwrap();
    let fine_tune = TrainConfig {
        circuit: Some(circuit),
        init: Some(float.model.clone()),
        ..config("mlp", "relu", qat(4), 1)
    };
    let images = validation.truncated(500);
    for (config, weight_bits) in [(scratch, [8, 5, 3].as_slice()), (fine_tune, &[8, 4, 4])] {
        let outcome = run(&config, &train_set, &validation, &Checkpointing::default()).unwrap();
        let model = outcome.model;
        let recorded: Vec<u8> = model
            .layers
            .iter()
            .filter_map(|layer| match layer {
                Layer::Conv2d { weight_bits, .. } | Layer::Dense { weight_bits, .. } => {
                    weight_bits.map(BitWidth::bits)
                }
                _ => None,
            })
            .collect();
        assert_eq!(recorded, weight_bits);
        assert!(has_read_grids(&model), "every activation has a grid");
        let widths: Vec<u32> = model
            .layers
            .iter()
            .filter_map(|layer| match layer {
                Layer::Activation { input_grid, .. } => {
                    input_grid.as_ref().map(|g| g.lut_bits.get())
                }
                _ => None,
            })
            .collect();
        assert_eq!(widths, vec![4, 5]);
        let reference = ReferenceModel::new(&model);
        let accuracy = reference_accuracy(&model, &images);
        assert!(accuracy > 0.6, "{accuracy}");

        // burn in inference mode is deterministic (no read noise) and is the reference.
        let device = Device::flex();
        let network = rebuild(&model, &images, &device);
        assert_eq!(network, rebuild(&model, &images, &device));
        let burn_agrees = network
            .iter()
            .enumerate()
            .filter(|(i, logits)| {
                let logits: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
                argmax(&logits) == reference.predict(images.image(*i))
            })
            .count();
        assert!(burn_agrees >= 499, "{burn_agrees} of 500");

        // The compiler uses the trained grids (no calibration needed) and the clear
        // circuit computes the trained network.
        let compiled =
            compile(&model, &CompileOptions::default(), &LabelledSet::default()).unwrap();
        assert_eq!(compiled.file.circuit.lut_widths(), "4,5");
        // Each stage's integer weights use its layer's width: within `2^(b-1) - 1`, and
        // more than half of it (a narrower width would not reach there). A stage that
        // pools sums several weights into one tap, so only the others are checked.
        let stages = compiled.file.circuit.stages().iter().zip(weight_bits);
        for (stage, &bits) in stages.filter(|(stage, _)| !stage.label.contains("avg-pool")) {
            let mut largest = 0;
            stage
                .linear
                .for_each_tap(|_, _, w| largest = largest.max(w.unsigned_abs()));
            let limit = (1u32 << (bits - 1)) - 1;
            assert!(
                largest <= limit && 2 * largest > limit,
                "{}: {largest} for {bits} bits",
                stage.label
            );
        }
        let clear = Simulator::clear(&compiled.file.circuit);
        let agreeing = (0..images.len())
            .filter(|&i| {
                argmax(&clear.logits(images.image(i), 0)) == reference.predict(images.image(i))
            })
            .count();
        assert!(agreeing >= 499, "{agreeing} of 500");
    }
}
