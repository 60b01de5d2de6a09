//! `hecnn demo`: the whole pipeline in a few minutes, as a user would run it step by step:
//! train a small circuit-aware model, compile it, generate keys, encrypt test images, evaluate them
//! over ciphertexts with the evaluation key alone, decrypt, and compare with the float
//! model and the clear circuit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hecnn_compile::compiler::{CompileOptions, DEFAULT_CALIBRATION_IMAGES, has_read_grids};
use hecnn_compile::lower::RangeSource;
use hecnn_compile::reference::{ReferenceModel, argmax};
use hecnn_compile::simulate::Simulator;
use hecnn_datasets::DEFAULT_VALIDATION_IMAGES;
use hecnn_model::activation::{Activation, DEFAULT_RANGE};
use hecnn_model::model::ModelFile;
use hecnn_model::quantize::{BitWidth, LutBits, QuantSettings};
use hecnn_runtime::{ClientKey, EvaluationKey, Evaluator, Query, RuntimeFile, generate, median};
use hecnn_train::architecture::Architecture;
use hecnn_train::network::{CircuitTraining, DEFAULT_READ_NOISE};
use hecnn_train::trainer::{Checkpointing, TrainConfig};

use crate::cli::DemoArgs;
use crate::pipeline::{
    LatencyFrom, TrainJob, compile_and_save, load_circuit, load_model, test_images, train_model,
};
use crate::progress::{StageBars, spinner};

/// Trains and compiles unless given a model or circuit; returns the circuit path and the
/// model file, if any (the float column needs it).
fn model_and_circuit(args: &DemoArgs) -> Result<(PathBuf, Option<ModelFile>)> {
    if let Some(circuit) = &args.circuit {
        return Ok((circuit.clone(), None));
    }
    let model = match &args.model {
        Some(path) => load_model(path)?,
        None => {
            println!(
                "== 1. train ({} epochs, circuit-aware: 4-bit tables read with noise)",
                args.epochs
            );
            let four = BitWidth::new(4).expect("a valid width");
            let config = TrainConfig {
                quant: Some(QuantSettings::uniform(four, four)),
                circuit: Some(CircuitTraining {
                    lut_bits: vec![LutBits::new(4).expect("a valid width")],
                    read_noise: vec![DEFAULT_READ_NOISE],
                }),
                epochs: args.epochs as usize,
                ..TrainConfig::new(
                    Architecture::named(&args.architecture)?,
                    Activation::from_name("swish4", DEFAULT_RANGE, 4, "swish4")?,
                )
            };
            train_model(&TrainJob {
                config,
                source: args.data.source("mnist"),
                validation: DEFAULT_VALIDATION_IMAGES,
                limit: None,
                checkpointing: Checkpointing::default(),
                output: args.dir.join("model.json"),
            })?
        }
    };
    let circuit = args.dir.join("model.circuit");
    println!("\n== 2. compile");
    // A circuit-aware model compiles on the grids it was trained on; another model on
    // calibrated ranges with 5-bit tables. The set is the cheapest whose simulated
    // accuracy stays within 0.1 points of clear, down to a per-read error of 2^-20.
    let grids = has_read_grids(&model);
    let options = CompileOptions {
        target_log2_p_error: -20.0,
        ranges: (!grids).then_some(RangeSource::Calibrated),
        lut_bits: (!grids).then(|| vec![LutBits::new(5).expect("a valid width")]),
        ..CompileOptions::default()
    };
    compile_and_save(
        &model,
        &options,
        &args.data.source(&model.dataset),
        DEFAULT_CALIBRATION_IMAGES,
        &circuit,
        false,
        // The demo measures the real latency a minute later.
        LatencyFrom::Table,
    )?;
    Ok((circuit, Some(model)))
}

pub fn run(args: &DemoArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating the demo folder {}", args.dir.display()))?;
    let (circuit_path, model) = model_and_circuit(args)?;
    let circuit = load_circuit(&circuit_path)?;
    let test =
        test_images(&circuit, &args.data.source(&circuit.dataset))?.truncated(args.images as usize);

    println!(
        "\n== 3. client: keys, and {} encrypted test images",
        test.len()
    );
    let bar = spinner("generating keys");
    let (client, evaluation) = generate(&circuit);
    let (client_path, eval_path, query_path) = (
        args.dir.join("model.client-key"),
        args.dir.join("model.eval-key"),
        args.dir.join("query.hecnn"),
    );
    client.save(&client_path)?;
    evaluation.save(&eval_path)?;
    drop((client, evaluation));
    bar.finish_and_clear();
    let client = ClientKey::load(&client_path, &circuit)?;
    let images: Vec<&[u8]> = (0..test.len()).map(|i| test.image(i)).collect();
    client.encrypt(&circuit, &images)?.save(&query_path)?;
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len()) as f64;
    println!(
        "client key {} (secret), evaluation key {} ({:.1} MiB), query {} ({:.1} KiB per image)",
        client_path.display(),
        eval_path.display(),
        size(&eval_path) / (1 << 20) as f64,
        query_path.display(),
        size(&query_path) / 1024.0 / test.len() as f64
    );

    println!(
        "\n== 4. server: {} over ciphertexts, with the evaluation key alone",
        circuit.parameter_set
    );
    let bar = spinner("loading the evaluation key");
    let evaluator = Evaluator::new(&circuit, &EvaluationKey::load(&eval_path, &circuit)?)?;
    bar.finish_and_clear();
    let query = Query::load(&query_path, &circuit)?;
    let (result, timings) = evaluator.evaluate(&query, &StageBars::default())?;
    result.save(&args.dir.join("query.result"))?;

    println!("\n== 5. client: decrypt");
    let predictions = client.decrypt(&circuit, &result)?;
    let reference = model.as_ref().map(ReferenceModel::new);
    let clear = Simulator::clear(&circuit.circuit);
    let class = |c: usize| circuit.class_names[c].clone();
    println!(
        "{:>5}  {:<12} {:<12} {:<12} {:<12} {:>8}",
        "image", "true", "float", "clear", "encrypted", "latency"
    );
    let (mut correct, mut agree_clear) = (0, 0);
    for (i, (prediction, timing)) in predictions.iter().zip(&timings).enumerate() {
        let image = test.image(i);
        let label = usize::from(test.labels[i]);
        let clear_class = argmax(&clear.logits(image, 0));
        correct += usize::from(prediction.class == label);
        agree_clear += usize::from(prediction.class == clear_class);
        println!(
            "{i:>5}  {:<12} {:<12} {:<12} {:<12} {:>7.2}s",
            class(label),
            reference
                .as_ref()
                .map_or("-".to_string(), |r| class(r.predict(image))),
            class(clear_class),
            prediction.class_name,
            timing.total().as_secs_f64()
        );
    }
    let mut latencies: Vec<Duration> = timings.iter().map(|t| t.total()).collect();
    println!(
        "\nencrypted: {correct} of {} correct, {agree_clear} of {} as the clear circuit; median {:.2} s per image ({} PBS, {} threads)",
        test.len(),
        test.len(),
        median(&mut latencies).as_secs_f64(),
        evaluator.pbs_count(),
        rayon::current_num_threads()
    );
    println!(
        "files in {}: replay with `hecnn run {} {} --eval-key {}` and `hecnn decrypt ...`",
        args.dir.display(),
        circuit_path.display(),
        query_path.display(),
        eval_path.display()
    );
    Ok(())
}
