//! The load benchmark (`hecnn bench --server`): clients classifying images through a
//! server at once, against a local evaluation of the same images with the same keys.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hecnn_runtime::{EvaluationKey, Evaluator, NoProgress, median};

use crate::client::{ClientError, RemoteCircuit};

/// What [`measure`] saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Clients submitting at once.
    pub clients: usize,
    /// Latency of one untimed image first: the server reads and decompresses the
    /// evaluation key on a key's first job (once per key while it stays in its cache).
    pub first: Duration,
    /// Wall-clock time of the service run, first submission to last result.
    pub wall: Duration,
    /// Each image's latency through the service: encrypt, submit, wait, fetch, decrypt.
    pub latencies: Vec<Duration>,
    /// Each image's evaluation time in this process (`hecnn run`'s work, no service).
    pub local: Vec<Duration>,
    /// Images the service classified as the local evaluation did.
    pub agreeing: usize,
}

/// The `q`-quantile of durations (nearest rank).
fn quantile(times: &[Duration], q: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl LoadReport {
    /// Images through the service per minute.
    pub fn images_per_minute(&self) -> f64 {
        self.latencies.len() as f64 * 60.0 / self.wall.as_secs_f64()
    }

    /// Images per minute of the local evaluation, one after the other.
    pub fn local_images_per_minute(&self) -> f64 {
        self.local.len() as f64 * 60.0 / self.local.iter().sum::<Duration>().as_secs_f64()
    }

    /// Median latency through the service.
    pub fn median(&self) -> Duration {
        median(&mut self.latencies.clone())
    }

    /// 95th-percentile latency through the service.
    pub fn p95(&self) -> Duration {
        quantile(&self.latencies, 0.95)
    }

    /// Median local evaluation time.
    pub fn local_median(&self) -> Duration {
        median(&mut self.local.clone())
    }

    /// What the service costs over evaluating locally: the service's wall-clock time over
    /// the local evaluations' total, minus one (the encryption, transfers, queueing and
    /// decryption a local `hecnn run` does not do).
    pub fn overhead(&self) -> f64 {
        self.wall.as_secs_f64() / self.local.iter().sum::<Duration>().as_secs_f64() - 1.0
    }
}

/// Evaluates `images` locally with the client's keys, then classifies one image through the
/// server untimed (the server's first job of a key decompresses it), then every image,
/// `clients` at once (each image one job). `on_image` hears each image done.
pub fn measure(
    remote: &RemoteCircuit,
    images: &[&[u8]],
    clients: usize,
    on_image: &(dyn Fn() + Sync),
) -> Result<LoadReport, ClientError> {
    let circuit = remote.circuit();
    let key = EvaluationKey::load(remote.evaluation_key_path(), circuit)?;
    let evaluator = Evaluator::new(circuit, &key)?;
    let mut local = Vec::with_capacity(images.len());
    let mut local_classes = Vec::with_capacity(images.len());
    for image in images {
        let query = remote.client_key().encrypt(circuit, &[image])?;
        let (result, timings) = evaluator.evaluate(&query, &NoProgress)?;
        local.push(timings[0].total());
        local_classes.push(remote.client_key().decrypt(circuit, &result)?[0].class);
        on_image();
    }
    drop(evaluator);
    let started = Instant::now();
    remote.classify(&images[..1], &|_| {})?;
    let first = started.elapsed();
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(vec![None; images.len()]);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<(), ClientError> {
                    loop {
                        let index = next.fetch_add(1, Ordering::SeqCst);
                        let Some(image) = images.get(index) else {
                            return Ok(());
                        };
                        let submitted = Instant::now();
                        let prediction = remote.classify(&[image], &|_| {})?.remove(0);
                        outcomes.lock().unwrap_or_else(|e| e.into_inner())[index] =
                            Some((prediction.class, submitted.elapsed()));
                        on_image();
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().expect("a client thread does not panic"))
    })?;
    let wall = started.elapsed();
    let outcomes: Vec<(usize, Duration)> = outcomes
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|outcome| outcome.expect("every image was classified"))
        .collect();
    let agreeing = outcomes
        .iter()
        .zip(&local_classes)
        .filter(|((class, _), local)| class == *local)
        .count();
    Ok(LoadReport {
        clients,
        first,
        wall,
        latencies: outcomes.iter().map(|(_, latency)| *latency).collect(),
        local,
        agreeing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let times: Vec<Duration> = (1..=20).map(Duration::from_secs).collect();
        assert_eq!(quantile(&times, 0.95), Duration::from_secs(19));
        assert_eq!(quantile(&times, 1.0), Duration::from_secs(20));
        assert_eq!(quantile(&times[..1], 0.95), Duration::from_secs(1));
    }
}
