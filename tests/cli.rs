//! The `hecnn` program as a user runs it: the happy path on small data, and clear errors
//! (never a panic) on bad input.

use std::path::Path;
use std::process::{Command, Output};

/// `hecnn` with its cache (the PBS calibration) in the target folder, not the user's.
fn hecnn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hecnn"))
        .args(args)
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("hecnn runs")
}

/// `hecnn train` for one epoch on 2000 images (500 held out), with `options`, into `output`.
fn train_small(options: &[&str], output: &str) -> Output {
    let mut args = vec!["train"];
    args.extend_from_slice(options);
    args.extend([
        "--epochs",
        "1",
        "--limit",
        "2000",
        "--validation",
        "500",
        "-o",
        output,
    ]);
    hecnn(&args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs hecnn, expecting failure with a message containing every one of `expected`.
fn fails_with(args: &[&str], expected: &[&str]) {
    // With backtraces asked for, as a developer's shell may: a user's mistake still gets
    // its message alone.
    let output = Command::new(env!("CARGO_BIN_EXE_hecnn"))
        .args(args)
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("hecnn runs");
    let err = stderr(&output);
    assert!(
        !output.status.success(),
        "{args:?} succeeded: {}",
        stdout(&output)
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(
        !err.contains("backtrace"),
        "{args:?} printed a backtrace: {err}"
    );
    for e in expected {
        assert!(err.contains(e), "{args:?}: {e:?} not in {err}");
    }
}

/// A 28x28 binary PGM of a vertical bar, as a user's drawing would be.
fn write_pgm(path: &Path) {
    let mut bytes = b"P5\n28 28\n255\n".to_vec();
    for y in 0..28 {
        for x in 0..28 {
            bytes.push(if (12..16).contains(&x) && (4..24).contains(&y) {
                255
            } else {
                0
            });
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn train_eval_predict_on_small_data() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mlp.json");
    let model_arg = model.to_str().unwrap();
    let output = train_small(
        &[
            "--model",
            "mlp",
            "--activation",
            "quad-relu",
            "--qat",
            "--weight-bits",
            "6,4",
        ],
        model_arg,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("epoch   1:")
            && text.contains("test accuracy")
            && text.contains("QAT: 6,4-bit weights"),
        "{text}"
    );

    let output = hecnn(&["eval", model_arg, "--mode", "float", "--limit", "300"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let accuracy: f64 = text
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {text}"));
    assert!(accuracy > 70.0, "{text}");

    // Compile, inspect, and evaluate the circuit in clear and simulate modes.
    let circuit = dir.path().join("mlp.circuit");
    let circuit_arg = circuit.to_str().unwrap();
    let compile = [
        "compile",
        model_arg,
        "-o",
        circuit_arg,
        "--lut-bits",
        "6",
        "--ranges",
        "calibrated",
        "--calibration",
        "500",
    ];
    let output = hecnn(&compile);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("PBS per image      128") && text.contains("predicted latency"),
        "{text}"
    );
    // The latency from a PBS timed on this machine, then cached.
    assert!(
        text.contains("(measured on this machine, all cores busy)"),
        "{text}"
    );
    let output = hecnn(&compile);
    assert!(
        stdout(&output).contains("h ago (cached;"),
        "{}",
        stdout(&output)
    );
    let output = hecnn(&[&compile[..], &["--no-calibrate"]].concat());
    assert!(
        !stdout(&output).contains("measured on this machine"),
        "{}",
        stdout(&output)
    );
    let output = hecnn(&[
        "compile",
        model_arg,
        "-o",
        circuit_arg,
        "--json",
        "--lut-bits",
        "5",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["pbs_count"], 128);
    assert_eq!(report["stages"][0]["lut_bits"], 5);

    let output = hecnn(&["inspect", circuit_arg]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["format"], "hecnn-circuit");
    assert_eq!(
        json["circuit"]["stages"][0]["read"]["tables"]["lut_bits"],
        5
    );

    let output = hecnn(&["eval", circuit_arg, "--limit", "300"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("clear    accuracy")
            && text.contains("simulate accuracy")
            && text.contains("agreement Clear/Simulate"),
        "{text}"
    );
    // Where simulate's flips come from: the clear classes are computed for the count
    // even when clear mode is not asked for.
    let output = hecnn(&[
        "eval",
        circuit_arg,
        "--mode",
        "simulate",
        "--limit",
        "300",
        "--flips-by-stage",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let flips: Vec<usize> = [
        "stage 0 (dense+batch-norm+quad-relu, 128 table reads): ",
        "stage 1 (dense, 10 logits): ",
    ]
    .iter()
    .map(|line| {
        let (_, rest) = text
            .split_once(line)
            .unwrap_or_else(|| panic!("no {line} in {text}"));
        rest.split(" of 300 images")
            .next()
            .unwrap()
            .parse()
            .unwrap()
    })
    .collect();
    assert!(flips.iter().all(|&f| f <= 300), "{text}");
    fails_with(
        &["eval", circuit_arg, "--p-error", "2^-20"],
        &[
            "--p-error applies to a model file",
            "mlp.circuit is a circuit file",
        ],
    );
    // Given at their defaults, they are still options the circuit cannot take.
    fails_with(
        &[
            "eval",
            circuit_arg,
            "--lut-bits",
            "auto",
            "--weight-bits",
            "4",
        ],
        &["--lut-bits, --weight-bits apply to a model file"],
    );
    fails_with(
        &["eval", circuit_arg, "--mode", "float", "--limit", "10"],
        &["float mode needs the model file"],
    );
    let mut bytes = std::fs::read(&circuit).unwrap();
    bytes.truncate(bytes.len() / 2);
    let damaged = dir.path().join("damaged.circuit");
    std::fs::write(&damaged, bytes).unwrap();
    fails_with(
        &["inspect", damaged.to_str().unwrap()],
        &["damaged.circuit", "corrupted"],
    );
    fails_with(
        &["compile", model_arg, "--lut-bits", "12"],
        &["table bits 12 is outside 1..=8"],
    );
    fails_with(
        &["compile", model_arg, "--p-error", "2"],
        &["not a probability"],
    );

    let image = dir.path().join("bar.pgm");
    write_pgm(&image);
    let output = hecnn(&["predict", model_arg, image.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("class "), "{}", stdout(&output));

    let noise = dir.path().join("noise.png");
    std::fs::write(&noise, b"\x89PNG\r\n\x1a\n garbage").unwrap();
    fails_with(
        &["predict", model_arg, noise.to_str().unwrap()],
        &["noise.png", "not a readable"],
    );

    // Circuit-aware fine-tuning of that model: compiled on its trained grids, the clear
    // circuit classifies as the trained network does.
    fails_with(
        &["compile", model_arg, "--ranges", "trained"],
        &["not trained on a read grid", "--ranges calibrated"],
    );
    let tuned = dir.path().join("tuned.json");
    let tuned_arg = tuned.to_str().unwrap();
    let output = train_small(
        &[
            "--init",
            model_arg,
            "--qat",
            "--lut-bits",
            "4",
            "--read-noise",
            "0.2,0.1",
        ],
        tuned_arg,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("tables of 4 bits read with noise 0.2,0.1 entries"),
        "{}",
        stdout(&output)
    );
    let output = hecnn(&["eval", tuned_arg, "--mode", "float,clear", "--limit", "300"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("4 table bits"), "{text}");
    let differing: usize = text
        .split("agreement Float/Clear: ")
        .nth(1)
        .and_then(|rest| rest.split('(').nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no agreement in {text}"));
    assert!(differing <= 1, "{text}");
    fails_with(
        &["compile", tuned_arg, "--lut-bits", "5"],
        &["trained on 4-bit tables", "leave --lut-bits out"],
    );
    fails_with(
        &[
            "train",
            "--init",
            model_arg,
            "--qat",
            "--lut-bits",
            "4",
            "--read-noise",
            "0.1,9",
            "--limit",
            "100",
            "-o",
            tuned_arg,
        ],
        &[
            "read noise 9 must be in [0, 8) table entries",
            "(--read-noise)",
        ],
    );
}

#[test]
fn activations_table_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("act.svg");
    let output = hecnn(&[
        "activations",
        "--range",
        "4",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for name in hecnn_model::activation::Activation::NAMES {
        assert!(text.contains(name), "{name} missing from {text}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("<svg") && svg.contains("swish4"));
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    std::fs::write(
        path("half.json"),
        "{\"format\":\"hecnn-model\",\"version\":1,\"na",
    )
    .unwrap();
    fails_with(
        &["eval", &path("half.json")],
        &["half.json", "not a hecnn model file"],
    );
    fails_with(&["eval", &path("absent.json")], &["absent.json"]);

    std::fs::write(
        path("net.json"),
        r#"{"name":"n","layers":[{"type":"dense","out_features":10}]}"#,
    )
    .unwrap();
    fails_with(
        &[
            "train",
            "--model",
            &path("net.json"),
            "--epochs",
            "1",
            "--limit",
            "10",
            "-o",
            &path("m.json"),
        ],
        &["net.json", "flatten"],
    );
    assert!(
        !Path::new(&path("m.json")).exists(),
        "no model written on failure"
    );

    fails_with(&["train", "--lr", "0", "--limit", "10"], &["--lr"]);
    fails_with(&["train", "--weight-bits", "12"], &["12"]);
    fails_with(&["train", "--weight-bits", "6,x"], &["\"x\""]);
    fails_with(&["train", "--activation", "tanh"], &["tanh"]);
    fails_with(&["train", "--range=-1", "--limit", "10"], &["range -1"]);
    fails_with(
        &["train", "--dataset", &path("no-such-folder")],
        &["no-such-folder", "train-images-idx3-ubyte"],
    );

    std::fs::write(path("empty.json"), "{}").unwrap();
    fails_with(
        &["eval", &path("empty.json")],
        &["empty.json", "not a hecnn model file"],
    );
}

/// `hecnn import` of a network PyTorch trained and exported (the import crate's fixture),
/// then the existing path on it; refusals write nothing.
#[test]
fn import_a_pytorch_network_and_compile_it() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("import/fixtures");
    let model = dir.path().join("relu.json");
    let model = model.to_str().unwrap();
    let onnx = fixtures.join("relu_cnn.onnx");
    let output = hecnn(&[
        "import",
        onnx.to_str().unwrap(),
        "-o",
        model,
        "--mean",
        "0.1307",
        "--std",
        "0.3081",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    for part in [
        "input 1x28x28",
        "layer 1: relu",
        "batch-norm",
        "1568 activation values",
    ] {
        assert!(out.contains(part), "{part:?} not in {out}");
    }
    // PyTorch measured 98.05% on the test set (import/fixtures/relu_cnn.expected.json).
    let output = hecnn(&["eval", model, "--mode", "float"]);
    assert!(
        stdout(&output).contains("float    accuracy 98.05%"),
        "{}",
        stdout(&output)
    );
    // Fine-tuned for the circuit (one short epoch here), then compiled and simulated.
    let tuned = dir.path().join("tuned.json");
    let tuned = tuned.to_str().unwrap();
    let output = train_small(&["--init", model, "--qat", "--lut-bits", "4"], tuned);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = hecnn(&["eval", tuned, "--mode", "clear,simulate", "--limit", "200"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("simulate"), "{}", stdout(&output));

    // The imported network teaches a budget model (knowledge distillation).
    let student = dir.path().join("student.json");
    let student = student.to_str().unwrap();
    let output = train_small(&["--model", "budget-100", "--teacher", model], student);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("distilled from relu_cnn (weight 0.5, temperature 4)"),
        "{}",
        stdout(&output)
    );

    let refused = dir.path().join("refused.json");
    let refused = refused.to_str().unwrap();
    fails_with(
        &[
            "train",
            "--teacher",
            model,
            "--distill-weight",
            "1.5",
            "--limit",
            "100",
            "-o",
            refused,
        ],
        &[
            "distillation weight 1.5 must be in (0, 1]",
            "(--distill-weight)",
        ],
    );
    fails_with(
        &[
            "import",
            fixtures.join("maxpool.onnx").to_str().unwrap(),
            "-o",
            refused,
        ],
        &["\"/MaxPool\" (MaxPool)", "average pooling"],
    );
    fails_with(
        &[
            "import",
            fixtures.join("make_fixtures.py").to_str().unwrap(),
            "-o",
            refused,
        ],
        &["not an ONNX model"],
    );
    fails_with(
        &[
            "import",
            onnx.to_str().unwrap(),
            "-o",
            refused,
            "--input-shape",
            "1,28",
        ],
        &["channels,height,width"],
    );
    assert!(!Path::new(refused).exists(), "nothing written");
}

/// The client/server workflow with files: keygen, encrypt, run with the evaluation key
/// alone, decrypt; encrypted eval and bench; and refusal of keys of another circuit and
/// of damaged files.
#[test]
fn encrypted_workflow_with_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (model, circuit, other) = (path("mlp.json"), path("mlp.circuit"), path("other.circuit"));
    let output = train_small(&["--model", "mlp", "--qat"], &model);
    assert!(output.status.success(), "{}", stderr(&output));
    for (out, bits) in [(&circuit, "4"), (&other, "5")] {
        let output = hecnn(&[
            "compile",
            &model,
            "-o",
            out,
            "--lut-bits",
            bits,
            "--ranges",
            "calibrated",
            "--calibration",
            "300",
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
    }

    // The client: keys (the client key stays in its own folder), then a query of two
    // test images and one image file.
    std::fs::create_dir(dir.path().join("client")).unwrap();
    let (client_key, eval_key) = (path("client/mlp.client-key"), path("mlp.eval-key"));
    let output = hecnn(&["keygen", &circuit, "--client-key", &client_key]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("give it to the server"),
        "{}",
        stdout(&output)
    );
    assert!(Path::new(&eval_key).exists());
    let image = path("bar.pgm");
    write_pgm(Path::new(&image));
    let query = path("query.hecnn");
    let output = hecnn(&[
        "encrypt",
        &circuit,
        &image,
        "--test-index",
        "0,1",
        "--client-key",
        &client_key,
        "-o",
        &query,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("3 image(s)"),
        "{}",
        stdout(&output)
    );

    // The server never sees the client key: hide it while the server runs.
    let hidden = path("hidden.client-key");
    std::fs::rename(&client_key, &hidden).unwrap();
    let output = hecnn(&["run", &circuit, &query]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("image 2:"), "{}", stdout(&output));
    std::fs::rename(&hidden, &client_key).unwrap();

    let result = path("query.result");
    let output = hecnn(&["decrypt", &circuit, &result, "--client-key", &client_key]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(
        text.lines().filter(|l| l.contains(": class ")).count(),
        3,
        "{text}"
    );

    // In one process: encrypted accuracy against clear mode, and the benchmark.
    let output = hecnn(&[
        "eval",
        &circuit,
        "--mode",
        "clear,encrypted",
        "--limit",
        "3",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("encrypted accuracy") && text.contains("agreement Clear/Encrypted"),
        "{text}"
    );
    let output = hecnn(&["bench", &circuit, "--images", "1", "--pbs-samples", "3"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for part in [
        "keygen",
        "evaluation key",
        "query",
        "PBS per image",
        "achieved / floor",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }

    // Keys and queries of another circuit, damaged files, bad options.
    fails_with(
        &["run", &other, &query, "--eval-key", &eval_key],
        &["mlp.eval-key", "another circuit"],
    );
    fails_with(
        &["decrypt", &other, &result, "--client-key", &client_key],
        &["mlp.client-key", "another circuit"],
    );
    for file in [&eval_key, &query, &result, &client_key] {
        let bytes = std::fs::read(file).unwrap();
        let damaged = path("damaged");
        std::fs::write(&damaged, &bytes[..bytes.len() - 7]).unwrap();
        let args: Vec<&str> = match file {
            f if f == &eval_key => vec!["run", &circuit, &query, "--eval-key", &damaged],
            f if f == &query => vec!["run", &circuit, &damaged],
            f if f == &result => vec!["decrypt", &circuit, &damaged, "--client-key", &client_key],
            _ => vec!["decrypt", &circuit, &result, "--client-key", &damaged],
        };
        fails_with(&args, &["damaged", "corrupted"]);
    }
    fails_with(
        &["run", &circuit, &model],
        &["mlp.json", "not a hecnn query"],
    );
    fails_with(
        &[
            "encrypt",
            &circuit,
            "--test-index",
            "10000",
            "--client-key",
            &client_key,
        ],
        &["--test-index 10000"],
    );
    fails_with(
        &["encrypt", &circuit, "--client-key", &client_key],
        &["nothing to encrypt"],
    );
}

/// The activation experiment, reduced: two activations of the small MLP, one epoch, two
/// seeds, one encrypted image; the table and plot are written, with every column filled.
#[test]
fn activation_experiment_writes_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (table, plot) = (path("table.md"), path("plot.svg"));
    let output = hecnn(&[
        "experiment",
        "activations",
        "--models",
        "mlp",
        "--activations",
        "relu,kernel-relu2",
        "--epochs",
        "1",
        "--seeds",
        "2",
        "--encrypted-images",
        "1",
        "--lut-bits",
        "5",
        "--dir",
        &path("models"),
        "--output",
        &table,
        "--plot",
        &plot,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&table).unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| mlp |")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    for row in rows {
        // model, activation, bits, set, PBS 128, seeds, three accuracies over the seeds,
        // encrypted, agreement, latency.
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!((cells[3], cells[5], cells[6]), ("5", "128", "2"), "{row}");
        for spread in &cells[7..10] {
            assert!(spread.contains(" ± ") && spread.ends_with('%'), "{row}");
        }
        assert!(cells[12].ends_with(" s"), "{row}");
    }
    for seed in ["seed1", "seed2"] {
        assert!(
            dir.path()
                .join(format!("models/mlp-relu-{seed}.json"))
                .exists()
        );
    }
    assert!(
        text.contains("hecnn experiment activations --models mlp"),
        "{text}"
    );
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
    fails_with(
        &["experiment", "activations", "--activations", "tanh"],
        &["tanh"],
    );
}

/// The frontier, reduced: the small MLP at one table width, one epoch, one image benched,
/// beside Concrete ML results in the format bench/concrete-ml/measure.py writes.
#[test]
fn frontier_experiment_writes_its_table_and_reads_concrete_ml() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (table, plot, concrete) = (path("frontier.md"), path("frontier.svg"), path("cml.json"));
    std::fs::write(
        &concrete,
        r#"{"measured": "2026-12-01T18:00Z", "concrete_ml": "1.9.0", "machine": "x86_64, 2 cores",
            "models": [{"name": "paper CNN", "accuracy": 0.9861, "test_images": 10000,
                        "latencies_s": [150.0, 152.0], "pbs": 1520,
                        "encrypted_equal_to_simulated": 2, "keygen_s": 23.0}]}"#,
    )
    .unwrap();
    let frontier = |concrete: &str| {
        hecnn(&[
            "experiment",
            "frontier",
            "--models",
            "mlp",
            "--lut-bits",
            "4",
            "--epochs",
            "1",
            "--bench-images",
            "1",
            "--concrete-ml",
            concrete,
            "--dir",
            &path("models"),
            "--output",
            &table,
            "--plot",
            &plot,
        ])
    };
    let output = frontier(&concrete);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&table).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with("| mlp | 4 | 128 |"))
        .unwrap_or_else(|| panic!("no mlp row in {text}"));
    // model, bits, PBS, set, three accuracies, latency, achieved/floor, predicted, ratio.
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert!(cells[8].contains("median of 1"), "{row}");
    let ratio: f64 = cells[11].parse().unwrap();
    assert!(ratio > 0.0 && ratio.is_finite(), "{row}");
    assert!(
        text.contains("| Concrete ML 1.9.0 paper CNN, 1520 PBS"),
        "{text}"
    );
    assert!(text.contains("| 98.61% | 152.0 s |"), "{text}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("mlp 4b") && svg.contains("Concrete ML paper CNN"));

    // The model is reused; a results file that does not read is an error naming it.
    std::fs::write(&concrete, r#"{"measured": "today"}"#).unwrap();
    fails_with(
        &[
            "experiment",
            "frontier",
            "--models",
            "mlp",
            "--concrete-ml",
            &concrete,
        ],
        &["Concrete ML's results", "cml.json", "missing field"],
    );
    // Without the file the quoted figures are drawn, labelled as such.
    std::fs::remove_file(&concrete).unwrap();
    let output = frontier(&concrete);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&table).unwrap();
    assert!(text.contains("quoted, measured before"), "{text}");
}

/// A child process that is killed (by its id) and reaped if the test ends before stopping
/// it, so that a failing test leaves no server behind.
/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (a minute at most) until `server` listens on loopback `port`.
fn wait_for_port(port: u16, server: &str) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed().as_secs() < 60, "{server} did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn serve_classify_and_bench_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let output = train_small(&["--model", "mlp", "--qat"], &path("mlp.json"));
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::create_dir(dir.path().join("circuits")).unwrap();
    let output = hecnn(&[
        "compile",
        &path("mlp.json"),
        "-o",
        &path("circuits/mlp.circuit"),
        "--lut-bits",
        "4",
        "--calibration",
        "300",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    fails_with(
        &["serve", "--circuits", &path("missing"), "--no-auth"],
        &["missing"],
    );
    fails_with(&["serve", "--circuits", &path("circuits")], &["--tokens"]);

    // A free loopback port for the server.
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let url = format!("http://{address}");
    let mut server = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_hecnn"))
            .args([
                "serve",
                "--circuits",
                &path("circuits"),
                "--store",
                &path("store"),
            ])
            .args(["--no-auth", "--listen", &address])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("hecnn serve starts"),
    ));
    wait_for_port(port, "hecnn serve");

    let keys = path("keys");
    let image = path("bar.pgm");
    write_pgm(Path::new(&image));
    let classify = |expected_keys: &str| {
        let output = hecnn(&[
            "classify",
            "--server",
            &url,
            "--keys-dir",
            &keys,
            &image,
            "--test-index",
            "0,1",
        ]);
        let out = stdout(&output);
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(out.contains(expected_keys), "{out}");
        for index in 0..3 {
            assert!(out.contains(&format!("image {index}: class")), "{out}");
        }
    };
    classify("generated; evaluation key uploaded");
    classify("reused; the server has the evaluation key");
    let output = hecnn(&[
        "bench",
        "--server",
        &url,
        "--keys-dir",
        &keys,
        "--images",
        "2",
        "--clients",
        "2",
    ]);
    let out = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    for part in [
        "images/min",
        "95th percentile",
        "overhead",
        "own share",
        "of 2 images classified",
    ] {
        assert!(out.contains(part), "{part:?} not in {out}");
    }
    fails_with(
        &[
            "classify",
            "--server",
            &url,
            "--circuit-name",
            "nope",
            "--test-index",
            "0",
            "--keys-dir",
            &keys,
        ],
        &["no circuit \"nope\"", "mlp"],
    );

    // SIGTERM: a graceful stop, and the log said authentication was off.
    let server = server.0.take().expect("the server runs");
    let status = Command::new("kill")
        .arg(server.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let output = server.wait_with_output().unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("AUTHENTICATION IS DISABLED"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    fails_with(
        &[
            "classify",
            "--server",
            &url,
            "--test-index",
            "0",
            "--keys-dir",
            &keys,
        ],
        &["connecting to", &url],
    );
}

/// A child process whose standard error is collected line by line as it comes.
struct Logged {
    child: KillOnDrop,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Logged {
    fn spawn(command: &mut Command) -> Self {
        use std::io::BufRead;
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("hecnn starts");
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child: KillOnDrop(Some(child)),
            lines,
        }
    }

    fn count(&self, text: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn child(&mut self) -> &mut std::process::Child {
        self.child.0.as_mut().unwrap()
    }
}

#[test]
fn run_on_a_nats_cluster_survives_a_worker_killed_mid_stage() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let output = train_small(&["--model", "mlp", "--qat"], &path("mlp.json"));
    assert!(output.status.success(), "{}", stderr(&output));
    let circuit = path("mlp.circuit");
    let output = hecnn(&[
        "compile",
        &path("mlp.json"),
        "-o",
        &circuit,
        "--lut-bits",
        "4",
        "--calibration",
        "300",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = hecnn(&["keygen", &circuit]);
    assert!(output.status.success(), "{}", stderr(&output));
    let query = path("query.hecnn");
    let output = hecnn(&[
        "encrypt",
        &circuit,
        "--test-index",
        "0,1,2,3,4,5",
        "-o",
        &query,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let local = path("local.result");
    let output = hecnn(&["run", &circuit, &query, "-o", &local]);
    assert!(output.status.success(), "{}", stderr(&output));
    fails_with(
        &["run", &circuit, &query, "--chunk-reads", "4"],
        &["--nats"],
    );
    fails_with(
        &["run", &circuit, &query, "--nats", "nats://127.0.0.1:1"],
        &[
            "joining the cluster at nats://127.0.0.1:1",
            "cannot connect",
        ],
    );

    // A NATS server with JetStream on a free loopback port, stopped by its id at the end.
    let port = free_port();
    let _nats = KillOnDrop(Some(
        Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(path("nats"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is installed (Debian: apt-get install nats-server)"),
    ));
    wait_for_port(port, "nats-server");
    let url = format!("nats://127.0.0.1:{port}");

    // Two one-thread workers, started before any coordinator: they wait for the queue.
    let worker = || {
        Logged::spawn(
            Command::new(env!("CARGO_BIN_EXE_hecnn"))
                .args(["worker", "--nats", &url])
                .env("RAYON_NUM_THREADS", "1")
                .env("RUST_LOG", "info,hecnn_cluster=debug"),
        )
    };
    let (mut doomed, mut survivor) = (worker(), worker());
    let run = Command::new(env!("CARGO_BIN_EXE_hecnn"))
        .args(["run", &circuit, &query, "-o", &path("cluster.result")])
        .args(["--nats", &url, "--chunk-reads", "4", "--ack-wait", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hecnn run starts");
    // The first worker killed (SIGKILL) while it holds its third chunk: that chunk comes
    // back to the queue after the 2 s acknowledgement wait.
    let started = std::time::Instant::now();
    while doomed.count("chunk received") < 3 {
        assert!(
            started.elapsed().as_secs() < 120,
            "the worker got no chunks: {}",
            doomed.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    doomed.child().kill().unwrap();
    doomed.child().wait().unwrap();
    let output = run.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("table reads on the cluster's workers"),
        "{}",
        stdout(&output)
    );
    // The classes of the local run. Not its bytes: each process plans its FFTs by timing
    // them, and plans that differ round differently, so two processes' results are two
    // draws of the same noise (within one process they are equal bit for bit, which
    // hecnn-cluster's tests check). One flip of six near a decision edge is allowed.
    let classes = |result: &str| -> Vec<String> {
        let output = hecnn(&["decrypt", &circuit, result]);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
            .lines()
            .map(|line| line.split("logits").next().unwrap().to_string())
            .collect()
    };
    let (local_classes, cluster_classes) = (classes(&local), classes(&path("cluster.result")));
    assert_eq!(local_classes.len(), 6, "{local_classes:?}");
    let agreeing = local_classes
        .iter()
        .zip(&cluster_classes)
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        agreeing >= 5,
        "{local_classes:?} against {cluster_classes:?}"
    );
    assert!(survivor.count("chunk read") > 0, "{}", survivor.log());
    assert!(
        survivor.count("evaluation key fetched and decompressed") == 1,
        "{}",
        survivor.log()
    );

    // SIGTERM: the survivor finishes what it holds and stops cleanly.
    let pid = survivor.child().id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = survivor.child().wait().unwrap();
    assert!(status.success(), "{status}: {}", survivor.log());
    assert!(survivor.count("worker stopped") == 1, "{}", survivor.log());

    // No worker left: the query fails after the timeout, saying why.
    fails_with(
        &[
            "run",
            &circuit,
            &query,
            "--nats",
            &url,
            "--nats-timeout",
            "2",
        ],
        &["unanswered after 2s", "hecnn worker --nats"],
    );
}
