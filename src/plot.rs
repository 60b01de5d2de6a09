//! What every plot of the CLI shares: an SVG rendered in memory and written atomically, on a
//! white background, with a framed legend.

use std::path::Path;

use anyhow::Result;
use hecnn_model::io::write_atomic;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Renders `draw` on a `size` SVG canvas and writes it to `path` (a temporary file, then a
/// rename: never half a plot).
pub fn write_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>,
) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// Draws the chart's series labels at `position`, framed on a light background.
pub fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
