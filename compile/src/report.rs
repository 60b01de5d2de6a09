//! The compile report: per stage its size, accumulator width, read step, table width and
//! how the calibration images use it, PBS count and noise; in total the PBS count, the parameter set, the predicted latency on this machine
//! and the sizes of what client and server exchange.

use std::fmt;

use serde::Serialize;

use crate::circuit_file::CircuitFile;
use crate::compiler::CalibrationAccuracy;
use crate::lower::TableUsage;
use crate::params::{CostSource, ParameterSetName, PbsCost};
use crate::select::Selection;
use crate::simulate::NoiseProfile;

/// One stage of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageReport {
    /// Model layers it computes.
    pub label: String,
    /// Outputs.
    pub outputs: usize,
    /// Largest number of weights feeding one output.
    pub fan_in: usize,
    /// Largest weight 2-norm of one output.
    pub weight_norm: f64,
    /// Bits of the widest worst-case accumulator range.
    pub accumulator_bits: u32,
    /// Accumulator units per table entry `D`, for stages with tables.
    pub accumulator_step: Option<f64>,
    /// Table bits, `None` for the logits.
    pub lut_bits: Option<u32>,
    /// How the calibration images use the tables, when there were any.
    pub usage: Option<TableUsage>,
    /// PBS per evaluation.
    pub pbs: usize,
    /// Largest standard deviation of a read, in table boxes (accumulator units for the
    /// logits).
    pub noise_std_boxes: f64,
    /// `log2` probability that one read is off by more than its rounding step, for stages
    /// with tables.
    pub log2_p_error: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Per stage.
    pub stages: Vec<StageReport>,
    /// PBS per evaluation.
    pub pbs_count: usize,
    /// The parameter set chosen.
    pub parameter_set: ParameterSetName,
    /// Cost of one PBS with all cores busy under that set.
    pub pbs_cost: PbsCost,
    /// Predicted seconds per image: PBS count x cost per PBS.
    pub predicted_latency_s: f64,
    /// `log2` of the target per PBS.
    pub target_log2_p_error: f64,
    /// `log2` upper bound (union bound) of the probability that any read of one evaluation
    /// is off by more than its rounding step.
    pub log2_p_any_error: f64,
    /// Evaluation key as shipped (seeded), bytes.
    pub evaluation_key_bytes: u64,
    /// Evaluation key in the server's memory, bytes.
    pub server_key_bytes: u64,
    /// One query: a seed and one 64-bit body per pixel, bytes.
    pub query_bytes: u64,
    /// Clear and simulated accuracy on the calibration images, when the set was chosen
    /// by them.
    pub calibration_accuracy: Option<CalibrationAccuracy>,
}

/// Bytes of a seeded LWE list's seed and header.
const SEEDED_LIST_OVERHEAD: u64 = 64;

impl Report {
    /// The report with `cost` per PBS (a calibration on the running machine, say) and the
    /// latency it predicts.
    pub fn with_pbs_cost(self, cost: PbsCost) -> Self {
        Self {
            pbs_cost: cost,
            predicted_latency_s: self.pbs_count as f64 * cost.ms / 1e3,
            ..self
        }
    }

