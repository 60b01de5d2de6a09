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
use hecnn_datasets::{DEFAULT_VALIDATION_IMAGES, DatasetSource, Split};
use hecnn_model::activation::{Activation, DEFAULT_RANGE};
use hecnn_model::quantize::{BitWidth, LutBits, QuantSettings};
use hecnn_runtime::median;
use hecnn_train::architecture::Architecture;
use hecnn_train::network::{CircuitTraining, DEFAULT_READ_NOISE};
use hecnn_train::trainer::{Checkpointing, TrainConfig};
use plotters::prelude::*;

use crate::cli::{ExperimentActivationsArgs, Mode};
use crate::measure::{encrypted_predictions, mode_predictions};
use crate::pipeline::{TrainJob, compile_model, labelled, load_model, train_model};

/// One measured (architecture, activation).
struct Row {
    model: String,
    activation: String,
    lut_bits: String,
    parameter_set: String,
    pbs: usize,
    float: f64,
    clear: f64,
    simulate: f64,
    encrypted: f64,
    encrypted_images: usize,
    agreement_with_clear: f64,
    latency: Duration,
}

/// One accuracy of a row.
type RowValue = fn(&Row) -> f64;

/// `V1_6_PARAM_MESSAGE_3_CARRY_1_KS_PBS_GAUSSIAN_2M128` -> `3_1 GAUSSIAN 2M128`.
fn short_set(name: &str) -> String {
    name.split("MESSAGE_")
        .nth(1)
        .map_or(name.to_string(), |rest| {
            rest.replace("_CARRY_", "_")
                .replace("_KS_PBS_", " ")
                .replace('_', " ")
        })
}

fn table(rows: &[Row], command: &str) -> String {
    let mut md = String::new();
    writeln!(md, "# HE-friendly activations, measured\n").unwrap();
    writeln!(md, "Made by `{command}` on this 2-core machine.\n").unwrap();
    writeln!(
        md,
        "Float, clear and simulate: the full MNIST test set (10 000 images). Encrypted: the first test images, really encrypted, evaluated and decrypted one after the other; latency is their median.\n"
    )
    .unwrap();
    writeln!(md, "| model | activation | table bits | parameter set | PBS | float | clear | simulate | encrypted | encrypted = clear | latency |").unwrap();
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for r in rows {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.2}% | {:.2}% | {:.2}% | {:.0}% of {} | {:.0}% | {:.2} s |",
            r.model,
            r.activation,
            r.lut_bits,
            short_set(&r.parameter_set),
            r.pbs,
            100.0 * r.float,
            100.0 * r.clear,
            100.0 * r.simulate,
            100.0 * r.encrypted,
            r.encrypted_images,
            100.0 * r.agreement_with_clear,
            r.latency.as_secs_f64()
        )
        .unwrap();
    }
    md
}

/// Accuracy per activation, one line per (model, mode).
fn plot(path: &Path, rows: &[Row], activations: &[String]) -> Result<()> {
    let lowest = rows
        .iter()
        .flat_map(|r| [r.float, r.clear, r.simulate])
        .fold(1.0f64, f64::min);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Test accuracy by activation (QAT, compiled)",
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(
                -0.5..activations.len() as f64 - 0.5,
                (100.0 * lowest - 1.0).floor()..100.0,
            )?;
        chart
            .configure_mesh()
            .x_labels(activations.len())
            .x_label_formatter(&|x| {
                activations
                    .get(x.round() as usize)
                    .cloned()
                    .unwrap_or_default()
            })
            .y_desc("accuracy (%)")
            .draw()?;
        let models: Vec<&str> = {
            let mut m: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
            m.dedup();
            m
        };
        let modes: [(&str, RowValue); 3] = [
            ("float", |r| r.float),
            ("clear", |r| r.clear),
            ("simulate", |r| r.simulate),
        ];
        for (i, model) in models.iter().enumerate() {
            for (k, (mode, value)) in modes.iter().enumerate() {
                let color = Palette99::pick(3 * i + k).to_rgba();
                let points: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.model == *model)
                    .filter_map(|r| {
                        let x = activations.iter().position(|a| *a == r.activation)?;
                        Some((x as f64, 100.0 * value(r)))
                    })
                    .collect();
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(2),
                    ))?
                    .label(format!("{model} {mode}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    hecnn_model::io::write_atomic(path, svg.as_bytes())?;
    Ok(())
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
        "hecnn experiment activations --models {} --activations {} --epochs {} --encrypted-images {} --lut-bits {} --p-error 2^{}",
        args.models.join(","),
        args.activations.join(","),
        args.epochs,
        args.encrypted_images,
        args.lut_bits
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.p_error
    );
    // Compiled on the grids the models were trained on.
    let options = CompileOptions {
        target_log2_p_error: args.p_error,
        ..CompileOptions::default()
    };
    let four = BitWidth::new(4).expect("a valid width");
    let mut rows = Vec::new();
    for (model_index, model_name) in args.models.iter().enumerate() {
        for activation in &args.activations {
            println!("\n== {model_name} with {activation}");
            let path = args.dir.join(format!("{model_name}-{activation}.json"));
            if args.retrain || !path.exists() {
                let config = TrainConfig {
                    quant: Some(QuantSettings {
                        weight_bits: four,
                        activation_bits: four,
                    }),
                    circuit: Some(CircuitTraining {
                        lut_bits: vec![lut_bits(model_index)?],
                        read_noise: DEFAULT_READ_NOISE,
                    }),
                    epochs: args.epochs as usize,
                    ..TrainConfig::new(
                        Architecture::named(model_name)?,
                        Activation::from_name(activation, DEFAULT_RANGE, 4, "swish4")?,
                    )
                };
                train_model(&TrainJob {
                    config,
                    source: source.clone(),
                    validation: DEFAULT_VALIDATION_IMAGES,
                    limit: None,
                    checkpointing: Checkpointing::default(),
                    output: path.clone(),
                })?;
            }
            let model = load_model(&path)?;
            let compiled = compile_model(&model, &options, &source, DEFAULT_CALIBRATION_IMAGES)
                .with_context(|| format!("compiling {}", path.display()))?;
            let file = &compiled.file;
            let (set, sample_set) = (labelled(&test), labelled(&sample));
            let predict = |mode| mode_predictions(mode, Some(&model), Some(file), &set, 1);
            let (float, clear, simulate) = (
                predict(Mode::Float)?,
                predict(Mode::Clear)?,
                predict(Mode::Simulate)?,
            );
            let (encrypted, mut latencies) = encrypted_predictions(file, &sample_set)?;
            let agreeing = agreement(&encrypted, &clear);
            let row = Row {
                model: model_name.clone(),
                activation: activation.clone(),
                lut_bits: file.circuit.lut_widths(),
                parameter_set: file.parameter_set.to_string(),
                pbs: file.circuit.pbs_count(),
                float: accuracy(&float, &set.labels),
                clear: accuracy(&clear, &set.labels),
                simulate: accuracy(&simulate, &set.labels),
                encrypted: accuracy(&encrypted, &sample_set.labels),
                encrypted_images: sample.len(),
                agreement_with_clear: agreeing as f64 / sample.len() as f64,
                latency: median(&mut latencies),
            };
            println!(
                "float {:.2}%, clear {:.2}%, simulate {:.2}%, encrypted {:.0}% of {}",
                100.0 * row.float,
                100.0 * row.clear,
                100.0 * row.simulate,
                100.0 * row.encrypted,
                row.encrypted_images
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
