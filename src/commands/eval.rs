//! `hecnn eval` and `hecnn predict`.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hecnn_compile::circuit_file::CircuitFile;
use hecnn_compile::model::{Layer, ModelFile};
use hecnn_compile::params;
use hecnn_compile::reference::{ReferenceModel, argmax};
use hecnn_compile::simulate::Simulator;
use hecnn_datasets::image_file::load_image;
use hecnn_datasets::{LabelledImages, Split};
use hecnn_runtime::NoProgress;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::cli::{EvalArgs, Mode, PredictArgs};
use crate::commands::compile::compile_model;
use crate::commands::encrypted::LocalSession;

/// Float accuracy of a model on labelled images.
pub fn float_accuracy(model: &ReferenceModel, data: &LabelledImages) -> f64 {
    let correct = (0..data.len())
        .into_par_iter()
        .filter(|&i| model.predict(data.image(i)) == usize::from(data.labels[i]))
        .count();
    correct as f64 / data.len().max(1) as f64
}

/// What `hecnn eval` was given.
enum Artifact {
    Model(Box<ModelFile>),
    Circuit(Box<CircuitFile>),
}

/// A circuit file if its first bytes say so, else a model file.
fn load_artifact(path: &Path) -> Result<Artifact> {
    let mut head = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        // An unreadable file is reported by the loader below.
        let _ = file.take(256).read_to_end(&mut head);
    }
    if CircuitFile::sniff(&head) {
        let file = CircuitFile::load(path)
            .with_context(|| format!("loading the circuit file {}", path.display()))?;
        Ok(Artifact::Circuit(Box::new(file)))
    } else {
        Ok(Artifact::Model(Box::new(load_model(path)?)))
    }
}

fn load_model(path: &Path) -> Result<ModelFile> {
    ModelFile::load(path).with_context(|| format!("loading the model file {}", path.display()))
}

/// Predicted class of every image under one mode, in parallel, with a progress bar.
fn predictions(
    mode: Mode,
    data: &LabelledImages,
    classify: impl Fn(usize, &[u8]) -> usize + Sync,
) -> Vec<usize> {
    let bar = ProgressBar::new(data.len() as u64).with_style(
        ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} images ({eta})")
            .expect("the template is valid"),
    );
    bar.set_message(format!("{mode:?}").to_lowercase());
    let predicted = (0..data.len())
        .into_par_iter()
        .map(|i| {
            let class = classify(i, data.image(i));
            bar.inc(1);
            class
        })
        .collect();
    bar.finish_and_clear();
    predicted
}

/// Predictions of a circuit in clear mode, or in simulate mode with noise from `seed`.
pub fn circuit_predictions(
    file: &CircuitFile,
    noisy: bool,
    data: &LabelledImages,
    seed: u64,
) -> Vec<usize> {
    let (mode, simulator) = if noisy {
        let set = params::by_name(&file.parameter_set).expect("circuit files name known sets");
        (Mode::Simulate, Simulator::noisy(&file.circuit, &set))
    } else {
        (Mode::Clear, Simulator::clear(&file.circuit))
    };
    predictions(mode, data, |i, image| {
        argmax(&simulator.logits(image, seed.wrapping_mul(1 << 32) ^ i as u64))
    })
}

/// Fraction of predictions equal to the labels.
pub fn accuracy(predicted: &[usize], labels: &[u8]) -> f64 {
    let correct = predicted
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == usize::from(**l))
        .count();
    correct as f64 / labels.len().max(1) as f64
}

