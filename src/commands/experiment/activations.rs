//! `hecnn experiment activations`: the seeds' claim, measured. For each activation and
//! architecture: train circuit-aware (QAT on the tables' grids), compile, then float,
//! clear and simulate accuracy on the full test set, encrypted accuracy on a sample, PBS
//! count and encrypted latency; written as a markdown table and a plot.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hecnn_compile::compiler::{CompileOptions, DEFAULT_CALIBRATION_IMAGES};
use hecnn_compile::evaluate::{accuracy, agreement};
use hecnn_datasets::{DatasetSource, Split};
use hecnn_model::activation::{Activation, DEFAULT_RANGE};
use hecnn_model::quantize::{BitWidth, LutBits, QuantSettings};
use hecnn_runtime::median;
use hecnn_train::architecture::Architecture;
use hecnn_train::network::{CircuitTraining, DEFAULT_READ_NOISE};
use hecnn_train::trainer::TrainConfig;
use plotters::prelude::*;

use crate::cli::ExperimentActivationsArgs;
use crate::measure::encrypted_predictions;
use crate::pipeline::{comma_list, compile_model, labelled};
use crate::plot::{legend, write_svg};

use super::{Accuracies, short_set, trained_model};

/// One measured (architecture, activation): every seed's accuracies, and the first seed's
/// circuit run encrypted.
struct Row {
    model: String,
    activation: String,
    lut_bits: String,
    parameter_set: String,
    pbs: usize,
    seeds: Vec<Accuracies>,
    encrypted: f64,
    encrypted_images: usize,
    agreement_with_clear: f64,
    latency: Duration,
}

/// One accuracy of a seed.
type SeedValue = fn(&Accuracies) -> f64;

/// The three accuracies every seed has, with their names.
const MODES: [(&str, SeedValue); 3] = [
    ("float", |a| a.float),
    ("clear", |a| a.clear),
    ("simulate", |a| a.simulate),
];

/// Mean, sample standard deviation, least and largest of one accuracy over a row's seeds
/// (in percent).
struct Spread {
    mean: f64,
    std: f64,
    min: f64,
    max: f64,
}

