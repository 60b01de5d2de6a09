//! `hecnn experiment frontier`: accuracy against encrypted latency. Each model at each
//! table width is trained circuit-aware, compiled (the set chosen as `hecnn compile`
//! chooses it), evaluated in float, clear and simulate on the full test set and benched
//! encrypted; Concrete ML's measurements (`bench/concrete-ml/`) are drawn beside them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hecnn_compile::compiler::{CompileOptions, Compiled, DEFAULT_CALIBRATION_IMAGES};
use hecnn_compile::evaluate::LabelledSet;
use hecnn_datasets::{DatasetSource, Split};
use hecnn_model::activation::{Activation, DEFAULT_RANGE};
use hecnn_model::io::{read_limited, write_atomic};
use hecnn_model::model::ModelFile;
use hecnn_model::quantize::{BitWidth, LutBits, QuantSettings};
use hecnn_runtime::bench;
use hecnn_train::architecture::Architecture;
use hecnn_train::network::CircuitTraining;
use hecnn_train::trainer::TrainConfig;
use plotters::prelude::*;
use serde::Deserialize;

use super::{Accuracies, short_set, trained_model};
use crate::calibration::pbs_cost;
use crate::cli::ExperimentFrontierArgs;
use crate::pipeline::{comma_list, compile_model, labelled};
use crate::plot::{legend, write_svg};
use crate::progress::image_bar;

/// Largest Concrete ML results file read.
const MAX_CONCRETE_ML_BYTES: u64 = 1 << 20;
/// Approximate width of one character of the plot's 13-pixel labels, in pixels.
const LABEL_CHAR_WIDTH: i32 = 7;
/// Single-core PBS timed per row for the floor.
const PBS_SAMPLES: usize = 20;

/// What `bench/concrete-ml/measure.py` writes: Concrete ML's networks measured on this
/// machine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConcreteMlResults {
    /// When the script ran (UTC, ISO 8601).
    measured: String,
    /// Concrete ML's version.
    concrete_ml: String,
    /// The machine's processor and core count.
    machine: String,
    /// One entry per network.
    models: Vec<ConcreteMlModel>,
}

/// One Concrete ML network.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConcreteMlModel {
    /// What it is (architecture, bits, rounding).
    name: String,
    /// Accuracy simulated on the test set, as a fraction.
    accuracy: f64,
    /// Test images the accuracy was simulated on.
    test_images: usize,
    /// Latency of each really encrypted image, seconds.
    latencies_s: Vec<f64>,
    /// Table reads per image, if Concrete reported them.
    pbs: Option<usize>,
    /// Encrypted images classified as the simulation classified them.
    encrypted_equal_to_simulated: usize,
    /// Key generation, seconds.
    keygen_s: f64,
}

/// A point of the plot that is not hecnn's: Concrete ML, measured in this run's script or
/// quoted.
struct Anchor {
    /// Short, for the plot.
    name: String,
    /// Everything known of it, for the table.
    detail: String,
    /// Accuracy on the test set, as a fraction.
    accuracy: f64,
    /// Median latency per image, seconds.
    latency_s: f64,
}

/// DESIGN.md section 6's Concrete ML figures (same machine kind; quoted in the first commit
/// of this repository), for when the script has not been run.
fn quoted_anchors() -> Vec<Anchor> {
    let quoted = |name: &str, accuracy, latency_s| Anchor {
        name: format!("Concrete ML {name}"),
        detail: format!("Concrete ML 1.9.0 {name} (quoted, measured before 2026-11-23)"),
        accuracy,
        latency_s,
    };
    vec![
        quoted("paper CNN, 6 bits", 0.9861, 151.0),
        quoted("3-bit QAT CNN", 0.9707, 80.5),
    ]
}

