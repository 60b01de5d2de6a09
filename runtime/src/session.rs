//! Client and server in one process: encrypted accuracy (`hecnn eval --mode encrypted`)
//! and the benchmark of a circuit (`hecnn bench`), measured as a deployment would run
//! them: the server side built from the evaluation key alone, the client keeping its key.

use std::time::{Duration, Instant};

use hecnn_compile::circuit_file::CircuitFile;
use hecnn_compile::reference::argmax;
use hecnn_compile::simulate::Simulator;

use crate::client::Prediction;
use crate::envelope::RuntimeFile;
use crate::error::RuntimeError;
use crate::keys::{ClientKey, EvaluationKey, generate};
use crate::server::{Evaluator, NoProgress, Progress, Timings};

/// A client and a server of one circuit, in one process.
pub struct LocalSession<'c> {
    circuit: &'c CircuitFile,
    client: ClientKey,
    evaluator: Evaluator<'c>,
}

impl<'c> LocalSession<'c> {
    /// The server side built from the evaluation key alone; the client keeps its key.
    pub fn new(
        circuit: &'c CircuitFile,
        client: ClientKey,
        evaluation: &EvaluationKey,
    ) -> Result<Self, RuntimeError> {
        Ok(Self {
            circuit,
            client,
            evaluator: Evaluator::new(circuit, evaluation)?,
        })
    }

    /// Fresh keys; returns the session and the key generation time.
    pub fn with_fresh_keys(circuit: &'c CircuitFile) -> Result<(Self, Duration), RuntimeError> {
        let started = Instant::now();
        let (client, evaluation) = generate(circuit);
        let keygen = started.elapsed();
        Ok((Self::new(circuit, client, &evaluation)?, keygen))
    }

    /// Encrypts one image, evaluates it over ciphertexts, decrypts the result.
    pub fn classify(
        &self,
        image: &[u8],
        progress: &dyn Progress,
    ) -> Result<(Prediction, Timings), RuntimeError> {
        let query = self.client.encrypt(self.circuit, &[image])?;
        let (result, timings) = self.evaluator.evaluate(&query, progress)?;
        let prediction = self.client.decrypt(self.circuit, &result)?.remove(0);
        Ok((prediction, timings[0]))
    }

    /// Every image classified encrypted, one after the other (each evaluation uses every
    /// core): the classes and the time of each evaluation. `on_image` hears each one done.
    pub fn predictions(
        &self,
        images: &[&[u8]],
        on_image: &dyn Fn(),
    ) -> Result<(Vec<usize>, Vec<Timings>), RuntimeError> {
        let mut classes = Vec::with_capacity(images.len());
        let mut timings = Vec::with_capacity(images.len());
        for image in images {
            let (prediction, t) = self.classify(image, &NoProgress)?;
            classes.push(prediction.class);
            timings.push(t);
            on_image();
        }
        Ok((classes, timings))
    }

    /// The server side.
    pub fn evaluator(&self) -> &Evaluator<'c> {
        &self.evaluator
    }

    /// The client side.
    pub fn client(&self) -> &ClientKey {
        &self.client
    }
}

/// What [`bench`] measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Key generation time.
    pub keygen: Duration,
    /// The evaluation key as shipped (seeded), bytes.
    pub evaluation_key_bytes: usize,
    /// The client key, bytes.
    pub client_key_bytes: usize,
    /// Time the server takes to decompress the evaluation key.
    pub decompress: Duration,
    /// A query of one image, bytes.
    pub query_bytes: usize,
    /// A result of one image, bytes.
    pub result_bytes: usize,
    /// Time of each image's evaluation.
    pub timings: Vec<Timings>,
    /// Images classified as the clear circuit classifies them.
    pub agreeing_with_clear: usize,
    /// Table reads per image.
    pub pbs: usize,
    /// Median time of one keyswitch + PBS on one core.
    pub one_pbs: Duration,
}

/// The median of durations (sorted in place; the upper one of an even count).
///
/// # Panics
/// On an empty list.
pub fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

impl BenchReport {
    /// The median evaluation time.
    pub fn median_latency(&self) -> Duration {
        median(&mut self.timings.iter().map(Timings::total).collect::<Vec<_>>())
    }

    /// The latency floor on `threads` cores: every core busy with PBS, nothing else.
    pub fn floor(&self, threads: usize) -> Duration {
        self.one_pbs
            .mul_f64(self.pbs as f64 / threads.max(1) as f64)
    }
}

/// Where [`bench`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchStep {
    /// Generating keys.
    Keys,
    /// Serialising and decompressing the evaluation key.
    EvaluationKey,
    /// Classifying the images encrypted.
    Images,
    /// Timing single PBS.
    Pbs,
}

/// Keys, sizes and encrypted latency of `circuit` on this machine: fresh keys, the server
/// built from the serialised evaluation key's content, `images` (at least one) classified
/// one after the other, then `pbs_samples` single-core table reads timed. `on_step` hears
/// each step start, `on_image` each image done.
pub fn bench(
    circuit: &CircuitFile,
    images: &[&[u8]],
    pbs_samples: usize,
    on_step: &dyn Fn(BenchStep),
    on_image: &dyn Fn(),
) -> Result<BenchReport, RuntimeError> {
    assert!(!images.is_empty(), "a benchmark needs an image");
    on_step(BenchStep::Keys);
    let started = Instant::now();
    let (client, evaluation) = generate(circuit);
    let keygen = started.elapsed();
    on_step(BenchStep::EvaluationKey);
    let evaluation_key_bytes = evaluation.to_bytes().len();
    let client_key_bytes = client.to_bytes().len();
    let started = Instant::now();
    let session = LocalSession::new(circuit, client, &evaluation)?;
    let decompress = started.elapsed();
    drop(evaluation);
    let query = session.client().encrypt(circuit, &images[..1])?;
    let query_bytes = query.to_bytes().len();
    let (result, _) = session.evaluator().evaluate(&query, &NoProgress)?;
    let result_bytes = result.to_bytes().len();
    on_step(BenchStep::Images);
    let (classes, timings) = session.predictions(images, on_image)?;
    let clear = Simulator::clear(&circuit.circuit);
    let agreeing_with_clear = images
        .iter()
        .zip(&classes)
        .filter(|(image, class)| argmax(&clear.logits(image, 0)) == **class)
        .count();
    on_step(BenchStep::Pbs);
    let one_pbs = session.evaluator().time_one_pbs(pbs_samples);
    Ok(BenchReport {
        keygen,
        evaluation_key_bytes,
        client_key_bytes,
        decompress,
        query_bytes,
        result_bytes,
        timings,
        agreeing_with_clear,
        pbs: session.evaluator().pbs_count(),
        one_pbs,
    })
}
