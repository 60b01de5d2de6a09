//! The encrypted workflow: `hecnn keygen`, `encrypt` and `decrypt` (the client), `run`
//! (the server).

use std::time::Instant;

use anyhow::{Context, Result};
use hecnn_runtime::{
    ClientKey, EncryptedResult, EvaluationKey, Evaluator, Query, RuntimeFile, TableReader, generate,
};

use crate::cli::{DecryptArgs, EncryptArgs, KeygenArgs, RunArgs};
use crate::commands::cluster::coordinator;
use crate::pipeline::{load_circuit, load_images};
use crate::progress::{StageBars, spinner};

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

pub fn keygen(args: &KeygenArgs) -> Result<()> {
    let circuit = load_circuit(&args.circuit)?;
    let bar = spinner("generating keys");
    let started = Instant::now();
    let (client, evaluation) = generate(&circuit);
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let client_path = args.client_key.path(&args.circuit);
    let eval_path = args.eval_key.path(&args.circuit);
    client
        .save(&client_path)
        .with_context(|| format!("writing the client key {}", client_path.display()))?;
    evaluation
        .save(&eval_path)
        .with_context(|| format!("writing the evaluation key {}", eval_path.display()))?;
    println!(
        "keys for {} ({}) generated in {:.1} s",
        circuit.name,
        circuit.parameter_set,
        elapsed.as_secs_f64()
    );
    println!(
        "client key      {}: secret, keep it on the client",
        client_path.display()
    );
    println!(
        "evaluation key  {} ({:.1} MiB): give it to the server",
        eval_path.display(),
        mib(std::fs::metadata(&eval_path).map_or(0, |m| m.len() as usize))
    );
    Ok(())
}

pub fn encrypt(args: &EncryptArgs) -> Result<()> {
    let circuit = load_circuit(&args.circuit)?;
    let key_path = args.client_key.path(&args.circuit);
    let client = ClientKey::load(&key_path, &circuit)
        .with_context(|| format!("loading the client key {}", key_path.display()))?;
    let images = load_images(&circuit, &args.images)?;
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let query = client
        .encrypt(&circuit, &refs)
        .with_context(|| format!("encrypting for the circuit {}", args.circuit.display()))?;
    query
        .save(&args.output)
        .with_context(|| format!("writing the query {}", args.output.display()))?;
    let bytes = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    println!(
        "query {}: {} image(s), {:.1} KiB",
        args.output.display(),
        query.len(),
        bytes as f64 / 1024.0
    );
    Ok(())
}

pub fn run(args: &RunArgs) -> Result<()> {
    if args.output.is_some() && args.queries.len() > 1 {
        anyhow::bail!("--output names the result of a single query; give one query or none");
    }
    let circuit = load_circuit(&args.circuit)?;
    let key_path = args.eval_key.path(&args.circuit);
    let bar = spinner("loading the evaluation key");
    let key = EvaluationKey::load(&key_path, &circuit)
        .with_context(|| format!("loading the evaluation key {}", key_path.display()))?;
    match coordinator(&args.cluster)? {
        Some(cluster) => {
            bar.set_message("placing the evaluation key in the cluster's key store");
            let reads = cluster.reader(&circuit, &key)?;
            drop(key);
            bar.finish_and_clear();
            let evaluator = Evaluator::with_reader(&circuit, &reads);
            answer(args, &evaluator)?;
            println!(
                "table reads on the cluster's workers: {:.2} s of reading in all (the chunks' own times)",
                reads.worker_time().as_secs_f64()
            );
        }
        None => {
            bar.set_message("decompressing the evaluation key");
            let evaluator = Evaluator::new(&circuit, &key)?;
            drop(key);
            bar.finish_and_clear();
            answer(args, &evaluator)?;
        }
    }
    Ok(())
}

/// Evaluates each query of `args` and writes its result.
fn answer<R: TableReader>(args: &RunArgs, evaluator: &Evaluator<R>) -> Result<()> {
    for query_path in &args.queries {
        let query = Query::load(query_path, evaluator.circuit())
            .with_context(|| format!("loading the query {}", query_path.display()))?;
        let (result, timings) = evaluator.evaluate(&query, &StageBars::default())?;
        let output = args
            .output
            .clone()
            .unwrap_or_else(|| query_path.with_extension("result"));
        result
            .save(&output)
            .with_context(|| format!("writing the result {}", output.display()))?;
        for (index, t) in timings.iter().enumerate() {
            println!(
                "{} image {index}: {:.2} s ({} PBS, linear maps {:.0} ms)",
                query_path.display(),
                t.total().as_secs_f64(),
                evaluator.pbs_count(),
                t.linear.as_secs_f64() * 1e3
            );
        }
        println!("result written to {}", output.display());
    }
    Ok(())
}

pub fn decrypt(args: &DecryptArgs) -> Result<()> {
    let circuit = load_circuit(&args.circuit)?;
    let key_path = args.client_key.path(&args.circuit);
    let client = ClientKey::load(&key_path, &circuit)
        .with_context(|| format!("loading the client key {}", key_path.display()))?;
    let result = EncryptedResult::load(&args.result, &circuit)
        .with_context(|| format!("loading the result {}", args.result.display()))?;
    for (index, prediction) in client.decrypt(&circuit, &result)?.iter().enumerate() {
        println!(
            "image {index}: class {} ({})  logits {}",
            prediction.class,
            prediction.class_name,
            prediction
                .logits
                .iter()
                .map(|l| format!("{l:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}