impl Row {
    fn spread(&self, value: SeedValue) -> Spread {
        let values: Vec<f64> = self.seeds.iter().map(|s| 100.0 * value(s)).collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Spread {
            mean,
            std: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

fn table(rows: &[Row], command: &str) -> String {
    let mut md = String::new();
    writeln!(md, "# HE-friendly activations, measured\n").unwrap();
    writeln!(md, "Made by `{command}` on this 2-core machine.\n").unwrap();
    writeln!(
        md,
        "Float, clear and simulate: the full MNIST test set (10 000 images), mean ± standard deviation over the seeds (each seed trained, compiled and evaluated on its own). Encrypted: the first seed's circuit on the first test images, really encrypted, evaluated and decrypted one after the other; latency is their median. Parameter set and PBS: the first seed's circuit.\n"
    )
    .unwrap();
    writeln!(md, "| model | activation | table bits | parameter set | PBS | seeds | float | clear | simulate | encrypted | encrypted = clear | latency |").unwrap();
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for r in rows {
        let cell = |value: SeedValue| {
            let s = r.spread(value);
            format!("{:.2} ± {:.2}%", s.mean, s.std)
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% of {} | {:.0}% | {:.2} s |",
            r.model,
            r.activation,
            r.lut_bits,
            short_set(&r.parameter_set),
            r.pbs,
            r.seeds.len(),
            cell(MODES[0].1),
            cell(MODES[1].1),
            cell(MODES[2].1),
            100.0 * r.encrypted,
            r.encrypted_images,
            100.0 * r.agreement_with_clear,
            r.latency.as_secs_f64()
        )
        .unwrap();
    }
    md
}

/// Accuracy per activation: for each (model, mode) a point at the seeds' mean with a bar
/// from the lowest to the highest seed. Activations are categories, so nothing joins them.
fn plot(path: &Path, rows: &[Row], activations: &[String]) -> Result<()> {
    let spreads: Vec<Spread> = rows
        .iter()
        .flat_map(|r| MODES.iter().map(|(_, value)| r.spread(*value)))
        .collect();
    let lowest = spreads.iter().map(|s| s.min).fold(100.0f64, f64::min);
    let models: Vec<&str> = {
        let mut m: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
        m.dedup();
        m
    };
    let series = (models.len() * MODES.len()) as f64;
    write_svg(path, (1000, 600), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Test accuracy by activation (circuit-aware QAT; mean and range over seeds)",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(
                -0.5..activations.len() as f64 - 0.5,
                (lowest - 0.5).floor()..100.0,
            )?;
        chart
            .configure_mesh()
            .x_labels(activations.len())
            .disable_x_mesh()
            .x_label_formatter(&|x| {
                activations
                    .get(x.round() as usize)
                    .filter(|_| (x - x.round()).abs() < 1e-6)
                    .cloned()
                    .unwrap_or_default()
            })
            .y_desc("accuracy (%)")
            .draw()?;
        for (i, model) in models.iter().enumerate() {
            for (k, (mode, value)) in MODES.iter().enumerate() {
                let series_index = i * MODES.len() + k;
                let color = Palette99::pick(series_index).to_rgba();
                // Side by side within each activation's slot.
                let offset = 0.6 * ((series_index as f64 + 0.5) / series - 0.5);
                let points: Vec<(f64, Spread)> = rows
                    .iter()
                    .filter(|r| r.model == *model)
                    .filter_map(|r| {
                        let x = activations.iter().position(|a| *a == r.activation)?;
                        Some((x as f64 + offset, r.spread(*value)))
                    })
                    .collect();
                chart
                    .draw_series(points.iter().map(|(x, s)| {
                        ErrorBar::new_vertical(*x, s.min, s.mean, s.max, color.stroke_width(2), 8)
                    }))?
                    .label(format!("{model} {mode}"))
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
                chart.draw_series(
                    points
                        .iter()
                        .map(|(x, s)| Circle::new((*x, s.mean), 4, color.filled())),
                )?;
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

pub fn activations(args: &ExperimentActivationsArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating the experiment folder {}", args.dir.display()))?;
    let source = DatasetSource::Mnist;
    let test = source
        .load(Split::Test)
        .context("loading the MNIST test set")?;
    let sample = test.truncated(args.encrypted_images as usize);
    if args.lut_bits.len() != 1 && args.lut_bits.len() != args.models.len() {
        anyhow::bail!(
            "--lut-bits gives {} widths for {} models: give one, or one per model",
            args.lut_bits.len(),
            args.models.len()
        );
    }
    let lut_bits = |model: usize| -> Result<LutBits> {
        Ok(LutBits::new(
            args.lut_bits[model.min(args.lut_bits.len() - 1)],
        )?)
    };
    let command = format!(
        "hecnn experiment activations --models {} --activations {} --epochs {} --seeds {} --encrypted-images {} --lut-bits {} --p-error 2^{}",
        args.models.join(","),
        args.activations.join(","),
        args.epochs,
        args.seeds,
        args.encrypted_images,
        comma_list(&args.lut_bits),
        args.p_error
    );
    // Compiled on the grids the models were trained on.
    let options = CompileOptions {
        target_log2_p_error: args.p_error,
        ..CompileOptions::default()
    };
    let four = BitWidth::new(4).expect("a valid width");
    // 5-bit activation outputs cost nothing in the circuit (a finer level only changes the
    // next stage's unit) and keep the float accuracy (README, "Circuit-aware training").
    let five = BitWidth::new(5).expect("a valid width");
    let (set, sample_set) = (labelled(&test), labelled(&sample));
    let mut rows = Vec::new();
    for (model_index, model_name) in args.models.iter().enumerate() {
        for activation in &args.activations {
            let mut seeds = Vec::new();
            let mut first = None;
            for seed in 1..=args.seeds {
                println!("\n== {model_name} with {activation}, seed {seed}");
                let path = args
                    .dir
                    .join(format!("{model_name}-{activation}-seed{seed}.json"));
                let model = trained_model(&path, args.retrain, || {
                    Ok(TrainConfig {
                        quant: Some(QuantSettings::uniform(four, five)),
                        circuit: Some(CircuitTraining {
                            lut_bits: vec![lut_bits(model_index)?],
                            read_noise: vec![DEFAULT_READ_NOISE],
                        }),
                        epochs: args.epochs as usize,
                        seed,
                        ..TrainConfig::new(
                            Architecture::named(model_name)?,
                            Activation::from_name(activation, DEFAULT_RANGE, 4, "swish4")?,
                        )
                    })
                })?;
                let compiled = compile_model(&model, &options, &source, DEFAULT_CALIBRATION_IMAGES)
                    .with_context(|| format!("compiling {}", path.display()))?;
                let file = compiled.file;
                let (measured, clear) = Accuracies::measure(&model, &file, &set)?;
                println!(
                    "float {:.2}%, clear {:.2}%, simulate {:.2}%",
                    100.0 * measured.float,
                    100.0 * measured.clear,
                    100.0 * measured.simulate
                );
                seeds.push(measured);
                first.get_or_insert((file, clear));
            }
            let (file, clear) = first.expect("at least one seed");
            let (encrypted, mut latencies) = encrypted_predictions(&file, &sample_set)?;
            let sample_clear = &clear[..sample_set.len()];
            let row = Row {
                model: model_name.clone(),
                activation: activation.clone(),
                lut_bits: file.circuit.lut_widths(),
                parameter_set: file.parameter_set.to_string(),
                pbs: file.circuit.pbs_count(),
                seeds,
                encrypted: accuracy(&encrypted, &sample_set.labels),
                encrypted_images: sample_set.len(),
                agreement_with_clear: agreement(&encrypted, sample_clear) as f64
                    / sample_set.len() as f64,
                latency: median(&mut latencies),
            };
            println!(
                "encrypted {:.0}% of {}, equal to clear on {:.0}%",
                100.0 * row.encrypted,
                row.encrypted_images,
                100.0 * row.agreement_with_clear
            );
            rows.push(row);
            // Written after every row, so that a long run leaves what it measured.
            hecnn_model::io::write_atomic(&args.output, table(&rows, &command).as_bytes())
                .with_context(|| format!("writing {}", args.output.display()))?;
        }
    }
    plot(&args.plot, &rows, &args.activations)
        .with_context(|| format!("writing the plot {}", args.plot.display()))?;
    println!("\n{}", table(&rows, &command));
    println!(
        "table written to {}, plot to {}",
        args.output.display(),
        args.plot.display()
    );
    Ok(())
}
