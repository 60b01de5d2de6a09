//! `hecnn demo`: the whole pipeline in a few minutes, as a user would run it step by step:
//! train a small circuit-aware model, compile it, generate keys, encrypt test images, evaluate them
//! over ciphertexts with the evaluation key alone, decrypt, and compare with the float
//! model and the clear circuit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hecnn_compile::compiler::has_read_grids;
use hecnn_compile::model::ModelFile;
use hecnn_compile::reference::{ReferenceModel, argmax};
use hecnn_compile::simulate::Simulator;
use hecnn_runtime::{median, ClientKey, EvaluationKey, Evaluator, Query, RuntimeFile, generate};

use crate::cli::{CompileArgs, DemoArgs, TrainArgs, step};
use crate::commands::encrypted::{StageBars, load_circuit, spinner, test_images};

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

/// Trains and compiles unless given a model or circuit; returns the circuit path and the
/// model file, if any (the float column needs it).
fn model_and_circuit(args: &DemoArgs) -> Result<(PathBuf, Option<ModelFile>)> {
    if let Some(circuit) = &args.circuit {
        return Ok((circuit.clone(), None));
    }
    let model_path = match &args.model {
        Some(model) => model.clone(),
        None => {
            let model = args.dir.join("model.json");
            let epochs = args.epochs.to_string();
            let mut train_args = vec![
                "--model",
                &args.architecture,
                "--activation",
                "swish4",
                "--qat",
                "--lut-bits",
                "4",
                "--epochs",
                &epochs,
                "-o",
                path_str(&model),
            ];
            if let Some(dataset) = &args.data.dataset {
                train_args.extend(["--dataset", dataset]);
            }
            if let Some(dir) = &args.data.data_dir {
                train_args.extend(["--data-dir", path_str(dir)]);
            }
            println!(
                "== 1. train ({} epochs, circuit-aware: 4-bit tables read with noise)",
                args.epochs
            );
            crate::commands::train::run(&step::<TrainArgs>("train", &train_args))?;
            model
        }
    };
    let circuit = args.dir.join("model.circuit");
    println!("\n== 2. compile");
    let model = ModelFile::load(&model_path)
        .with_context(|| format!("loading the model file {}", model_path.display()))?;
    // A circuit-aware model compiles on the grids it was trained on; another model on
    // calibrated ranges with 5-bit tables. The set is the cheapest whose simulated
    // accuracy stays within 0.1 points of clear, down to a per-read error of 2^-20.
    let mut compile_args = vec![
        path_str(&model_path),
        "-o",
        path_str(&circuit),
        "--p-error",
        "2^-20",
    ];
    if !has_read_grids(&model) {
        compile_args.extend(["--ranges", "calibrated", "--lut-bits", "5"]);
    }
    crate::commands::compile::run(&step::<CompileArgs>("compile", &compile_args))?;
    Ok((circuit, Some(model)))
}

pub fn run(args: &DemoArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating the demo folder {}", args.dir.display()))?;
    let (circuit_path, model) = model_and_circuit(args)?;
    let circuit = load_circuit(&circuit_path)?;
    let test = test_images(&circuit, &args.data)?.truncated(args.images as usize);

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
