//! `hecnn activations`: how far each approximation is from ReLU (uniformly on `[-R, R]`, and
//! where batch norm puts the inputs), and a plot of them.

use anyhow::{Context, Result};
use hecnn_model::activation::{Activation, normal_pdf, smoothed_relu};
use plotters::prelude::*;

use crate::cli::ActivationsArgs;
use crate::plot::{legend, write_svg};

/// Points of the comparison grid on `[-R, R]`.
const GRID: usize = 2001;

/// Height at which the plot draws the input density's peak.
const DENSITY_PEAK: f64 = 1.0;

/// Root of the mean squared error against ReLU under `N(0, 1)`, on the grid:
/// `sqrt(sum_i w_i (f(x_i) - relu(x_i))^2 / sum_i w_i)`, `w_i = phi(x_i)`.
fn normal_weighted_rms(points: &[(f64, f64)]) -> f64 {
    let (weighted, total) = points.iter().fold((0.0, 0.0), |(e, t), &(x, y)| {
        let w = normal_pdf(x);
        (e + w * (y - x.max(0.0)).powi(2), t + w)
    });
    (weighted / total).sqrt()
}

/// Largest and mean `|y - g(x)|` over the points.
fn max_and_mean(points: &[(f64, f64)], g: impl Fn(f64) -> f64) -> (f64, f64) {
    let errors: Vec<f64> = points.iter().map(|&(x, y)| (y - g(x)).abs()).collect();
    (
        errors.iter().copied().fold(0.0, f64::max),
        errors.iter().sum::<f64>() / errors.len() as f64,
    )
}

pub fn run(args: &ActivationsArgs) -> Result<()> {
    let r = args.range;
    let grid: Vec<f64> = (0..GRID)
        .map(|i| -r + 2.0 * r * i as f64 / (GRID - 1) as f64)
        .collect();
    let activations: Vec<Activation> = Activation::NAMES
        .iter()
        .map(|name| Activation::from_name(name, r, 4, "swish4"))
        .collect::<Result<_, _>>()?;
    println!(
        "errors on [-{r}, {r}] ({GRID} points): against ReLU, RMS against ReLU under N(0, 1) (inputs after batch norm), and against the smoothed ReLU a kernel reading approximates"
    );
    println!(
        "{:<36} {:>9} {:>9} {:>11} {:>13} {:>13}",
        "activation", "max", "mean", "N(0,1) RMS", "smoothed max", "smoothed mean"
    );
    let mut curves = Vec::new();
    for activation in &activations {
        let f = activation.evaluator();
        let points: Vec<(f64, f64)> = grid.iter().map(|&x| (x, f.eval(x))).collect();
        let (max, mean) = max_and_mean(&points, |x| x.max(0.0));
        let smoothed = match activation {
            Activation::KernelRelu2 { width, .. } => {
                let (max, mean) = max_and_mean(&points, |x| smoothed_relu(x, *width));
                format!("{max:>13.4} {mean:>13.4}")
            }
            _ => format!("{:>13} {:>13}", "-", "-"),
        };
        let label = if let Activation::Poly { .. } = activation {
            "poly (init swish4, deg 4)".to_string()
        } else {
            activation.to_string()
        };
        println!(
            "{label:<36} {max:>9.4} {mean:>9.4} {:>11.4} {smoothed}",
            normal_weighted_rms(&points)
        );
        curves.push((label, points));
    }
    if let Some(path) = &args.plot {
        plot(path, r, &curves).with_context(|| format!("writing the plot {}", path.display()))?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}

/// The curves against ReLU, with the y axis kept to where ReLU lives on `[-R, R]` (a curve
/// leaving it, as `x^2` does, is cut at its edge rather than setting the scale), and the
/// density of the inputs under it so the reader sees where an error matters.
fn plot(path: &std::path::Path, r: f64, curves: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let (y_min, y_max) = (-1.0, r + 1.0);
    let inside = |y: f64| (y_min..=y_max).contains(&y);
    write_svg(path, (900, 600), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("HE-friendly activations vs ReLU on [-{r}, {r}]"),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(-r..r, y_min..y_max)?;
        chart.configure_mesh().x_desc("x").y_desc("f(x)").draw()?;
        let density = DENSITY_PEAK / normal_pdf(0.0);
        chart
            .draw_series(AreaSeries::new(
                curves[0]
                    .1
                    .iter()
                    .map(|&(x, _)| (x, density * normal_pdf(x))),
                0.0,
                BLACK.mix(0.08),
            ))?
            .label(format!(
                "inputs after batch norm, N(0, 1) (density, peak drawn at {DENSITY_PEAK})"
            ))
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLACK.mix(0.15).filled())
            });
        for (i, (label, points)) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let style = if label == "relu" {
                BLACK.stroke_width(3)
            } else {
                color.stroke_width(2)
            };
            // One line per stretch inside the axis.
            let stretches = points
                .chunk_by(|a, b| inside(a.1) == inside(b.1))
                .filter(|stretch| inside(stretch[0].1));
            for (k, stretch) in stretches.enumerate() {
                let series = chart.draw_series(LineSeries::new(stretch.iter().copied(), style))?;
                if k == 0 {
                    series
                        .label(label.as_str())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                }
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}