fn fraction(count: usize, total: usize) -> f64 {
    100.0 * count as f64 / total.max(1) as f64
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let artifact = load_artifact(&args.model)?;
    let (dataset, input_len) = match &artifact {
        Artifact::Model(model) => (model.dataset.clone(), model.input.shape.len()),
        Artifact::Circuit(file) => (file.dataset.clone(), file.input.shape.len()),
    };
    let modes = if args.mode.is_empty() {
        match artifact {
            // Only QAT models (quantised activation outputs) compile.
            Artifact::Model(ref model)
                if model.layers.iter().any(|layer| {
                    matches!(
                        layer,
                        Layer::Activation {
                            output_quant: None,
                            ..
                        }
                    )
                }) =>
            {
                vec![Mode::Float]
            }
            Artifact::Model(_) => vec![Mode::Float, Mode::Clear, Mode::Simulate],
            Artifact::Circuit(_) => vec![Mode::Clear, Mode::Simulate],
        }
    } else {
        args.mode.clone()
    };
    let source = args.data.source(&dataset);
    let mut test = source
        .load(Split::Test)
        .with_context(|| format!("loading the {source} test set"))?;
    if let Some(limit) = args.limit {
        test = test.truncated(limit);
    }
    if test.image_len() != input_len {
        anyhow::bail!(
            "the {source} images have {}x{} pixels, {} expects {input_len}",
            test.rows,
            test.cols,
            args.model.display(),
        );
    }
    let (model, file) = match artifact {
        Artifact::Model(model) => {
            let file = if modes.iter().any(|m| *m != Mode::Float) {
                let compiled = compile_model(&model, &args.circuit, &args.data)
                    .with_context(|| format!("compiling {}", args.model.display()))?;
                println!(
                    "compiled: {} table bits, {}, {} PBS per image",
                    compiled.file.circuit.lut_widths(),
                    compiled.file.parameter_set,
                    compiled.report.pbs_count
                );
                Some(compiled.file)
            } else {
                None
            };
            (Some(model), file)
        }
        Artifact::Circuit(file) => (None, Some(*file)),
    };
    let mut results: Vec<(Mode, Vec<usize>)> = Vec::new();
    for &mode in &modes {
        let predicted = match mode {
            Mode::Float => {
                let model = model.as_ref().with_context(|| {
                    format!(
                        "float mode needs the model file, and {} is a circuit file",
                        args.model.display()
                    )
                })?;
                let reference = ReferenceModel::new(model);
                predictions(mode, &test, |_, image| reference.predict(image))
            }
            Mode::Encrypted => {
                let file = file.as_ref().expect("compiled above for this mode");
                encrypted_predictions(file, &test)?.0
            }
            Mode::Clear | Mode::Simulate => circuit_predictions(
                file.as_ref().expect("compiled above for these modes"),
                mode == Mode::Simulate,
                &test,
                args.seed,
            ),
        };
        println!(
            "{:<8} accuracy {:.2}% on {} {source} test images",
            format!("{mode:?}").to_lowercase(),
            100.0 * accuracy(&predicted, &test.labels),
            test.len()
        );
        results.push((mode, predicted));
    }
    print_agreement(&results, &test.labels);
    Ok(())
}

/// Agreement of every pair of modes overall, then the images on which modes differ.
fn print_agreement(results: &[(Mode, Vec<usize>)], labels: &[u8]) {
    let total = labels.len();
    for (i, (mode_a, a)) in results.iter().enumerate() {
        for (mode_b, b) in &results[i + 1..] {
            let agreeing = a.iter().zip(b).filter(|(x, y)| x == y).count();
            println!(
                "agreement {:?}/{:?}: {:.2}% ({} of {} images differ)",
                mode_a,
                mode_b,
                fraction(agreeing, total),
                total - agreeing,
                total
            )
        }
    }
    const SHOWN: usize = 20;
    let differing: Vec<usize> = (0..total)
        .filter(|&i| results.iter().any(|(_, p)| p[i] != results[0].1[i]))
        .collect();
    if results.len() > 1 && !differing.is_empty() {
        println!(
            "images on which the modes differ{}:",
            if differing.len() > SHOWN {
                format!(" (first {SHOWN} of {})", differing.len())
            } else {
                String::new()
            }
        );
        for &i in differing.iter().take(SHOWN) {
            let classes: Vec<String> = results
                .iter()
                .map(|(mode, p)| format!("{} {}", format!("{mode:?}").to_lowercase(), p[i]))
                .collect();
            println!(
                "  test image {i} (label {}): {}",
                labels[i],
                classes.join(", ")
            );
        }
    }
}

/// Every image encrypted under fresh keys, evaluated over ciphertexts, decrypted, one
/// after the other (each evaluation uses every core); prints the latency distribution and
/// returns the predictions and the sorted latencies.
pub fn encrypted_predictions(
    file: &CircuitFile,
    data: &LabelledImages,
) -> Result<(Vec<usize>, Vec<Duration>)> {
    let (session, keygen) = LocalSession::with_fresh_keys(file)?;
    println!(
        "encrypted: keys for {} generated in {:.1} s",
        file.parameter_set,
        keygen.as_secs_f64()
    );
    let bar = ProgressBar::new(data.len() as u64).with_style(
        ProgressStyle::with_template("encrypted [{bar:40}] {pos}/{len} images ({eta})")
            .expect("the template is valid"),
    );
    let mut predicted = Vec::with_capacity(data.len());
    let mut latencies = Vec::with_capacity(data.len());
    for i in 0..data.len() {
        let (prediction, timings) = session.classify(data.image(i), &NoProgress)?;
        predicted.push(prediction.class);
        latencies.push(timings.total());
        bar.inc(1);
    }
    bar.finish_and_clear();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64();
    println!(
        "encrypted latency per image: median {:.2} s, min {:.2} s, 90th percentile {:.2} s, max {:.2} s ({} PBS each)",
        at(0.5),
        at(0.0),
        at(0.9),
        at(1.0),
        file.circuit.pbs_count()
    );
    Ok((predicted, latencies))
}

pub fn predict(args: &PredictArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let pixels = load_image(&args.image)?;
    if pixels.len() != model.input.shape.len() {
        anyhow::bail!(
            "the model {} expects {} inputs, images give 28x28",
            args.model.display(),
            model.input.shape
        );
    }
    let logits = ReferenceModel::new(&model).logits(&pixels);
    let class = argmax(&logits);
    println!("class {class} ({})", model.class_names[class]);
    println!(
        "logits: {}",
        logits
            .iter()
            .map(|l| format!("{l:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