    /// The report of `file` compiled under `selection`, with the table `usage` of each
    /// stage (as [`crate::lower::Lowered`] gives it).
    pub fn new(
        file: &CircuitFile,
        selection: &Selection,
        usage: &[Option<TableUsage>],
        calibration_accuracy: Option<CalibrationAccuracy>,
    ) -> Self {
        let circuit = &file.circuit;
        let std_units = NoiseProfile::new(circuit, &selection.set).std_in_read_units(circuit);
        let mut p_errors = selection.noise.iter();
        let stages: Vec<StageReport> = circuit
            .stages()
            .iter()
            .zip(&std_units)
            .enumerate()
            .map(|(index, (stage, std))| {
                let bounds = stage.linear.bounds(stage.input_max);
                let mut fan_in = vec![0usize; bounds.len()];
                stage.linear.for_each_tap(|j, _, _| fan_in[j] += 1);
                let span = bounds.iter().map(|b| b.max - b.min).max().unwrap_or(0);
                let tables = stage.tables();
                StageReport {
                    label: stage.label.clone(),
                    outputs: bounds.len(),
                    fan_in: fan_in.into_iter().max().unwrap_or(0),
                    weight_norm: bounds.iter().map(|b| b.norm2).fold(0.0, f64::max).sqrt(),
                    accumulator_bits: 64 - (span as u64).leading_zeros(),
                    accumulator_step: tables
                        .map(|t| t.lut_bits.box_width() as f64 / stage.input_unit as f64),
                    lut_bits: tables.map(|t| t.lut_bits.get()),
                    usage: usage.get(index).copied().flatten(),
                    pbs: if tables.is_some() { bounds.len() } else { 0 },
                    noise_std_boxes: std.iter().copied().fold(0.0, f64::max),
                    log2_p_error: tables.and_then(|_| p_errors.next().map(|n| n.log2_p_error)),
                }
            })
            .collect();
        let pbs_count = circuit.pbs_count();
        let pbs_cost = selection.set.pbs_cost();
        let p_any: f64 = stages
            .iter()
            .filter_map(|s| s.log2_p_error.map(|l| s.pbs as f64 * l.exp2()))
            .sum();
        Self {
            stages,
            pbs_count,
            parameter_set: selection.set.name(),
            pbs_cost,
            predicted_latency_s: pbs_count as f64 * pbs_cost.ms / 1e3,
            target_log2_p_error: file.target_log2_p_error,
            log2_p_any_error: p_any.log2(),
            evaluation_key_bytes: selection.set.compressed_server_key_bytes(),
            server_key_bytes: selection.set.server_key_bytes(),
            query_bytes: 8 * file.input.shape.len() as u64 + SEEDED_LIST_OVERHEAD,
            calibration_accuracy,
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<3} {:<34} {:>7} {:>6} {:>8} {:>5} {:>8} {:>4} {:>9} {:>7} {:>6} {:>10} {:>9}",
            "#",
            "layers",
            "outputs",
            "fan-in",
            "w 2-norm",
            "acc b",
            "D",
            "lut",
            "used",
            "wrapped",
            "PBS",
            "std (box)",
            "log2 p"
        )?;
        for (index, s) in self.stages.iter().enumerate() {
            writeln!(
                f,
                "{:<3} {:<34} {:>7} {:>6} {:>8.1} {:>5} {:>8} {:>4} {:>9} {:>7} {:>6} {:>10.2e} {:>9}",
                index,
                s.label,
                s.outputs,
                s.fan_in,
                s.weight_norm,
                s.accumulator_bits,
                s.accumulator_step.map_or("-".into(), |d| format!("{d:.3}")),
                s.lut_bits.map_or("-".into(), |b| b.to_string()),
                s.usage.map_or("-".into(), |u| format!(
                    "{}/{}",
                    u.min_entries, u.median_entries
                )),
                s.usage.map_or("-".into(), |u| format!(
                    "{:.2}%",
                    100.0 * u.wrapped_reads as f64 / u.reads.max(1) as f64
                )),
                s.pbs,
                s.noise_std_boxes,
                s.log2_p_error.map_or("-".into(), |l| format!("{l:.1}")),
            )?;
        }
        writeln!(
            f,
            "(D: accumulator units per table entry; used: entries the calibration images read, \
             least and median over outputs; wrapped: their reads beyond the table)"
        )?;
        writeln!(f, "parameter set      {}", self.parameter_set)?;
        if let Some(a) = self.calibration_accuracy {
            writeln!(
                f,
                "chosen by accuracy clear {:.2}%, simulated {:.2}% on {} calibration images (mean of {} noise draws)",
                100.0 * a.clear,
                100.0 * a.simulate,
                a.images,
                a.draws
            )?;
        }
        writeln!(
            f,
            "PBS per image      {} at {:.1} ms each ({})",
            self.pbs_count,
            self.pbs_cost.ms,
            match self.pbs_cost.source {
                CostSource::Measured => "measured on a machine of this kind, all cores busy",
                CostSource::Estimated => "estimated from the set's dimensions",
                CostSource::Calibrated => "measured on this machine, all cores busy",
            }
        )?;
        writeln!(
            f,
            "predicted latency  {:.2} s per image",
            self.predicted_latency_s
        )?;
        writeln!(
            f,
            "error probability  2^{:.1} per PBS target, 2^{:.1} for any read of one image",
            self.target_log2_p_error, self.log2_p_any_error
        )?;
        writeln!(
            f,
            "evaluation key     {:.1} MiB shipped (seeded), {:.1} MiB in server memory",
            mib(self.evaluation_key_bytes),
            mib(self.server_key_bytes)
        )?;
        write!(
            f,
            "query              {:.1} KiB",
            self.query_bytes as f64 / 1024.0
        )
    }
}
