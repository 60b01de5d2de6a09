//! A small model and images shared by the compiler's tests (and other crates' tests, through
//! the `testing` feature).

use crate::lower::linear::folded_weight_max;
use crate::reference::ReferenceModel;
use hecnn_model::activation::Activation;
use hecnn_model::grid::{ReadGrid, accumulator_step};
use hecnn_model::model::{
    InputSpec, Layer, MODEL_FORMAT, MODEL_VERSION, ModelFile, OutputQuant, Shape,
};
use hecnn_model::quantize::{BitWidth, LutBits, QuantRange};

/// Deterministic values in [-1, 1).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A batch norm over `channels` with deterministic statistics, negative gammas included.
pub fn batch_norm(channels: usize, seed: u64) -> Layer {
    let v = values(seed, 4 * channels);
    Layer::BatchNorm {
        // Negative gammas included: the sign must fold too.
        gamma: v[..channels].iter().map(|g| 1.5 * g).collect(),
        beta: v[channels..2 * channels].to_vec(),
        mean: v[2 * channels..3 * channels].to_vec(),
        var: v[3 * channels..].iter().map(|x| x.abs() + 0.1).collect(),
        epsilon: 1e-5,
    }
}

/// A 3x3 convolution from 1 to 4 channels with deterministic weights.
pub fn conv3x3(padding: usize, weight_bits: Option<BitWidth>) -> Layer {
    Layer::Conv2d {
        in_channels: 1,
        out_channels: 4,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [padding, padding],
        weight: values(1, 36),
        bias: values(2, 4),
        weight_bits,
    }
}

/// A model of 8x8 images and 3 classes with these layers.
pub fn model_file(layers: Vec<Layer>) -> ModelFile {
    ModelFile {
        format: MODEL_FORMAT.into(),
        version: MODEL_VERSION,
        name: "t".into(),
        dataset: "none".into(),
        class_names: (0..3).map(|c| c.to_string()).collect(),
        input: InputSpec {
            shape: Shape {
                channels: 1,
                height: 8,
                width: 8,
            },
            mean: 0.1,
            std: 0.3,
        },
        layers,
        training: None,
    }
}

/// conv 3x3 (4) -> BN -> avg-pool 2 -> act (3 bits) -> flatten -> dense (3 classes).
pub fn model() -> ModelFile {
    let bits = |b| Some(BitWidth::new(b).unwrap());
    model_file(vec![
        conv3x3(0, bits(4)),
        batch_norm(4, 3),
        Layer::AvgPool {
            kernel: [2, 2],
            stride: [2, 2],
        },
        Layer::Activation {
            function: Activation::QuadRelu { range: 4.0 },
            output_quant: Some(OutputQuant {
                bits: BitWidth::new(3).unwrap(),
                range: QuantRange { lo: 0.0, hi: 2.0 },
            }),
            input_grid: None,
        },
        Layer::Flatten,
        Layer::Dense {
            in_features: 36,
            out_features: 3,
            weight: values(3, 108),
            bias: values(4, 3),
            weight_bits: bits(4),
        },
    ])
}

/// A deterministic 8x8 image.
pub fn image(seed: u64) -> Vec<u8> {
    values(seed, 64)
        .iter()
        .map(|v| ((v + 1.0) * 127.5) as u8)
        .collect()
}

/// [`model`] as circuit-aware training leaves it: its activation read on a 4-bit grid
/// over the pre-activation ranges of 200 images (widened by a fifth), its conv weights at
/// the scales that grid implies.
pub fn trained_model() -> ModelFile {
    let mut model = model();
    let pre_activation = ReferenceModel::new(&model_file(model.layers[..3].to_vec()));
    let mut ranges = [(f64::INFINITY, f64::NEG_INFINITY); 4];
    for seed in 0..200 {
        for (i, z) in pre_activation.logits(&image(seed)).into_iter().enumerate() {
            let r = &mut ranges[i / 9];
            *r = (r.0.min(z), r.1.max(z));
        }
    }
    let ranges: Vec<QuantRange> = ranges
        .iter()
        .map(|&(lo, hi)| QuantRange {
            lo: lo - (hi - lo) / 5.0,
            hi: hi + (hi - lo) / 5.0,
        })
        .collect();
    let mut grid = ReadGrid::covering(LutBits::new(4).unwrap(), &ranges, 1.0);
    let (k, _) = model.layers[1].batch_norm_affine().unwrap();
    grid.accumulator_step = accumulator_step(
        &grid.step,
        &folded_weight_max(&model.layers[0], Some(&k)),
        1.0 / (255.0 * model.input.std),
        4.0,
        BitWidth::new(4).unwrap(),
    );
    if let Layer::Activation { input_grid, .. } = &mut model.layers[3] {
        *input_grid = Some(grid);
    }
    model
}
