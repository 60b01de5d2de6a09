//! Encrypted evaluation of tiny circuits against the clear integer circuit, and refusal of
//! keys, queries and results that are foreign, of another circuit, truncated or altered.

use std::path::Path;

use hecnn_compile::circuit::{Circuit, Decoding, Linear, Read, Stage, Tables};
use hecnn_compile::circuit_file::{CIRCUIT_FORMAT, CIRCUIT_VERSION, CircuitFile, InputQuant};
use hecnn_compile::params::ParameterSetName;
use hecnn_compile::simulate::Simulator;
use hecnn_model::model::Shape;
use hecnn_model::quantize::LutBits;
use hecnn_runtime::{
    ClientKey, EncryptedResult, EvaluationKey, Evaluator, NoProgress, Query, RuntimeError,
    RuntimeFile, generate,
};
use rand::{Rng, SeedableRng};

/// Three inputs `0..=3`, two table reads with negative weights and offsets whose reads
/// cover both halves of the negacyclic table, then two logits. Accumulators fit the
/// tables exactly (one entry per accumulator value), so the encrypted result must equal
/// the clear one.
fn tiny_circuit(first_weights: [i32; 6]) -> CircuitFile {
    let dense = |inputs: usize, weights: Vec<i32>| Linear::Dense { inputs, weights };
    let lut_bits = LutBits::new(3).unwrap();
    let entry = lut_bits.box_width();
    let circuit = Circuit::new(vec![
        Stage {
            label: "dense+act".into(),
            linear: dense(3, first_weights.to_vec()),
            input_max: 3,
            input_unit: entry,
            read: Read::Tables(Tables {
                lut_bits,
                // A ranges over -6..=9 for the first weights: entries 0..=15.
                offsets: vec![6 * entry, 9 * entry],
                levels: vec![vec![3, 0, 5, 7, 1, 2, 6, 4], vec![7, 6, 5, 4, 3, 2, 1, 0]],
            }),
        },
        Stage {
            label: "dense".into(),
            linear: dense(2, vec![1, -2, 3, 1]),
            input_max: 7,
            // Logits up to 28 in magnitude: 2^57 leaves room for |A| < 64.
            input_unit: 1 << 57,
            read: Read::Logits(Decoding {
                scale: vec![0.5, 1.0],
                shift: vec![1.0, -2.0],
            }),
        },
    ])
    .unwrap();
    CircuitFile {
        format: CIRCUIT_FORMAT.into(),
        version: CIRCUIT_VERSION,
        name: "tiny".into(),
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

const WEIGHTS: [i32; 6] = [2, -1, 1, -2, 1, -1];

fn random_images(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| (0..3).map(|_| rng.random_range(0..=3u8)).collect())
        .collect()
}

fn expect_error<T>(result: Result<T, RuntimeError>, parts: &[&str]) {
    let Err(error) = result else {
        panic!("expected an error mentioning {parts:?}");
    };
    let message = error.to_string();
    for part in parts {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn encrypted_evaluation_equals_the_clear_circuit() {
    let file = tiny_circuit(WEIGHTS);
    let dir = tempfile::tempdir().unwrap();
    let (client, evaluation) = generate(&file);
    evaluation.save(&dir.path().join("eval.key")).unwrap();
    drop(evaluation);

    // Every input combination once, then random ones: 64 + 64 images in two queries.
    let mut images: Vec<Vec<u8>> = (0..64u8)
        .map(|i| vec![i & 3, (i >> 2) & 3, i >> 4])
        .collect();
    images.extend(random_images(64, 7));
    let clear = Simulator::clear(&file.circuit);
    // The server side: the circuit and the evaluation key from its file, nothing else.
    let key = EvaluationKey::load(&dir.path().join("eval.key"), &file).unwrap();
    let evaluator = Evaluator::new(&file, &key).unwrap();
    assert_eq!(evaluator.pbs_count(), 2);
    for batch in images.chunks(64) {
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let query = client.encrypt(&file, &refs).unwrap();
        let (result, timings) = evaluator.evaluate(&query, &NoProgress).unwrap();
        assert_eq!(timings.len(), batch.len());
        let predictions = client.decrypt(&file, &result).unwrap();
        for (image, prediction) in batch.iter().zip(&predictions) {
            let expected = clear.logits(image, 0);
            for (got, want) in prediction.logits.iter().zip(&expected) {
                // Noise of the logits is far below one level (0.5 or 1 in logit units).
                assert!((got - want).abs() < 0.05, "{image:?}: {got} vs {want}");
            }
            assert_eq!(prediction.class_name, file.class_names[prediction.class]);
        }
    }
}

/// Writes `bytes`, then expects `load` to refuse them with an error naming the file.
fn refused<T>(
    dir: &Path,
    bytes: &[u8],
    load: impl Fn(&Path) -> Result<T, RuntimeError>,
    parts: &[&str],
) {
    let path = dir.join("file.bin");
    std::fs::write(&path, bytes).unwrap();
    let mut parts = parts.to_vec();
    let name = path.display().to_string();
    parts.push(&name);
    expect_error(load(&path), &parts);
}

#[test]
fn files_of_another_circuit_or_damaged_are_refused() {
    let file = tiny_circuit(WEIGHTS);
    let other = tiny_circuit([1, -1, 1, -2, 1, -1]);
    let dir = tempfile::tempdir().unwrap();
    let (client, evaluation) = generate(&file);
    let query = client.encrypt(&file, &[&[1, 2, 3]]).unwrap();
    let evaluator = Evaluator::new(&file, &evaluation).unwrap();
    let (result, _) = evaluator.evaluate(&query, &NoProgress).unwrap();

    // In memory: keys and queries of another circuit.
    expect_error(Evaluator::new(&other, &evaluation), &["another circuit"]);
    expect_error(client.encrypt(&other, &[&[1, 2, 3]]), &["another circuit"]);
    let (_, other_evaluation) = generate(&other);
    let other_evaluator = Evaluator::new(&other, &other_evaluation).unwrap();
    expect_error(
        other_evaluator.evaluate(&query, &NoProgress),
        &["query", "another circuit"],
    );
    // Bad images.
    expect_error(client.encrypt(&file, &[&[1, 2]]), &["2 pixels"]);
    expect_error(client.encrypt(&file, &[&[1, 2, 9]]), &["pixel of 9"]);

    let files: [(&str, Vec<u8>); 4] = [
        ("client key", client.to_bytes()),
        ("evaluation key", evaluation.to_bytes()),
        ("query", query.to_bytes()),
        ("result", result.to_bytes()),
    ];
    let dir = dir.path();
    for (kind, bytes) in &files {
        let load = |path: &Path| -> Result<(), RuntimeError> {
            match *kind {
                "client key" => ClientKey::load(path, &file).map(drop),
                "evaluation key" => EvaluationKey::load(path, &file).map(drop),
                "query" => Query::load(path, &file).map(drop),
                _ => EncryptedResult::load(path, &file).map(drop),
            }
        };
        // Intact: accepted for its circuit, refused for the other.
        let intact = dir.join("intact.bin");
        std::fs::write(&intact, bytes).unwrap();
        load(&intact).unwrap_or_else(|e| panic!("intact {kind} refused: {e}"));
        let load_other = |path: &Path| -> Result<(), RuntimeError> {
            match *kind {
                "client key" => ClientKey::load(path, &other).map(drop),
                "evaluation key" => EvaluationKey::load(path, &other).map(drop),
                "query" => Query::load(path, &other).map(drop),
                _ => EncryptedResult::load(path, &other).map(drop),
            }
        };
        refused(dir, bytes, load_other, &[kind, "another circuit"]);
        // Truncated, altered, empty, foreign.
        refused(
            dir,
            &bytes[..bytes.len() - 100],
            load,
            &[kind, "corrupted", "checksum"],
        );
        refused(dir, &bytes[..20], load, &[kind, "truncated"]);
        let mut altered = bytes.clone();
        let middle = altered.len() / 2;
        altered[middle] ^= 0x10;
        refused(dir, &altered, load, &[kind, "corrupted"]);
        refused(dir, b"", load, &[kind, "not a hecnn"]);
        refused(
            dir,
            b"{\"format\": \"hecnn-model\"}",
            load,
            &[kind, "not a hecnn"],
        );
    }
    // A file of one kind given as another says what it is.
    refused(
        dir,
        &files[2].1,
        |path| EvaluationKey::load(path, &file),
        &["not a hecnn evaluation key", "it is a hecnn query"],
    );
}
