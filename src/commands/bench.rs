//! `hecnn bench`: keys, sizes and encrypted latency of a circuit on this machine, and how
//! far the latency is from its floor (every core busy with PBS, nothing else).

use std::time::Duration;

use anyhow::Result;
use hecnn_runtime::{BenchStep, bench};

use crate::cli::BenchArgs;
use crate::pipeline::{labelled, load_circuit, test_images};
use crate::progress::spinner;

fn kib(bytes: usize) -> f64 {
    bytes as f64 / 1024.0
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let circuit = match (&args.server, &args.circuit) {
        (Some(server), _) => return super::service::bench_server(server, args),
        (None, Some(circuit)) => load_circuit(circuit)?,
        (None, None) => anyhow::bail!("give a circuit file, or --server"),
    };
    let test =
        test_images(&circuit, &args.data.source(&circuit.dataset))?.truncated(args.images as usize);
    let threads = rayon::current_num_threads();
    println!(
        "circuit {} ({}, {} table bits), {threads} threads",
        circuit.name,
        circuit.parameter_set,
        circuit.circuit.lut_widths()
    );
    let bar = spinner("generating keys");
    let images = labelled(&test).images;
    let report = bench(
        &circuit,
        &images,
        args.pbs_samples as usize,
        &|step| match step {
            BenchStep::Keys => bar.set_message("generating keys"),
            BenchStep::EvaluationKey => {
                bar.set_message("serialising and decompressing the evaluation key")
            }
            BenchStep::Images => {
                bar.set_message(format!("classifying {} images encrypted", images.len()))
            }
            BenchStep::Pbs => bar.set_message("timing single PBS"),
        },
        &|| bar.inc(1),
    )?;
    bar.finish_and_clear();
    let totals: Vec<Duration> = report.timings.iter().map(|t| t.total()).collect();
    let total: Duration = totals.iter().sum();
    let linear: Duration = report.timings.iter().map(|t| t.linear).sum();
    let (min, max) = (
        *totals.iter().min().expect("at least one image"),
        *totals.iter().max().expect("at least one image"),
    );
    let latency = report.median_latency();
    let floor = report.floor(threads);
    let pbs = report.pbs;

    println!("keygen          {:.2} s", report.keygen.as_secs_f64());
    println!(
        "evaluation key  {:.1} MiB on disk (compressed), decompressed by the server in {:.2} s",
        report.evaluation_key_bytes as f64 / (1 << 20) as f64,
        report.decompress.as_secs_f64()
    );
    println!("client key      {:.1} KiB", kib(report.client_key_bytes));
    println!(
        "query           {:.1} KiB per image ({} pixels)",
        kib(report.query_bytes),
        circuit.input.shape.len()
    );
    println!(
        "result          {:.1} KiB per image",
        kib(report.result_bytes)
    );
    println!("PBS per image   {pbs}");
    println!(
        "latency         {:.2} s per image (median of {}; min {:.2} s, max {:.2} s); linear maps {:.1}% of the time",
        latency.as_secs_f64(),
        totals.len(),
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
        report.one_pbs.as_secs_f64() * 1e3,
        args.pbs_samples
    );
    println!(
        "floor           {:.2} s = {pbs} PBS x {:.2} ms / {threads} threads; achieved / floor = {:.2}",
        floor.as_secs_f64(),
        report.one_pbs.as_secs_f64() * 1e3,
        latency.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "agreement       {} of {} images classified as the clear circuit does",
        report.agreeing_with_clear,
        totals.len()
    );
    Ok(())
}
