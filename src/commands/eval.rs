//! `hecnn eval` and `hecnn predict`.

use anyhow::{Context, Result};
use hecnn_compile::model::ModelFile;
use hecnn_compile::reference::{ReferenceModel, argmax};
use hecnn_datasets::image_file::load_image;
use hecnn_datasets::{LabelledImages, Split};

use crate::cli::{EvalArgs, Mode, PredictArgs};

/// Float accuracy of a model on labelled images.
pub fn float_accuracy(model: &ReferenceModel, data: &LabelledImages) -> f64 {
    let correct = (0..data.len())
        .filter(|&i| model.predict(data.image(i)) == usize::from(data.labels[i]))
        .count();
    correct as f64 / data.len().max(1) as f64
}

fn load_model(path: &std::path::Path) -> Result<ModelFile> {
    ModelFile::load(path).with_context(|| format!("loading the model file {}", path.display()))
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let source = args.data.source(&model.dataset);
    let mut test = source
        .load(Split::Test)
        .with_context(|| format!("loading the {source} test set"))?;
    if let Some(limit) = args.limit {
        test = test.truncated(limit);
    }
    if test.image_len() != model.input.shape.len() {
        anyhow::bail!(
            "the {source} images have {}x{} pixels, the model {} expects {}",
            test.rows,
            test.cols,
            args.model.display(),
            model.input.shape
        );
    }
    match args.mode {
        Mode::Float => {
            let reference = ReferenceModel::new(&model);
            let accuracy = float_accuracy(&reference, &test);
            println!(
                "float accuracy {:.2}% on {} {source} test images",
                100.0 * accuracy,
                test.len()
            );
        }
    }
    Ok(())
}

pub fn predict(args: &PredictArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let pixels = load_image(&args.image)?;
    if pixels.len() != model.input.shape.len() {
        anyhow::bail!(
            "the model {} expects {} inputs, images give 28x28",
            args.model.display(),
            model.input.shape
        );
    }
    let logits = ReferenceModel::new(&model).logits(&pixels);
    let class = argmax(&logits);
    println!("class {class} ({})", model.class_names[class]);
    println!(
        "logits: {}",
        logits
            .iter()
            .map(|l| format!("{l:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
