//! A real NATS server (started here, stopped by its process id), in-process workers and a
//! coordinator: cluster results equal local ones bit for bit (within one process PBS is
//! deterministic: the same key, inputs and FFT plans; the runtime's tests check local
//! results against the clear circuit); a round without workers
//! fails in time and leaves nothing queued; a missing key and a malformed chunk fail
//! cleanly.

use std::time::{Duration, Instant};

use hecnn_cluster::protocol::{KEY_BUCKET, STREAM};
use hecnn_cluster::testing::{NatsServer, Workers};
use hecnn_cluster::{Coordinator, CoordinatorOptions};
use hecnn_compile::circuit::{Circuit, Decoding, Linear, Read, Stage, Tables};
use hecnn_compile::circuit_file::{CIRCUIT_FORMAT, CIRCUIT_VERSION, CircuitFile, InputQuant};
use hecnn_compile::params::ParameterSetName;
use hecnn_model::model::Shape;
use hecnn_model::quantize::LutBits;
use hecnn_runtime::{ClientKey, EvaluationKey, Evaluator, NoProgress, RuntimeFile, generate};

/// Three inputs `0..=3`, `reads` table reads (the two rows of the runtime's tiny test
/// circuit, alternating), then two logits: enough reads for several chunks.
fn wide_circuit(reads: usize) -> CircuitFile {
    let lut_bits = LutBits::new(3).unwrap();
    let entry = lut_bits.box_width();
    let rows = [[2, -1, 1], [-2, 1, -1]];
    let offsets = [6 * entry, 9 * entry];
    let levels = [vec![3, 0, 5, 7, 1, 2, 6, 4], vec![7, 6, 5, 4, 3, 2, 1, 0]];
    let circuit = Circuit::new(vec![
        Stage {
            label: "dense+act".into(),
            linear: Linear::Dense {
                inputs: 3,
                weights: (0..reads).flat_map(|j| rows[j % 2]).collect(),
            },
            input_max: 3,
            input_unit: entry,
            read: Read::Tables(Tables {
                lut_bits,
                offsets: (0..reads).map(|j| offsets[j % 2]).collect(),
                levels: (0..reads).map(|j| levels[j % 2].clone()).collect(),
            }),
        },
        Stage {
            label: "dense".into(),
            linear: Linear::Dense {
                inputs: reads,
                weights: (0..2 * reads)
                    .map(|i| [1, -2, 3, 1][i % 4] * if i < reads { 1 } else { -1 })
                    .collect(),
            },
            input_max: 7,
            // |A| <= 7 * 3 * reads < 2^10 for up to 48 reads.
            input_unit: 1 << 52,
            read: Read::Logits(Decoding {
                scale: vec![1.0, 1.0],
                shift: vec![0.0, 0.0],
            }),
        },
    ])
    .unwrap();
    CircuitFile {
        format: CIRCUIT_FORMAT.into(),
        version: CIRCUIT_VERSION,
        name: "wide".into(),
        dataset: "none".into(),
        class_names: vec!["a".into(), "b".into()],
        input: InputQuant {
            shape: Shape::vector(3),
            max: 3,
        },
        parameter_set: ParameterSetName::new("V1_8_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128")
            .unwrap(),
        target_log2_p_error: -40.0,
        circuit,
    }
}

fn options(timeout: Duration) -> CoordinatorOptions {
    CoordinatorOptions {
        chunk_reads: 5,
        timeout,
        ack_wait: Duration::from_secs(5),
    }
}

/// A leaked circuit and fresh keys (the evaluator borrows the circuit).
fn setup(reads: usize) -> (&'static CircuitFile, ClientKey, EvaluationKey) {
    let circuit: &'static CircuitFile = Box::leak(Box::new(wide_circuit(reads)));
    let (client, evaluation) = generate(circuit);
    (circuit, client, evaluation)
}

fn images() -> Vec<Vec<u8>> {
    (0..4u8).map(|i| vec![i, 3 - i, (i * 2) % 4]).collect()
}

