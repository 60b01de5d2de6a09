//! `hecnn import`: a network trained elsewhere into a model file.

use anyhow::{Context, Result};
use hecnn_import::{ImportOptions, Normalisation, import_file};

use crate::cli::ImportArgs;

pub fn run(args: &ImportArgs) -> Result<()> {
    let source = args.data.source("mnist");
    let stem = args
        .onnx
        .file_stem()
        .map_or_else(|| "imported".into(), |s| s.to_string_lossy().into_owned());
    let options = ImportOptions {
        name: args.name.clone().unwrap_or(stem),
        dataset: source.to_string(),
        class_names: source.class_names(),
        input_shape: args.input_shape,
        normalisation: Normalisation {
            mean: args.mean,
            std: args.std,
        },
        swish_range: args.swish_range,
    };
    let imported = import_file(&args.onnx, &options)
        .with_context(|| format!("importing {}", args.onnx.display()))?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.onnx.with_extension("json"));
    imported
        .model
        .save(&output)
        .with_context(|| format!("writing {}", output.display()))?;
    for note in &imported.notes {
        println!("{note}");
    }
    let layers: Vec<_> = imported.model.layers.iter().map(|l| l.kind()).collect();
    println!("layers {}", layers.join(", "));
    println!(
        "wrote {} ({} activation values per image, each a table read once compiled)",
        output.display(),
        imported.model.activation_count()
    );
    println!(
        "next: hecnn eval {0} --mode float; hecnn train --init {0} --qat ... to fine-tune for the circuit",
        output.display()
    );
    Ok(())
}
