//! `hecnn compile` and `hecnn inspect`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{CompileArgs, InspectArgs};
use crate::pipeline::{LatencyFrom, compile_and_save, load_circuit, load_model};

fn default_output(model: &Path) -> PathBuf {
    model.with_extension("circuit")
}

pub fn run(args: &CompileArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.model));
    compile_and_save(
        &model,
        &args.circuit.options()?,
        &args.data.source(&model.dataset),
        args.circuit.calibration as usize,
        &output,
        args.json,
        if args.no_calibrate {
            LatencyFrom::Table
        } else {
            LatencyFrom::Calibration
        },
    )
    .with_context(|| format!("compiling {}", args.model.display()))?;
    Ok(())
}

pub fn inspect(args: &InspectArgs) -> Result<()> {
    let file = load_circuit(&args.circuit)?;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{}", file.to_json()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}
