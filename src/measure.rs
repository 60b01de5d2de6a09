//! Accuracy measured as the commands report it: the library's predictions with a
//! progress bar, and the latency distribution of encrypted evaluation.

use std::time::Duration;

use anyhow::Result;
use hecnn_compile::circuit_file::CircuitFile;
use hecnn_compile::evaluate::{LabelledSet, circuit_predictions, float_predictions};
use hecnn_compile::reference::ReferenceModel;
use hecnn_model::model::ModelFile;
use hecnn_runtime::LocalSession;

use crate::cli::Mode;
use crate::progress::{image_bar, spinner};

/// The classes of one mode, with a progress bar: the float model's (which needs
/// `model`), or the circuit's in clear, simulate (noise seeded by `seed`) or encrypted mode
/// (which need `file`).
pub fn mode_predictions(
    mode: Mode,
    model: Option<&ModelFile>,
    file: Option<&CircuitFile>,
    set: &LabelledSet,
    seed: u64,
) -> Result<Vec<usize>> {
    if let (Mode::Encrypted, Some(file)) = (mode, file) {
        return Ok(encrypted_predictions(file, set)?.0);
    }
    let bar = image_bar(&format!("{mode:?}").to_lowercase(), set.len());
    let tick = || bar.inc(1);
    let predicted = match (mode, model, file) {
        (Mode::Float, Some(model), _) => float_predictions(&ReferenceModel::new(model), set, &tick),
        (Mode::Float, None, _) => {
            anyhow::bail!("float mode needs the model file, not a circuit file")
        }
        (Mode::Clear, _, Some(file)) => circuit_predictions(&file.circuit, None, set, &tick),
        (_, _, Some(file)) => {
            let parameters = file.parameter_set.set();
            circuit_predictions(&file.circuit, Some((&parameters, seed)), set, &tick)
        }
        (_, _, None) => anyhow::bail!("{mode:?} mode needs a circuit"),
    };
    bar.finish_and_clear();
    Ok(predicted)
}

/// Every image encrypted under fresh keys, evaluated over ciphertexts, decrypted, one
/// after the other (each evaluation uses every core); prints the latency distribution and
/// returns the predictions and the sorted latencies.
pub fn encrypted_predictions(
    file: &CircuitFile,
    set: &LabelledSet,
) -> Result<(Vec<usize>, Vec<Duration>)> {
    let bar = spinner("generating keys");
    let (session, keygen) = LocalSession::with_fresh_keys(file)?;
    bar.finish_and_clear();
    println!(
        "encrypted: keys for {} generated in {:.1} s",
        file.parameter_set,
        keygen.as_secs_f64()
    );
    let bar = image_bar("encrypted", set.len());
    let (predicted, timings) = session.predictions(&set.images, &|| bar.inc(1))?;
    bar.finish_and_clear();
    let mut latencies: Vec<Duration> = timings.iter().map(|t| t.total()).collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64();
    println!(
        "encrypted latency per image: median {:.2} s, min {:.2} s, 90th percentile {:.2} s, max {:.2} s ({} PBS each)",
        at(0.5),
        at(0.0),
        at(0.9),
        at(1.0),
        file.circuit.pbs_count()
    );
    Ok((predicted, latencies))
}
