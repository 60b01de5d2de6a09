//! `hecnn activations`: how far each approximation is from ReLU, and a plot of them.

use anyhow::{Context, Result};
use hecnn_model::activation::Activation;
use plotters::prelude::*;

use crate::cli::ActivationsArgs;

/// Points of the comparison grid on `[-R, R]`.
const GRID: usize = 2001;

pub fn run(args: &ActivationsArgs) -> Result<()> {
    let r = args.range;
    let grid: Vec<f64> = (0..GRID)
        .map(|i| -r + 2.0 * r * i as f64 / (GRID - 1) as f64)
        .collect();
    let activations: Vec<Activation> = Activation::NAMES
        .iter()
        .map(|name| Activation::from_name(name, r, 4, "swish4"))
        .collect::<Result<_, _>>()?;
    println!("errors against ReLU on [-{r}, {r}] ({GRID} points)");
    println!("{:<24} {:>10} {:>10}", "activation", "max", "mean");
    let mut curves = Vec::new();
    for activation in &activations {
        let f = activation.evaluator();
        let points: Vec<(f64, f64)> = grid.iter().map(|&x| (x, f.eval(x))).collect();
        let errors: Vec<f64> = points
            .iter()
            .map(|&(x, y)| (y - x.max(0.0)).abs())
            .collect();
        let max = errors.iter().copied().fold(0.0, f64::max);
        let mean = errors.iter().sum::<f64>() / errors.len() as f64;
        let label = if let Activation::Poly { .. } = activation {
            "poly (init swish4, deg 4)".to_string()
        } else {
            activation.to_string()
        };
        println!("{label:<24} {max:>10.4} {mean:>10.4}");
        curves.push((label, points));
    }
    if let Some(path) = &args.plot {
        plot(path, r, &curves).with_context(|| format!("writing the plot {}", path.display()))?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}

fn plot(path: &std::path::Path, r: f64, curves: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let (y_min, y_max) = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
    // The SVG is rendered in memory and written atomically.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("HE-friendly activations vs ReLU on [-{r}, {r}]"),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(-r..r, y_min.min(-0.5)..y_max.max(r))?;
        chart.configure_mesh().x_desc("x").y_desc("f(x)").draw()?;
        for (i, (label, points)) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let style = if label == "relu" {
                BLACK.stroke_width(3)
            } else {
                color.stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    hecnn_model::io::write_atomic(path, svg.as_bytes())?;
    Ok(())
}
