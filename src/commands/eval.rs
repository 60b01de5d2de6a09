//! `hecnn eval` and `hecnn predict`.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use hecnn_compile::circuit;
use hecnn_compile::circuit_file::CircuitFile;
use hecnn_compile::evaluate::{LabelledSet, accuracy, agreement, flips_by_stage};
use hecnn_compile::reference::{ReferenceModel, argmax};
use hecnn_datasets::Split;
use hecnn_datasets::image_file::load_image;
use hecnn_model::model::{Layer, ModelFile};

use crate::cli::{EvalArgs, Mode, PredictArgs};
use crate::measure::mode_predictions;
use crate::pipeline::{compile_model, labelled, load_model};
use crate::progress::spinner;

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

fn fraction(count: usize, total: usize) -> f64 {
    100.0 * count as f64 / total.max(1) as f64
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let artifact = load_artifact(&args.model)?;
    if let Artifact::Circuit(file) = &artifact
        && !args.given_compile_options.is_empty()
    {
        let options = &args.given_compile_options;
        anyhow::bail!(
            "{} {} to a model file: {} is a circuit file, compiled already ({} table bits, {})",
            options.join(", "),
            if options.len() == 1 {
                "applies"
            } else {
                "apply"
            },
            args.model.display(),
            file.circuit.lut_widths(),
            file.parameter_set
        );
    }
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
            let file = if args.flips_by_stage || modes.iter().any(|m| *m != Mode::Float) {
                let compiled = compile_model(
                    &model,
                    &args.circuit.options()?,
                    &args.data.source(&model.dataset),
                    args.circuit.calibration as usize,
                )
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
    let set = labelled(&test);
    let mut results: Vec<(Mode, Vec<usize>)> = Vec::new();
    for &mode in &modes {
        let predicted = mode_predictions(mode, model.as_deref(), file.as_ref(), &set, args.seed)
            .with_context(|| format!("evaluating {}", args.model.display()))?;
        println!(
            "{:<8} accuracy {:.2}% on {} {source} test images",
            format!("{mode:?}").to_lowercase(),
            100.0 * accuracy(&predicted, &set.labels),
            test.len()
        );
        results.push((mode, predicted));
    }
    print_agreement(&results, &test.labels);
    if args.flips_by_stage {
        let file = file
            .as_ref()
            .expect("compiled above when flips are counted");
        let clear = match results.iter().find(|(mode, _)| *mode == Mode::Clear) {
            Some((_, predicted)) => predicted.clone(),
            None => mode_predictions(Mode::Clear, None, Some(file), &set, args.seed)?,
        };
        print_flips_by_stage(file, &set, args.seed, &clear);
    }
    Ok(())
}

/// Per stage, the images that differ from clear when only that stage's reads are noisy.
fn print_flips_by_stage(file: &CircuitFile, set: &LabelledSet, seed: u64, clear: &[usize]) {
    let bar = spinner("simulating the noise of each stage alone");
    let flips = flips_by_stage(&file.circuit, &file.parameter_set.set(), seed, set, clear);
    bar.finish_and_clear();
    println!(
        "images that differ from clear with the noise of {} (seed {seed}) in one stage alone \
         (an image near a decision boundary can flip under several stages' noise):",
        file.parameter_set
    );
    for (index, (stage, flips)) in file.circuit.stages().iter().zip(flips).enumerate() {
        let reads = match &stage.read {
            circuit::Read::Tables(tables) => format!("{} table reads", tables.offsets.len()),
            circuit::Read::Logits(decoding) => format!("{} logits", decoding.scale.len()),
        };
        println!(
            "  stage {index} ({}, {reads}): {flips} of {} images ({:.2}%)",
            stage.label,
            set.len(),
            fraction(flips, set.len())
        );
    }
}

/// Agreement of every pair of modes overall, then the images on which modes differ.
fn print_agreement(results: &[(Mode, Vec<usize>)], labels: &[u8]) {
    let total = labels.len();
    for (i, (mode_a, a)) in results.iter().enumerate() {
        for (mode_b, b) in &results[i + 1..] {
            let agreeing = agreement(a, b);
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