#[test]
fn cluster_reads_equal_local_reads() {
    let server = NatsServer::start();
    let (circuit, client, evaluation) = setup(37);
    let images = images();
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let query = client.encrypt(circuit, &refs).unwrap();
    let (local, _) = Evaluator::new(circuit, &evaluation)
        .unwrap()
        .evaluate(&query, &NoProgress)
        .unwrap();

    // The coordinator first: workers started before it wait for the queue (tested by
    // the CLI test); here they find it.
    let coordinator = Coordinator::connect(&server.url, options(Duration::from_secs(60))).unwrap();
    let _workers = Workers::start(&server.url, 2);
    let reads = coordinator.reader(circuit, &evaluation).unwrap();
    let evaluator = Evaluator::with_reader(circuit, &reads);
    let (remote, timings) = evaluator.evaluate(&query, &NoProgress).unwrap();
    // One process, one set of FFT plans: the same key and inputs give the same
    // ciphertexts.
    assert_eq!(remote.to_bytes(), local.to_bytes());
    assert_eq!(timings.len(), images.len());
    assert!(reads.worker_time() > Duration::ZERO);
    // A key already in the store is not stored again, and a second reader works too.
    let again = coordinator.reader(circuit, &evaluation).unwrap();
    let (second, _) = Evaluator::with_reader(circuit, &again)
        .evaluate(&query, &NoProgress)
        .unwrap();
    assert_eq!(second.to_bytes(), local.to_bytes());
}

#[test]
fn a_round_without_workers_times_out_and_leaves_nothing_queued() {
    let server = NatsServer::start();
    let (circuit, client, evaluation) = setup(12);
    let query = client.encrypt(circuit, &[&[1, 2, 3]]).unwrap();
    let coordinator = Coordinator::connect(&server.url, options(Duration::from_secs(1))).unwrap();
    let reads = coordinator.reader(circuit, &evaluation).unwrap();
    let started = Instant::now();
    let error = Evaluator::with_reader(circuit, &reads)
        .evaluate(&query, &NoProgress)
        .err()
        .expect("no worker, no result");
    let message = error.to_string();
    for part in ["3 of 3 chunks", "unanswered", "hecnn worker"] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // The failed round's chunks were purged: a worker started now finds nothing to do.
    let queued = queued_chunks(&server.url);
    assert_eq!(queued, 0, "{queued} chunks left in the queue");
}

#[test]
fn a_key_missing_from_the_store_fails_the_query_and_bad_chunks_are_dropped() {
    let server = NatsServer::start();
    let (circuit, client, evaluation) = setup(6);
    let query = client.encrypt(circuit, &[&[3, 0, 1]]).unwrap();
    let coordinator = Coordinator::connect(&server.url, options(Duration::from_secs(30))).unwrap();
    let _workers = Workers::start(&server.url, 1);
    let reads = coordinator.reader(circuit, &evaluation).unwrap();

    // A chunk that does not decode: dropped by the worker, which goes on working.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(&server.url).await.unwrap();
        let context = async_nats::jetstream::new(client);
        context
            .publish("hecnn.reads.garbage", "not a chunk".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let evaluator = Evaluator::with_reader(circuit, &reads);
    evaluator.evaluate(&query, &NoProgress).unwrap();

    // The key deleted from the store (the worker's cache holds one key: a second one
    // evicts it), then a query: the worker says what is missing.
    let (_, other_evaluation) = generate(circuit);
    let other = coordinator.reader(circuit, &other_evaluation).unwrap();
    Evaluator::with_reader(circuit, &other)
        .evaluate(&query, &NoProgress)
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(&server.url).await.unwrap();
        let context = async_nats::jetstream::new(client);
        let store = context.get_object_store(KEY_BUCKET).await.unwrap();
        let id = hecnn_runtime::KeyId::of(&evaluation.to_bytes());
        store.delete(id.to_string()).await.unwrap();
    });
    let message = evaluator
        .evaluate(&query, &NoProgress)
        .err()
        .expect("the key is gone")
        .to_string();
    for part in ["a worker failed chunk", "not in the cluster's key store"] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

/// Chunks in the work queue now.
fn queued_chunks(url: &str) -> u64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let context = async_nats::jetstream::new(client);
        let mut stream = context.get_stream(STREAM).await.unwrap();
        stream.info().await.unwrap().state.messages
    })
}