/// The anchors of `path` if it exists, else the quoted ones; a file that exists but does not
/// read is an error (a broken measurement should not silently become a quoted one).
fn anchors(path: &Path) -> Result<(Vec<Anchor>, String)> {
    if !path.exists() {
        return Ok((
            quoted_anchors(),
            format!(
                "Concrete ML: DESIGN.md section 6's figures, quoted (no {} yet: run bench/concrete-ml/measure.sh)",
                path.display()
            ),
        ));
    }
    let bytes = read_limited(path, MAX_CONCRETE_ML_BYTES)?;
    let results: ConcreteMlResults = serde_json::from_slice(&bytes)
        .with_context(|| format!("reading Concrete ML's results {}", path.display()))?;
    let mut anchors = Vec::new();
    for model in &results.models {
        let mut latencies = model.latencies_s.clone();
        if latencies.is_empty()
            || latencies.iter().any(|l| *l <= 0.0 || !l.is_finite())
            || !(0.0..=1.0).contains(&model.accuracy)
        {
            anyhow::bail!(
                "{}: {} needs positive latencies and an accuracy in [0, 1]",
                path.display(),
                model.name
            );
        }
        latencies.sort_by(f64::total_cmp);
        anchors.push(Anchor {
            name: format!("Concrete ML {}", model.name),
            detail: format!(
                "Concrete ML {} {}{} (simulated on {} images; {} encrypted, {} as simulated; keys {:.0} s)",
                results.concrete_ml,
                model.name,
                model.pbs.map_or(String::new(), |p| format!(", {p} PBS")),
                model.test_images,
                latencies.len(),
                model.encrypted_equal_to_simulated,
                model.keygen_s
            ),
            accuracy: model.accuracy,
            latency_s: latencies[latencies.len() / 2],
        });
    }
    Ok((
        anchors,
        format!(
            "Concrete ML: measured by bench/concrete-ml/measure.sh on {} ({}; {})",
            results.measured,
            results.machine,
            path.display()
        ),
    ))
}

/// `V1_6_PARAM_MESSAGE_3_CARRY_1_KS_PBS_GAUSSIAN_2M128` -> `3_1`: which set a plot point
/// ran on, short enough for a label.
fn set_prefix(name: &str) -> String {
    short_set(name)
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join("_")
}

/// One model at one table width on one parameter set, measured.
struct Point {
    model: String,
    lut_bits: u32,
    parameter_set: String,
    pbs: usize,
    accuracies: Accuracies,
    latency: Duration,
    benched: usize,
    floor: Duration,
    predicted_s: f64,
}

fn table(points: &[Point], anchors: &[Anchor], anchor_source: &str, command: &str) -> String {
    let mut md = String::new();
    writeln!(md, "# Accuracy against encrypted latency\n").unwrap();
    writeln!(
        md,
        "Made by `{command}` on this 2-core machine. Plot: `frontier.svg`.\n"
    )
    .unwrap();
    writeln!(
        md,
        "Float, clear and simulate: the full MNIST test set. Latency: `hecnn bench`'s median over the first test images, really encrypted, both cores; floor: PBS x one PBS on one core / 2 cores; predicted: what `hecnn compile` reports (PBS x the calibrated cost of one read on this machine). Machines of this kind drift by up to 2x from day to day: compare rows of one run.\n"
    )
    .unwrap();
    writeln!(md, "| model | table bits | PBS | parameter set | float | clear | simulate | latency | achieved / floor | predicted | predicted / measured |").unwrap();
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for p in points {
        let latency = p.latency.as_secs_f64();
        writeln!(
            md,
            "| {} | {} | {} | {} | {:.2}% | {:.2}% | {:.2}% | {:.2} s (median of {}) | {:.2} | {:.2} s | {:.2} |",
            p.model,
            p.lut_bits,
            p.pbs,
            short_set(&p.parameter_set),
            100.0 * p.accuracies.float,
            100.0 * p.accuracies.clear,
            100.0 * p.accuracies.simulate,
            latency,
            p.benched,
            latency / p.floor.as_secs_f64(),
            p.predicted_s,
            p.predicted_s / latency
        )
        .unwrap();
    }
    writeln!(md, "\n{anchor_source}:\n").unwrap();
    writeln!(md, "| system | accuracy | latency |").unwrap();
    writeln!(md, "|---|---|---|").unwrap();
    for a in anchors {
        writeln!(
            md,
            "| {} | {:.2}% | {:.1} s |",
            a.detail,
            100.0 * a.accuracy,
            a.latency_s
        )
        .unwrap();
    }
    md
}

