//! The fixtures PyTorch made (`fixtures/make_fixtures.py`): each imports, computes
//! PyTorch's logits on the committed samples and its test accuracy; the ones with
//! operators hecnn refuses, and files that are not ONNX, get clear errors.

use std::path::{Path, PathBuf};

use hecnn_compile::reference::{ReferenceModel, argmax};
use hecnn_datasets::DatasetSource;
use hecnn_datasets::{LabelledImages, Split};
use hecnn_import::{ImportError, ImportOptions, Normalisation, import_bytes, import_file};
use hecnn_model::activation::Activation;
use hecnn_model::model::{Layer, Shape};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    normalisation: Option<NormalisationJson>,
    test_images: usize,
    correct: usize,
    samples: Vec<Sample>,
}

#[derive(Deserialize)]
struct NormalisationJson {
    mean: f64,
    std: f64,
}

#[derive(Deserialize)]
struct Sample {
    index: usize,
    logits: Vec<f64>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn options(normalisation: Normalisation) -> ImportOptions {
    ImportOptions {
        name: "imported".into(),
        dataset: "mnist".into(),
        class_names: (0..10).map(|d| d.to_string()).collect(),
        input_shape: None,
        normalisation,
        swish_range: 4.0,
    }
}

fn test_set() -> LabelledImages {
    DatasetSource::Mnist.load(Split::Test).unwrap()
}

/// Imports fixture `name` and checks it against what PyTorch reported; returns its layers.
fn imports_as_pytorch_computes(name: &str, test: &LabelledImages) -> Vec<Layer> {
    let expected: Expected = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    let normalisation = expected
        .normalisation
        .map_or_else(Normalisation::default, |n| Normalisation {
            mean: n.mean,
            std: n.std,
        });
    let imported = import_file(&fixture(&format!("{name}.onnx")), &options(normalisation))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let model = &imported.model;
    assert_eq!(
        model.input.shape,
        Shape {
            channels: 1,
            height: 28,
            width: 28
        }
    );
    let reference = ReferenceModel::new(model);
    for sample in &expected.samples {
        let logits = reference.logits(test.image(sample.index));
        for (class, (ours, theirs)) in logits.iter().zip(&sample.logits).enumerate() {
            assert!(
                (ours - theirs).abs() <= 1e-4,
                "{name}, image {}, class {class}: {ours} against PyTorch's {theirs}",
                sample.index
            );
        }
    }
    assert_eq!(test.len(), expected.test_images);
    let correct = (0..test.len())
        .filter(|&i| reference.predict(test.image(i)) == usize::from(test.labels[i]))
        .count();
    assert_eq!(correct, expected.correct, "{name}: test images right");
    assert_eq!(
        argmax(&reference.logits(test.image(0))),
        argmax(&expected.samples[0].logits)
    );
    imported.model.layers
}

#[test]
fn pytorch_networks_import_with_their_logits_and_accuracy() {
    let test = test_set();
    // Conv, ReLU, AveragePool, BatchNormalization, Flatten, Gemm; normalised by the loader.
    // The pooling and batch norm after the ReLU are folded into the dense layer.
    let layers = imports_as_pytorch_computes("relu_cnn", &test);
    let kinds: Vec<_> = layers.iter().map(Layer::kind).collect();
    assert_eq!(kinds, ["conv2d", "activation", "flatten", "dense"]);
    // Normalisation in the graph; quadratics written as Mul and Add; 7 and 13 channels.
    let layers = imports_as_pytorch_computes("poly_cnn", &test);
    let polys = layers
        .iter()
        .filter(|l| {
            matches!(
                l,
                Layer::Activation {
                    function: Activation::Poly { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(polys, 2);
    assert!(matches!(
        layers[0],
        Layer::Conv2d {
            out_channels: 7,
            ..
        }
    ));
    // The pooling between the first activation and the second convolution is folded
    // into it: 3x3 over the pooled map is 6x6 with stride 2 over the map.
    assert!(matches!(
        layers[2],
        Layer::Conv2d {
            in_channels: 7,
            out_channels: 13,
            kernel: [6, 6],
            stride: [2, 2],
            ..
        }
    ));
    // x ** 2 (Pow) times a constant; a reshape; MatMul + Add.
    let layers = imports_as_pytorch_computes("square_matmul", &test);
    assert!(matches!(
        layers.last(),
        Some(Layer::Dense {
            out_features: 10,
            ..
        })
    ));
}

fn import_error(bytes: &[u8]) -> ImportError {
    import_bytes(bytes, "model.onnx", &options(Normalisation::default()))
        .expect_err("the import is refused")
}

#[test]
fn unsupported_operators_are_refused_by_node_with_a_hint() {
    let error =
        import_file(&fixture("maxpool.onnx"), &options(Normalisation::default())).unwrap_err();
    let ImportError::Node { op, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(op, "MaxPool");
    assert!(error.to_string().contains("average pooling"), "{error}");

    let error = import_file(
        &fixture("grouped_conv.onnx"),
        &options(Normalisation::default()),
    )
    .unwrap_err();
    let ImportError::Node { op, node, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(op, "Conv");
    assert!(!node.is_empty(), "the node is named");
    assert!(error.to_string().contains("groups = 2"), "{error}");
}

#[test]
fn files_that_are_not_onnx_are_refused() {
    let bytes = std::fs::read(fixture("relu_cnn.onnx")).unwrap();
    for truncated in [&bytes[..bytes.len() / 2], &bytes[..10]] {
        let error = import_error(truncated);
        assert!(
            matches!(error, ImportError::NotOnnx { .. }),
            "truncated: {error}"
        );
    }
    let error = import_error(b"{\"format\": \"hecnn-model\"}");
    assert!(error.to_string().contains("not an ONNX model"), "{error}");
    let error = import_error(&[]);
    assert!(matches!(error, ImportError::NotOnnx { .. }), "{error}");
    let missing = import_file(
        Path::new("/nonexistent/model.onnx"),
        &options(Normalisation::default()),
    );
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/model.onnx")
    );
}

#[test]
fn a_given_input_shape_must_agree_with_the_graph() {
    let mut wrong = options(Normalisation::default());
    wrong.input_shape = Some(Shape {
        channels: 3,
        height: 28,
        width: 28,
    });
    let error = import_file(&fixture("relu_cnn.onnx"), &wrong).unwrap_err();
    assert!(
        error.to_string().contains("not the 3x28x28 given"),
        "{error}"
    );
}
