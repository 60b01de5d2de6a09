//! The cluster: `hecnn worker`, and the coordinator that `hecnn run --nats` and `hecnn
//! serve --nats` send their table reads through.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hecnn_cluster::worker::{self, WorkerOptions};
use hecnn_cluster::{Coordinator, CoordinatorOptions};

use crate::cli::{ClusterArgs, WorkerArgs};
use crate::commands::service::init_logs;

pub fn worker(args: &WorkerArgs) -> Result<()> {
    init_logs();
    let defaults = WorkerOptions::default();
    let options = WorkerOptions {
        concurrency: args.concurrency.unwrap_or(defaults.concurrency),
        key_cache: args.key_cache,
    };
    worker::run_until_signal(&args.nats, options)
        .with_context(|| format!("working for the cluster at {}", args.nats))
}

/// The coordinator `args` ask for (`--nats`), connected; none without `--nats`.
pub fn coordinator(args: &ClusterArgs) -> Result<Option<Arc<Coordinator>>> {
    let Some(url) = &args.nats else {
        return Ok(None);
    };
    let options = CoordinatorOptions {
        chunk_reads: args.chunk_reads as usize,
        timeout: Duration::from_secs(args.nats_timeout),
        ack_wait: Duration::from_secs(args.ack_wait),
    };
    Coordinator::connect(url, options)
        .map(Some)
        .with_context(|| format!("joining the cluster at {url}"))
}
