//! The network service: `hecnn serve` (the server), `hecnn classify` (its client), and the
//! load benchmark of `hecnn bench --server`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use hecnn_serve::client::{KeySetup, RemoteCircuit, ServiceClient};
use hecnn_serve::load;
use hecnn_serve::server::auth::Auth;
use hecnn_serve::server::{Limits, ServeConfig, serve_until_signal};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{BenchArgs, ClassifyArgs, RemoteArgs, ServeArgs};
use crate::commands::cluster::coordinator;
use crate::pipeline::{labelled, load_images, test_images};
use crate::progress::{image_bar, spinner};

/// Logs to standard error, `info` and up unless `RUST_LOG` says otherwise.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn serve(args: &ServeArgs) -> Result<()> {
    init_logs();
    let auth = match &args.tokens {
        Some(path) => Auth::from_file(path).context("reading the tokens file")?,
        None => Auth::Disabled,
    };
    let config = ServeConfig {
        circuits: args.circuits.clone(),
        store: args.store.clone(),
        auth,
        limits: Limits {
            key_bytes: args.max_key_mib << 20,
            query_bytes: args.max_query_mib << 20,
            request_timeout: Duration::from_secs(args.request_timeout),
            upload_timeout: Duration::from_secs(args.upload_timeout),
        },
        queue_capacity: args.queue,
        workers: args.workers,
        key_cache: args.key_cache,
        keep_results: Duration::from_secs(args.keep_results),
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
        cluster: coordinator(&args.cluster)?,
    };
    serve_until_signal(&config, args.listen)
        .with_context(|| format!("serving {} on {}", args.circuits.display(), args.listen))
}

/// The client keys' folder: as given, or the user's data folder.
fn keys_dir(remote: &RemoteArgs) -> Result<PathBuf> {
    match &remote.keys_dir {
        Some(dir) => Ok(dir.clone()),
        None => dirs::data_dir()
            .map(|dir| dir.join("hecnn").join("keys"))
            .context("no data folder for this user: give --keys-dir"),
    }
}

/// Connects to the server's circuit with this client's keys, saying what it did.
fn connect(server: &str, remote: &RemoteArgs) -> Result<RemoteCircuit> {
    let service = ServiceClient::new(server, remote.token.clone())?;
    let keys = keys_dir(remote)?;
    let bar = spinner("fetching the circuit; keys: generating or reusing, uploading if needed");
    let (circuit, setup) = RemoteCircuit::connect(service, remote.circuit_name.as_deref(), &keys)
        .with_context(|| format!("connecting to {server}"))?;
    bar.finish_and_clear();
    let file = circuit.circuit();
    println!(
        "circuit {} ({:.16}..., {}, {} PBS per image) on {server}",
        file.name,
        file.fingerprint(),
        file.parameter_set,
        file.circuit.pbs_count()
    );
    println!(
        "keys in {}: {}",
        keys.display(),
        match setup {
            KeySetup::Generated => "generated; evaluation key uploaded",
            KeySetup::Uploaded => "reused; evaluation key uploaded (the server lacked it)",
            KeySetup::Reused => "reused; the server has the evaluation key",
        }
    );
    Ok(circuit)
}

pub fn classify(args: &ClassifyArgs) -> Result<()> {
    let remote = connect(&args.server, &args.remote)?;
    let images = load_images(remote.circuit(), &args.images)?;
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:>9} [{bar:40}] {pos}/{len} PBS ({elapsed})")
            .expect("the template is valid"),
    );
    let predictions = remote.classify(&refs, &|status| {
        bar.set_length(status.reads_total as u64);
        bar.set_position(status.reads_done as u64);
        bar.set_message(format!("{:?}", status.state).to_lowercase());
    })?;
    bar.finish_and_clear();
    for (index, prediction) in predictions.iter().enumerate() {
        println!(
            "image {index}: class {} ({})",
            prediction.class, prediction.class_name
        );
    }
    Ok(())
}

/// `hecnn bench --server`: throughput and latency under `--clients` at once, and the
/// overhead over evaluating the same images locally.
pub fn bench_server(server: &str, args: &BenchArgs) -> Result<()> {
    let remote = connect(server, &args.remote)?;
    let test = test_images(
        remote.circuit(),
        &args.data.source(&remote.circuit().dataset),
    )?
    .truncated(args.images as usize);
    let images = labelled(&test).images;
    let clients = args.clients as usize;
    let bar = image_bar("images", 2 * images.len());
    let report = load::measure(&remote, &images, clients, &|| bar.inc(1))?;
    bar.finish_and_clear();
    let seconds = |d: Duration| d.as_secs_f64();
    println!(
        "{} images, {clients} client(s) at once, one image per job; rounds of {clients} alternate local and service evaluation",
        images.len()
    );
    println!(
        "first job   {:.2} s (the server reads and decompresses the evaluation key; untimed below)",
        seconds(report.first)
    );
    println!(
        "service     {:.2} images/min; latency median {:.2} s, 95th percentile {:.2} s",
        report.images_per_minute(),
        seconds(report.median()),
        seconds(report.p95())
    );
    println!(
        "local run   {:.2} images/min; evaluation median {:.2} s",
        report.local_images_per_minute(),
        seconds(report.local_median())
    );
    println!(
        "overhead    {:+.1}% (service rounds' wall-clock {:.1} s over local evaluations {:.1} s)",
        100.0 * report.overhead(),
        seconds(report.wall),
        seconds(report.local.iter().sum())
    );
    println!(
        "own share   {:+.1}% (the service rounds' wall-clock over the {:.1} s of evaluation the server reported: transfers, queue, encryption, decryption)",
        100.0 * report.service_share(),
        seconds(report.remote.iter().sum())
    );
    println!(
        "agreement   {} of {} images classified as the local evaluation did",
        report.agreeing,
        images.len()
    );
    Ok(())
}
