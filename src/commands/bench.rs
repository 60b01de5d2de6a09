//! `hecnn bench`: keys, sizes and encrypted latency of a circuit on this machine, and how
//! far the latency is from its floor (every core busy with PBS, nothing else).

use std::time::{Duration, Instant};

use anyhow::Result;
use hecnn_compile::simulate::Simulator;
use hecnn_runtime::{NoProgress, RuntimeFile, generate};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::BenchArgs;
use crate::commands::encrypted::{LocalSession, load_circuit, spinner, test_images};

fn kib(bytes: usize) -> f64 {
    bytes as f64 / 1024.0
}

/// The median of durations (sorted in place).
pub fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let circuit = load_circuit(&args.circuit)?;
    let test = test_images(&circuit, &args.data)?.truncated(args.images as usize);
    let cores = rayon::current_num_threads();
    println!(
        "circuit {} ({}, {} table bits), {cores} threads",
        circuit.name,
        circuit.parameter_set,
        circuit.circuit.lut_widths()
    );

    let bar = spinner("generating keys");
    let started = Instant::now();
    let (client, evaluation) = generate(&circuit);
    let keygen = started.elapsed();
    bar.set_message("serialising the evaluation key");
    let eval_key_bytes = evaluation.to_bytes().len();
    let client_key_bytes = client.to_bytes().len();
    bar.set_message("decompressing the evaluation key");
    let started = Instant::now();
    let session = LocalSession::new(&circuit, client, &evaluation)?;
    let decompress = started.elapsed();
    drop(evaluation);
    bar.finish_and_clear();
    let query = session.client().encrypt(&circuit, &[test.image(0)])?;
    let query_bytes = query.to_bytes().len();
    let (result, _) = session.evaluator().evaluate(&query, &NoProgress)?;
    let result_bytes = result.to_bytes().len();

    println!("keygen          {:.2} s", keygen.as_secs_f64());
    println!(
        "evaluation key  {:.1} MiB on disk (compressed), decompressed by the server in {:.2} s",
        eval_key_bytes as f64 / (1 << 20) as f64,
        decompress.as_secs_f64()
    );
    println!("client key      {:.1} KiB", kib(client_key_bytes));
    println!(
        "query           {:.1} KiB per image ({} pixels)",
        kib(query_bytes),
        circuit.input.shape.len()
    );
    println!("result          {:.1} KiB per image", kib(result_bytes));

    let bar = ProgressBar::new(test.len() as u64).with_style(
        ProgressStyle::with_template("encrypted [{bar:40}] {pos}/{len} images ({eta})")
            .expect("the template is valid"),
    );
    let clear = Simulator::clear(&circuit.circuit);
    let mut latencies = Vec::new();
    let mut linear = Duration::ZERO;
    let mut agreeing = 0;
    for index in 0..test.len() {
        let image = test.image(index);
        let (prediction, timings) = session.classify(image, &NoProgress)?;
        latencies.push(timings.total());
        linear += timings.linear;
        agreeing += usize::from(
            prediction.class == hecnn_compile::reference::argmax(&clear.logits(image, 0)),
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    let total: Duration = latencies.iter().sum();
    let (min, max) = (
        *latencies.iter().min().expect("at least one image"),
        *latencies.iter().max().expect("at least one image"),
    );
    let latency = median(&mut latencies);
    let pbs = session.evaluator().pbs_count();
    let one_pbs = session.evaluator().time_one_pbs(args.pbs_samples as usize);
    let floor = one_pbs.mul_f64(pbs as f64 / cores as f64);

    println!("PBS per image   {pbs}");
    println!(
        "latency         {:.2} s per image (median of {}; min {:.2} s, max {:.2} s); linear maps {:.1}% of the time",
        latency.as_secs_f64(),
        test.len(),
        min.as_secs_f64(),
        max.as_secs_f64(),
        100.0 * linear.as_secs_f64() / total.as_secs_f64()
    );
    println!(
        "throughput      {:.0} PBS per second",
        pbs as f64 / latency.as_secs_f64()
    );
    println!(
        "one PBS         {:.2} ms on one core (median of {})",
        one_pbs.as_secs_f64() * 1e3,
        args.pbs_samples
    );
    println!(
        "floor           {:.2} s = {pbs} PBS x {:.2} ms / {cores} threads; achieved / floor = {:.2}",
        floor.as_secs_f64(),
        one_pbs.as_secs_f64() * 1e3,
        latency.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "agreement       {agreeing} of {} images classified as the clear circuit does",
        test.len()
    );
    Ok(())
}