/// Simulated accuracy against latency (log scale): hecnn's points labelled by model and
/// table width, Concrete ML's labelled by network, the two targets as crosses.
fn plot(path: &Path, points: &[Point], anchors: &[Anchor]) -> Result<()> {
    let latencies = points
        .iter()
        .map(|p| p.latency.as_secs_f64())
        .chain(anchors.iter().map(|a| a.latency_s));
    let (fastest, slowest) = latencies.fold((1.0f64, 5.0f64), |(lo, hi), l| (lo.min(l), hi.max(l)));
    let lowest = points
        .iter()
        .map(|p| p.accuracies.simulate)
        .chain(anchors.iter().map(|a| a.accuracy))
        .fold(0.98f64, f64::min);
    write_svg(path, (1000, 650), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "MNIST: simulated accuracy against encrypted latency per image (2 cores)",
                ("sans-serif", 20),
            )
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(
                (fastest / 2.0..slowest * 2.0).log_scale(),
                (100.0 * lowest - 0.5).floor()..100.0,
            )?;
        chart
            .configure_mesh()
            .x_desc("latency per image (s, log scale)")
            .y_desc("accuracy, simulated on the test set (%)")
            .draw()?;
        let label_style = ("sans-serif", 13).into_font();
        let hecnn_color = BLUE.mix(0.9);
        chart
            .draw_series(points.iter().enumerate().map(|(i, p)| {
                let at = (p.latency.as_secs_f64(), 100.0 * p.accuracies.simulate);
                // Above and below in turn, so that neighbours' labels do not overlap.
                let dy = if i % 2 == 0 { -16 } else { 6 };
                EmptyElement::at(at)
                    + Circle::new((0, 0), 5, hecnn_color.filled())
                    + Text::new(
                        format!(
                            "{} {}b {}",
                            p.model,
                            p.lut_bits,
                            set_prefix(&p.parameter_set)
                        ),
                        (7, dy),
                        label_style.clone(),
                    )
            }))?
            .label("hecnn (model, table bits)")
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, hecnn_color.filled()));
        let anchor_color = RED.mix(0.9);
        chart
            .draw_series(anchors.iter().map(|a| {
                EmptyElement::at((a.latency_s, 100.0 * a.accuracy))
                    + TriangleMarker::new((0, 0), 7, anchor_color.filled())
                    + Text::new(
                        a.name.clone(),
                        // Centred under the marker: the anchors sit at the slow end of the
                        // axis, where a label to the right would leave the plot.
                        (-(a.name.len() as i32) * LABEL_CHAR_WIDTH / 2, 10),
                        label_style.clone(),
                    )
            }))?
            .label("Concrete ML")
            .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 7, anchor_color.filled()));
        chart
            .draw_series(
                [(1.0, 98.0), (5.0, 99.0)]
                    .into_iter()
                    .map(|target| Cross::new(target, 7, BLACK.stroke_width(2))),
            )?
            .label("targets: 98% at 1 s, 99% at 5 s")
            .legend(|(x, y)| Cross::new((x + 10, y), 6, BLACK.stroke_width(2)));
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// The test set, and the images benched encrypted.
struct TestImages<'a> {
    all: LabelledSet<'a>,
    benched: Vec<&'a [u8]>,
}

