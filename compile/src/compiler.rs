//! The whole compilation: lower the model, choose the table width (given, or the smallest
//! that keeps the float model's predictions), choose the parameter set from the noise
//! model, and package the circuit file with its report.

use crate::circuit::Circuit;
use crate::circuit_file::{CIRCUIT_FORMAT, CIRCUIT_VERSION, CircuitFile, InputQuant};
use crate::evaluate::{LabelledSet, accuracy, circuit_predictions, mean_simulated_accuracy};
use crate::lower::{LowerError, LowerOptions, Lowered, RangeSource, lower};
use crate::params::ParameterSetName;
use crate::reference::ReferenceModel;
use crate::report::Report;
use crate::select::{NoFit, PbsRequirement, Selection, SetMiss, candidates, fit};
use crate::simulate::Simulator;
use hecnn_model::model::{Layer, ModelFile};
use hecnn_model::quantize::{BitWidth, LutBits};

/// Default target: `log2` of the probability that one PBS reads a wrong entry.
pub const DEFAULT_LOG2_P_ERROR: f64 = -40.0;

/// Table widths tried when the width is chosen automatically.
pub const AUTO_LUT_BITS: std::ops::RangeInclusive<u32> = 2..=LutBits::MAX;

/// Calibration images by default: the whole validation split. Fewer cannot tell a set
/// that loses 0.1 points of accuracy from one that loses none (a set's one-entry flips
/// change about 1% of the classes, in both directions).
pub const DEFAULT_CALIBRATION_IMAGES: usize = 5000;

/// Default largest loss of simulated against clear accuracy on the calibration images
/// (a fraction) when choosing the parameter set.
pub const DEFAULT_ACCURACY_MARGIN: f64 = 0.001;

/// Noise draws per calibration image when a set is chosen by accuracy: one draw leaves
/// the simulated accuracy of 1000 images uncertain by about as much as the margin (each
/// image near a class boundary flips or not by chance); the mean of several is steadier.
pub const SET_CHOICE_DRAWS: u64 = 4;

/// Automatic width: the smallest whose simulated accuracy on the calibration images is
/// at most this far (a fraction) below the float model's.
pub const AUTO_MAX_ACCURACY_DROP: f64 = 0.002;

/// How to compile.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// Table bits per stage with tables (the last repeating), or `None`: as trained with
    /// trained ranges, else the one width chosen on the calibration images.
    pub lut_bits: Option<Vec<LutBits>>,
    /// Target `log2` probability of a wrong read per PBS.
    pub target_log2_p_error: f64,
    /// Where the tables' ranges come from; `None`: trained where the model has read
    /// grids, else the worst case.
    pub ranges: Option<RangeSource>,
    /// Width of weights the model did not quantise in training.
    pub weight_bits: BitWidth,
    /// Choose the cheapest set meeting the error target whose simulated accuracy on the
    /// calibration images is at most this far (a fraction) below the clear circuit's;
    /// `None` (or no calibration images): the cheapest meeting the target.
    pub accuracy_margin: Option<f64>,
    /// Use this parameter set (it must meet the error target) instead of choosing one.
    pub parameter_set: Option<ParameterSetName>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            lut_bits: None,
            target_log2_p_error: DEFAULT_LOG2_P_ERROR,
            ranges: None,
            weight_bits: BitWidth::new(4).expect("4 bits is a valid width"),
            accuracy_margin: Some(DEFAULT_ACCURACY_MARGIN),
            parameter_set: None,
        }
    }
}

/// Clear and simulated accuracy of a circuit on the calibration images, as the set was
/// chosen by.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CalibrationAccuracy {
    /// The clear circuit's.
    pub clear: f64,
    /// The simulated circuit's under the chosen set.
    pub simulate: f64,
    /// Images.
    pub images: usize,
    /// Noise draws per image the simulated accuracy is the mean of.
    pub draws: u64,
}

/// Whether every activation of `model` was trained on a read grid.
pub fn has_read_grids(model: &ModelFile) -> bool {
    let mut activations = model.layers.iter().filter_map(|layer| match layer {
        Layer::Activation { input_grid, .. } => Some(input_grid.is_some()),
        _ => None,
    });
    activations.clone().next().is_some() && activations.all(|trained| trained)
}

