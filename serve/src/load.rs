//! The load benchmark (`hecnn bench --server`): clients classifying images through a
//! server at once, against a local evaluation of the same images with the same keys.

use std::cell::Cell;
use std::time::{Duration, Instant};

use hecnn_runtime::{EvaluationKey, Evaluator, NoProgress, median};

use crate::api::JobStatus;
use crate::client::{ClientError, RemoteCircuit};

/// What [`measure`] saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Clients submitting at once.
    pub clients: usize,
    /// Latency of one untimed image first: the server reads and decompresses the
    /// evaluation key on a key's first job (once per key while it stays in its cache).
    pub first: Duration,
    /// Wall-clock time of the service's rounds, first submission to last result of each,
    /// summed.
    pub wall: Duration,
    /// Each image's latency through the service: encrypt, submit, wait, fetch, decrypt.
    pub latencies: Vec<Duration>,
    /// Each image's evaluation time in this process (`hecnn run`'s work, no service).
    pub local: Vec<Duration>,
    /// Each image's evaluation time on the server, as the server reported it.
    pub remote: Vec<Duration>,
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

    /// The service's own share: its wall-clock time over the evaluations the server
    /// reported, minus one. Unlike [`Self::overhead`] it does not move with the machine's
    /// speed between the local and the remote evaluations of the same work.
    pub fn service_share(&self) -> f64 {
        self.wall.as_secs_f64() / self.remote.iter().sum::<Duration>().as_secs_f64() - 1.0
    }
}

/// Classifies one image through the server untimed (the server's first job of a key
/// decompresses it), then `images` in rounds of `clients`: each round evaluates its images
/// locally with the client's keys, one after the other, then through the server, `clients`
/// at once (each image one job). Alternating keeps the two sides' figures comparable on a
/// machine whose speed drifts by several percent within minutes. `on_image` hears each
/// image done (twice: locally and through the server).
pub fn measure(
    remote: &RemoteCircuit,
    images: &[&[u8]],
    clients: usize,
    on_image: &(dyn Fn() + Sync),
) -> Result<LoadReport, ClientError> {
    let circuit = remote.circuit();
    let key = EvaluationKey::load(remote.evaluation_key_path(), circuit)?;
    let evaluator = Evaluator::new(circuit, &key)?;
    let started = Instant::now();
    remote.classify(&images[..1], &|_| {})?;
    let first = started.elapsed();
    let clients = clients.max(1);
    let mut report = LoadReport {
        clients,
        first,
        wall: Duration::ZERO,
        latencies: Vec::with_capacity(images.len()),
        local: Vec::with_capacity(images.len()),
        remote: Vec::with_capacity(images.len()),
        agreeing: 0,
    };
    for round in images.chunks(clients) {
        let mut local_classes = Vec::with_capacity(round.len());
        for image in round {
            let query = remote.client_key().encrypt(circuit, &[image])?;
            let (result, timings) = evaluator.evaluate(&query, &NoProgress)?;
            report.local.push(timings[0].total());
            local_classes.push(remote.client_key().decrypt(circuit, &result)?[0].class);
            on_image();
        }
        let started = Instant::now();
        let outcomes = std::thread::scope(|scope| {
            let clients: Vec<_> = round
                .iter()
                .map(|image| {
                    scope.spawn(|| -> Result<(usize, Duration, Duration), ClientError> {
                        let submitted = Instant::now();
                        let evaluation = Cell::new(Duration::ZERO);
                        let on_status = |status: &JobStatus| {
                            if let Some(seconds) = status.evaluation_seconds {
                                evaluation.set(Duration::from_secs_f64(seconds));
                            }
                        };
                        let prediction = remote.classify(&[image], &on_status)?.remove(0);
                        on_image();
                        let evaluation = evaluation.get();
                        Ok((prediction.class, submitted.elapsed(), evaluation))
                    })
                })
                .collect();
            clients
                .into_iter()
                .map(|client| client.join().expect("a client thread does not panic"))
                .collect::<Result<Vec<_>, _>>()
        })?;
        report.wall += started.elapsed();
        for ((class, latency, evaluation), local) in outcomes.into_iter().zip(local_classes) {
            report.latencies.push(latency);
            report.remote.push(evaluation);
            report.agreeing += usize::from(class == local);
        }
    }
    Ok(report)
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