/// One point: float, clear and simulate accuracy on the full test set, the compile
/// report's predicted latency (calibrated on this machine, as `hecnn compile` reports it),
/// and `hecnn bench`'s measured one.
fn measure(
    model_name: &str,
    lut_bits: u32,
    model: &ModelFile,
    compiled: &Compiled,
    images: &TestImages,
) -> Result<Point> {
    let file = &compiled.file;
    let set = &images.all;
    let (accuracies, _) = Accuracies::measure(model, file, set)?;
    // Timed now, not taken from the cache: the prediction is judged against the bench
    // that follows.
    let (cost, _) = pbs_cost(compiled.report.parameter_set, Duration::ZERO)?;
    let bar = image_bar("encrypted", images.benched.len());
    let report = bench(file, &images.benched, PBS_SAMPLES, &|_| {}, &|| bar.inc(1))?;
    bar.finish_and_clear();
    let point = Point {
        model: model_name.to_string(),
        lut_bits,
        parameter_set: file.parameter_set.to_string(),
        pbs: report.pbs,
        accuracies,
        latency: report.median_latency(),
        benched: images.benched.len(),
        floor: report.floor(rayon::current_num_threads()),
        predicted_s: report.pbs as f64 * cost.ms / 1e3,
    };
    println!(
        "{} PBS on {}: float {:.2}%, clear {:.2}%, simulate {:.2}%, latency {:.2} s (predicted {:.2} s)",
        point.pbs,
        short_set(&point.parameter_set),
        100.0 * point.accuracies.float,
        100.0 * point.accuracies.clear,
        100.0 * point.accuracies.simulate,
        point.latency.as_secs_f64(),
        point.predicted_s
    );
    Ok(point)
}

pub fn frontier(args: &ExperimentFrontierArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating the experiment folder {}", args.dir.display()))?;
    let (anchors, anchor_source) = anchors(&args.concrete_ml)?;
    let source = DatasetSource::Mnist;
    let test = source
        .load(Split::Test)
        .context("loading the MNIST test set")?;
    let benched = test.truncated(args.bench_images as usize);
    let set_images = TestImages {
        all: labelled(&test),
        benched: labelled(&benched).images,
    };
    let command = format!(
        "hecnn experiment frontier --models {} --lut-bits {} --activation {} --epochs {} --weight-bits {} --activation-bits {} --read-noise {} --accuracy-margins {} --bench-images {}",
        args.models.join(","),
        comma_list(&args.lut_bits),
        args.activation,
        args.epochs,
        args.weight_bits,
        args.activation_bits,
        args.read_noise,
        comma_list(&args.accuracy_margins),
        args.bench_images,
    );
    let quant = QuantSettings::uniform(
        BitWidth::new(args.weight_bits)?,
        BitWidth::new(args.activation_bits)?,
    );
    let mut points = Vec::new();
    for model_name in &args.models {
        for &bits in &args.lut_bits {
            println!("\n== {model_name} with {bits}-bit tables");
            let path = args.dir.join(format!("{model_name}-lut{bits}.json"));
            let model = trained_model(&path, args.retrain, || {
                Ok(TrainConfig {
                    quant: Some(quant.clone()),
                    circuit: Some(CircuitTraining {
                        lut_bits: vec![LutBits::new(bits)?],
                        read_noise: vec![args.read_noise],
                    }),
                    epochs: args.epochs as usize,
                    ..TrainConfig::new(
                        Architecture::named(model_name)?,
                        Activation::from_name(&args.activation, DEFAULT_RANGE, 4, "swish4")?,
                    )
                })
            })?;
            let mut measured_sets = Vec::new();
            for &margin in &args.accuracy_margins {
                let options = CompileOptions {
                    accuracy_margin: Some(margin / 100.0),
                    ..CompileOptions::default()
                };
                let compiled = compile_model(&model, &options, &source, DEFAULT_CALIBRATION_IMAGES)
                    .with_context(|| format!("compiling {}", path.display()))?;
                let set = compiled.report.parameter_set;
                if measured_sets.contains(&set) {
                    println!("margin {margin} points: {set} again, measured above");
                    continue;
                }
                measured_sets.push(set);
                let point = measure(model_name, bits, &model, &compiled, &set_images)?;
                points.push(point);
                // Written after every point, so that a long run leaves what it measured.
                write_atomic(
                    &args.output,
                    table(&points, &anchors, &anchor_source, &command).as_bytes(),
                )
                .with_context(|| format!("writing {}", args.output.display()))?;
            }
        }
    }
    plot(&args.plot, &points, &anchors)
        .with_context(|| format!("writing the plot {}", args.plot.display()))?;
    println!("\n{}", table(&points, &anchors, &anchor_source, &command));
    println!(
        "table written to {}, plot to {}",
        args.output.display(),
        args.plot.display()
    );
    Ok(())
}