/// Why a model did not compile.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The model's structure cannot be lowered.
    #[error(transparent)]
    Lower(#[from] LowerError),
    /// No parameter set meets the target.
    #[error(transparent)]
    NoFit(#[from] NoFit),
    /// Choices that need calibration images were given none.
    #[error("{0} needs calibration images")]
    NoCalibration(&'static str),
    /// The parameter set asked for does not hold the tables or misses the error target.
    #[error("parameter set {set} {miss}")]
    ParameterSet {
        /// The set asked for.
        set: ParameterSetName,
        /// Why it does not fit.
        miss: SetMiss,
    },
}

/// A compiled model.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The circuit file.
    pub file: CircuitFile,
    /// What it costs, how noisy it is and how its tables are used.
    pub report: Report,
}

/// The PBS requirements of a circuit: one per stage with tables. A read counts as wrong
/// when off by more than the rounding already does: half a box when every accumulator has
/// an entry of its own (`D <= 1`), one box otherwise.
pub fn requirements(circuit: &Circuit) -> Vec<PbsRequirement> {
    circuit
        .stages()
        .iter()
        .enumerate()
        .filter_map(|(index, stage)| stage.tables().map(|tables| (index, stage, tables)))
        .map(|(index, stage, tables)| {
            let norm2 = stage
                .linear
                .bounds(stage.input_max)
                .iter()
                .map(|b| b.norm2)
                .fold(0.0, f64::max);
            let (norm2_pbs, norm2_fresh) = if index == 0 {
                (0.0, norm2)
            } else {
                (norm2, 0.0)
            };
            let exact = stage.input_unit >= tables.lut_bits.box_width();
            PbsRequirement {
                layer: format!("{index} ({})", stage.label),
                lut_bits: tables.lut_bits,
                norm2_pbs,
                norm2_fresh,
                tolerance_boxes: if exact { 0.5 } else { 1.0 },
            }
        })
        .collect()
}

/// Compiles `model`; `calibration` (raw-pixel images) serves calibrated ranges, the
/// automatic choice of table width, the choice of the set by accuracy, the logits'
/// encoding and the table usage report.
///
/// # Example
/// A network of two pixels, one dense layer of two ReLUs quantised to 3 bits, and two
/// classes, compiled with worst-case ranges on 4-bit tables:
/// ```
/// use hecnn_compile::compiler::{CompileOptions, compile};
/// use hecnn_compile::evaluate::LabelledSet;
/// use hecnn_compile::lower::RangeSource;
/// use hecnn_model::model::ModelFile;
/// use hecnn_model::quantize::LutBits;
/// use hecnn_compile::simulate::Simulator;
///
/// let model: ModelFile = serde_json::from_str(r#"{
///     "format": "hecnn-model", "version": 1, "name": "tiny", "dataset": "none",
///     "class_names": ["dark", "bright"],
///     "input": {"shape": {"channels": 2, "height": 1, "width": 1}, "mean": 0.5, "std": 0.5},
///     "layers": [
///         {"type": "dense", "in_features": 2, "out_features": 2,
///          "weight": [1.0, 0.5, -0.5, -1.0], "bias": [0.0, 0.0], "weight_bits": 4},
///         {"type": "activation", "function": {"kind": "relu"},
///          "output_quant": {"bits": 3, "range": {"lo": 0.0, "hi": 2.0}}},
///         {"type": "dense", "in_features": 2, "out_features": 2,
///          "weight": [-1.0, 1.0, 1.0, -1.0], "bias": [0.0, 0.0], "weight_bits": 4}
///     ],
///     "training": null
/// }"#).unwrap();
/// let options = CompileOptions {
///     lut_bits: Some(vec![LutBits::new(4).unwrap()]),
///     ranges: Some(RangeSource::WorstCase),
///     ..CompileOptions::default()
/// };
/// let compiled = compile(&model, &options, &LabelledSet::default()).unwrap();
/// assert_eq!(compiled.report.pbs_count, 2); // one table read per activation value
/// let clear = Simulator::clear(&compiled.file.circuit);
/// let logits = clear.logits(&[255, 255], 0);
/// assert!(logits[1] > logits[0], "a bright image is bright: {logits:?}");
/// ```
pub fn compile(
    model: &ModelFile,
    options: &CompileOptions,
    calibration: &LabelledSet,
) -> Result<Compiled, CompileError> {
    let ranges = options.ranges.unwrap_or(if has_read_grids(model) {
        RangeSource::Trained
    } else {
        RangeSource::WorstCase
    });
    if ranges == RangeSource::Calibrated && calibration.images.is_empty() {
        return Err(CompileError::NoCalibration("calibrated ranges"));
    }
    let lower_at = |lut_bits: &[LutBits]| {
        lower(
            model,
            &LowerOptions {
                weight_bits: options.weight_bits,
                lut_bits,
                ranges,
                calibration: &calibration.images,
            },
        )
    };
    let (lowered, selection, accuracy) = match (&options.lut_bits, ranges) {
        (Some(lut_bits), _) => {
            let lowered = lower_at(lut_bits)?;
            let (selection, accuracy) = choose_set(&lowered.circuit, options, calibration)?;
            (lowered, selection, accuracy)
        }
        (None, RangeSource::Trained) => {
            let lowered = lower_at(&[])?;
            let (selection, accuracy) = choose_set(&lowered.circuit, options, calibration)?;
            (lowered, selection, accuracy)
        }
        (None, _) => {
            let (lowered, selection) = choose_lut_bits(model, &lower_at, options, calibration)?;
            (lowered, selection, None)
        }
    };
    let Lowered { circuit, usage } = lowered;
    let file = CircuitFile {
        format: CIRCUIT_FORMAT.into(),
        version: CIRCUIT_VERSION,
        name: model.name.clone(),
        dataset: model.dataset.clone(),
        class_names: model.class_names.clone(),
        input: InputQuant {
            shape: model.input.shape,
            max: circuit.first().input_max,
        },
        parameter_set: selection.set.name(),
        target_log2_p_error: options.target_log2_p_error,
        circuit,
    };
    let report = Report::new(&file, &selection, &usage, accuracy);
    Ok(Compiled { file, report })
}

/// The sets meeting the error target for `circuit`, cheapest first: only the one asked
/// for, if one is.
fn fitting_sets(
    circuit: &Circuit,
    options: &CompileOptions,
) -> Result<Vec<Selection>, CompileError> {
    let requirements = requirements(circuit);
    let Some(asked) = options.parameter_set else {
        return Ok(candidates(&requirements, options.target_log2_p_error)?);
    };
    let selection = fit(&asked.set(), &requirements, options.target_log2_p_error)
        .map_err(|miss| CompileError::ParameterSet { set: asked, miss })?;
    Ok(vec![selection])
}

/// The cheapest set meeting the error target whose simulated accuracy on the calibration
/// images stays within the margin of the clear circuit's (the most accurate one if none
/// does), with those figures; the cheapest meeting the target without a margin or images.
fn choose_set(
    circuit: &Circuit,
    options: &CompileOptions,
    calibration: &LabelledSet,
) -> Result<(Selection, Option<CalibrationAccuracy>), CompileError> {
    let fitting = fitting_sets(circuit, options)?;
    let Some(margin) = options
        .accuracy_margin
        .filter(|_| !calibration.images.is_empty())
    else {
        return Ok((
            fitting
                .into_iter()
                .next()
                .expect("candidates are not empty"),
            None,
        ));
    };
    let clear = accuracy(
        &circuit_predictions(circuit, None, calibration, &|| {}),
        &calibration.labels,
    );
    let figures = |simulate| CalibrationAccuracy {
        clear,
        simulate,
        images: calibration.images.len(),
        draws: SET_CHOICE_DRAWS,
    };
    let mut best: Option<(f64, Selection)> = None;
    let mut rejected_noise: Vec<Vec<Vec<f64>>> = Vec::new();
    for selection in fitting {
        // A set at least as noisy on every read and logit as one already rejected flips
        // at least as many classes: rejected without simulating.
        let simulator = Simulator::noisy(circuit, &selection.set);
        let noise = simulator.noise().expect("a noisy simulator");
        if rejected_noise
            .iter()
            .any(|quieter| at_least_as_noisy(noise, quieter))
        {
            continue;
        }
        let simulate = mean_simulated_accuracy(&simulator, SET_CHOICE_DRAWS, calibration);
        if simulate >= clear - margin {
            return Ok((selection, Some(figures(simulate))));
        }
        rejected_noise.push(noise.to_vec());
        if best.as_ref().is_none_or(|(a, _)| simulate > *a) {
            best = Some((simulate, selection));
        }
    }
    let (simulate, selection) = best.expect("the cheapest fitting set is always simulated");
    Ok((selection, Some(figures(simulate))))
}

/// Whether every read and logit of `noise` is at least as noisy as in `other` (per stage
/// and output, standard deviations in the same units).
fn at_least_as_noisy(noise: &[Vec<f64>], other: &[Vec<f64>]) -> bool {
    noise
        .iter()
        .flatten()
        .zip(other.iter().flatten())
        .all(|(a, b)| a >= b)
}

/// The smallest table width in [`AUTO_LUT_BITS`] that has a parameter set and whose
/// simulated accuracy on the calibration images is within [`AUTO_MAX_ACCURACY_DROP`] of
/// the float model's; failing that, the most accurate width that has a set.
fn choose_lut_bits(
    model: &ModelFile,
    lower_at: &dyn Fn(&[LutBits]) -> Result<Lowered, LowerError>,
    options: &CompileOptions,
    calibration: &LabelledSet,
) -> Result<(Lowered, Selection), CompileError> {
    if calibration.images.is_empty() {
        return Err(CompileError::NoCalibration("choosing the table width"));
    }
    let reference = ReferenceModel::new(model);
    let float_accuracy = calibration.accuracy(|_, image| reference.predict(image));
    let mut best: Option<(f64, Lowered, Selection)> = None;
    let mut last_error = None;
    for bits in AUTO_LUT_BITS {
        let lowered = lower_at(&[LutBits::new(bits).expect("automatic widths are valid")])?;
        let selection = match fitting_sets(&lowered.circuit, options) {
            Ok(fitting) => fitting
                .into_iter()
                .next()
                .expect("fitting sets are not empty"),
            Err(error) => {
                last_error = Some(error);
                continue;
            }
        };
        let simulator = Simulator::noisy(&lowered.circuit, &selection.set);
        let accuracy = mean_simulated_accuracy(&simulator, 1, calibration);
        if accuracy >= float_accuracy - AUTO_MAX_ACCURACY_DROP {
            return Ok((lowered, selection));
        }
        if best.as_ref().is_none_or(|(a, _, _)| accuracy > *a) {
            best = Some((accuracy, lowered, selection));
        }
    }
    match (best, last_error) {
        (Some((_, lowered, selection)), _) => Ok((lowered, selection)),
        (None, Some(error)) => Err(error),
        (None, None) => unreachable!("the automatic range is not empty"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit_file::CircuitFileError;
    use crate::testing::{image, model};

    fn compiled(lut_bits: u32) -> Compiled {
        let options = CompileOptions {
            lut_bits: Some(vec![LutBits::new(lut_bits).unwrap()]),
            ..CompileOptions::default()
        };
        compile(&model(), &options, &LabelledSet::default()).unwrap()
    }

    #[test]
    fn circuit_files_round_trip_in_both_forms() {
        let file = compiled(4).file;
        let bytes = file.to_bytes();
        assert_eq!(CircuitFile::from_bytes(&bytes, "c").unwrap(), file);
        assert_eq!(
            CircuitFile::from_bytes(file.to_json().as_bytes(), "c.json").unwrap(),
            file
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.circuit");
        file.save(&path).unwrap();
        assert_eq!(CircuitFile::load(&path).unwrap(), file);
        let fingerprint = file.fingerprint();
        assert_eq!(fingerprint.to_string().parse(), Ok(fingerprint));
        let full = fingerprint.to_string();
        assert_eq!(full.len(), 64);
        assert_eq!(format!("{fingerprint:.16}"), full[..16]);
        assert!("12ab".parse::<crate::circuit_file::Fingerprint>().is_err());
        assert_ne!(fingerprint, compiled(5).file.fingerprint());
    }

    #[test]
    fn damaged_and_foreign_circuit_files_are_refused() {
        let file = compiled(4).file;
        let bytes = file.to_bytes();
        let message = |bytes: &[u8]| CircuitFile::from_bytes(bytes, "x.circuit").unwrap_err();

        let truncated = message(&bytes[..bytes.len() - 7]);
        assert!(
            matches!(truncated, CircuitFileError::Corrupted { .. }),
            "{truncated}"
        );
        assert!(truncated.to_string().contains("x.circuit"));
        assert!(message(&bytes[..20]).to_string().contains("truncated"));

        let mut altered = bytes.clone();
        let middle = altered.len() / 2;
        altered[middle] ^= 0x40;
        assert!(message(&altered).to_string().contains("checksum"));

        let mut future = bytes.clone();
        future[8] = 9;
        let err = message(&future);
        assert!(
            matches!(err, CircuitFileError::Version { found: 9, .. }),
            "{err}"
        );

        let model_json = serde_json::to_vec(&model()).unwrap();
        let err = message(&model_json);
        assert!(matches!(err, CircuitFileError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("hecnn-model"), "{err}");
        assert!(matches!(
            message(b"\x7fELF...."),
            CircuitFileError::Foreign { .. }
        ));
        assert!(matches!(message(b""), CircuitFileError::Foreign { .. }));

        // Well-formed but inconsistent: a table missing an output (the circuit is checked
        // as it is decoded).
        let mut inconsistent: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
        inconsistent["circuit"]["stages"][0]["read"]["tables"]["levels"]
            .as_array_mut()
            .unwrap()
            .pop();
        let err = message(inconsistent.to_string().as_bytes());
        assert!(matches!(err, CircuitFileError::Corrupted { .. }), "{err}");
        assert!(err.to_string().contains("stage 0"), "{err}");

        // Well-formed, a valid circuit, but a header that does not fit it.
        let mut other_classes = file.clone();
        other_classes.class_names.pop();
        let err = message(other_classes.to_json().as_bytes());
        assert!(matches!(err, CircuitFileError::Invalid { .. }), "{err}");

        let unknown_set = file
            .to_json()
            .replace(file.parameter_set.as_str(), "PARAM_INVENTED");
        let err = message(unknown_set.as_bytes());
        assert!(err.to_string().contains("PARAM_INVENTED"), "{err}");
    }

    #[test]
    fn first_stage_noise_comes_from_fresh_encryptions() {
        let circuit = compiled(4).file.circuit;
        let requirements = requirements(&circuit);
        assert_eq!(requirements.len(), 1);
        assert_eq!(requirements[0].norm2_pbs, 0.0);
        assert!(requirements[0].norm2_fresh > 0.0);
        assert_eq!(requirements[0].tolerance_boxes, 1.0);
    }

    #[test]
    fn the_report_counts_every_table_read() {
        let Compiled { file, report } = compiled(4);
        assert_eq!(report.pbs_count, 36);
        assert_eq!(report.stages[0].pbs, 36);
        assert_eq!(report.stages[1].pbs, 0);
        assert_eq!(report.stages[0].fan_in, 16);
        assert_eq!(report.parameter_set, file.parameter_set);
        assert!((report.predicted_latency_s - 36.0 * report.pbs_cost.ms / 1e3).abs() < 1e-12);
        assert!(report.stages[0].log2_p_error.unwrap() <= DEFAULT_LOG2_P_ERROR);
        assert_eq!(report.query_bytes, 8 * 64 + 64);
        assert!(report.to_string().contains(file.parameter_set.as_str()));
    }

    #[test]
    fn a_pinned_set_is_used_or_refused() {
        let with_set = |bits: u32, name: &str| {
            let options = CompileOptions {
                lut_bits: Some(vec![LutBits::new(bits).unwrap()]),
                parameter_set: Some(ParameterSetName::new(name).unwrap()),
                ..CompileOptions::default()
            };
            compile(&model(), &options, &LabelledSet::default())
        };
        let quiet = "V1_6_PARAM_MESSAGE_3_CARRY_1_KS_PBS_GAUSSIAN_2M128";
        assert_ne!(compiled(4).file.parameter_set.as_str(), quiet);
        assert_eq!(
            with_set(4, quiet).unwrap().file.parameter_set.as_str(),
            quiet
        );
        // The smallest sets' own noise is too much for 4-bit reads: refused, naming the
        // layer.
        let small = "V1_8_PARAM_MESSAGE_1_CARRY_1_KS_PBS_GAUSSIAN_2M128";
        let err = with_set(4, small).unwrap_err();
        assert!(
            matches!(
                &err,
                CompileError::ParameterSet {
                    miss: SetMiss::TooNoisy { .. },
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(small) && message.contains("layer 0"),
            "{message}"
        );
    }

    /// The automatic width is the smallest meeting the accuracy criterion.
    #[test]
    fn automatic_width_is_the_smallest_that_keeps_the_accuracy() {
        let model = model();
        let reference = ReferenceModel::new(&model);
        let images: Vec<Vec<u8>> = (0..300).map(|seed| image(1000 + seed)).collect();
        let calibration = LabelledSet {
            images: images.iter().map(Vec::as_slice).collect(),
            labels: images.iter().map(|i| reference.predict(i)).collect(),
        };
        let chosen = compile(&model, &CompileOptions::default(), &calibration).unwrap();
        let bits = chosen.file.circuit.max_lut_bits().unwrap().get();
        let simulated = |file: &CircuitFile| {
            let set = file.parameter_set.set();
            mean_simulated_accuracy(&Simulator::noisy(&file.circuit, &set), 1, &calibration)
        };
        assert!(simulated(&chosen.file) >= 1.0 - AUTO_MAX_ACCURACY_DROP);
        if bits > *AUTO_LUT_BITS.start() {
            let narrower = compile(
                &model,
                &CompileOptions {
                    lut_bits: Some(vec![LutBits::new(bits - 1).unwrap()]),
                    ..CompileOptions::default()
                },
                &calibration,
            )
            .unwrap();
            assert!(simulated(&narrower.file) < 1.0 - AUTO_MAX_ACCURACY_DROP);
        }
        let err = compile(&model, &CompileOptions::default(), &LabelledSet::default());
        assert!(matches!(err, Err(CompileError::NoCalibration(_))));
    }
}
