//! `hecnn compile` and `hecnn inspect`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use hecnn_compile::circuit_file::CircuitFile;
use hecnn_compile::compiler::{CompileError, CompileOptions, Compiled, compile};
use hecnn_compile::lower::LowerError;
use hecnn_compile::model::ModelFile;
use hecnn_compile::quantize::BitWidth;
use hecnn_datasets::{LabelledImages, Split};

use crate::cli::{CircuitArgs, CompileArgs, DataArgs, InspectArgs, LutChoice};
use crate::commands::encrypted::labelled;

/// Training images held out for validation, as `hecnn train` does by default: the
/// calibration images come from them, never from the test set.
const VALIDATION_IMAGES: usize = 5000;

/// The calibration images of a model: the first `count` of its data set's validation split.
fn calibration_images(model: &ModelFile, data: &DataArgs, count: usize) -> Result<LabelledImages> {
    let source = data.source(&model.dataset);
    let train = source
        .load(Split::Train)
        .with_context(|| format!("loading the {source} training set for calibration"))?;
    let (_, validation) = train.split_validation(VALIDATION_IMAGES);
    if validation.image_len() != model.input.shape.len() {
        anyhow::bail!(
            "the {source} images have {}x{} pixels, the model expects {}",
            validation.rows,
            validation.cols,
            model.input.shape
        );
    }
    Ok(validation.truncated(count))
}

/// Compiles `model` as `args` ask. The calibration images serve calibrated ranges, the
/// automatic table width, the logits' encoding and the report of how tables are used.
pub fn compile_model(model: &ModelFile, args: &CircuitArgs, data: &DataArgs) -> Result<Compiled> {
    let images = calibration_images(model, data, args.calibration as usize)?;
    let calibration = labelled(&images);
    let options = CompileOptions {
        lut_bits: match &args.lut_bits {
            LutChoice::Auto => None,
            LutChoice::Bits(bits) => Some(bits.clone()),
        },
        target_log2_p_error: args.p_error,
        ranges: args.ranges.source(),
        weight_bits: BitWidth::new(args.weight_bits)?,
        accuracy_margin: Some(args.accuracy_margin / 100.0),
    };
    compile(model, &options, &calibration).map_err(|e| {
        let hint = match &e {
            CompileError::Lower(LowerError::NotQuantised { .. }) => {
                "; train with --qat"
            }
            CompileError::Lower(LowerError::NoGrid { .. }) => {
                "; compile with --ranges calibrated, or train with --qat --lut-bits N"
            }
            CompileError::Lower(LowerError::LutBits { .. }) => {
                "; leave --lut-bits out to use the trained widths, or compile with --ranges calibrated"
            }
            CompileError::NoFit(_) => "; use fewer weight or table bits, or a looser --p-error",
            _ => "",
        };
        anyhow::anyhow!("{e}{hint}")
    })
}

fn default_output(model: &Path) -> PathBuf {
    model.with_extension("circuit")
}

pub fn run(args: &CompileArgs) -> Result<()> {
    let started = Instant::now();
    let model = ModelFile::load(&args.model)
        .with_context(|| format!("loading the model file {}", args.model.display()))?;
    let compiled = compile_model(&model, &args.circuit, &args.data)
        .with_context(|| format!("compiling {}", args.model.display()))?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.model));
    compiled
        .file
        .save(&output)
        .with_context(|| format!("writing the circuit file {}", output.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&compiled.report).expect("reports serialise")
        );
    } else {
        println!("{}", compiled.report);
        println!(
            "circuit written to {} ({} table bits) in {:.1} s",
            output.display(),
            compiled.file.circuit.lut_widths(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

pub fn inspect(args: &InspectArgs) -> Result<()> {
    let file = CircuitFile::load(&args.circuit)
        .with_context(|| format!("loading the circuit file {}", args.circuit.display()))?;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{}", file.to_json()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}
