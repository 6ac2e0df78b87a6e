//! Loss curves as a PNG chart (plotters, with the DejaVu Sans font built in so the chart renders
//! the same on any machine, fonts installed or not).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::train::EvalRecord;

/// One model's evaluations, drawn as a solid training-loss line and a dashed validation line.
pub struct LossSeries<'a> {
    /// Legend name.
    pub name: &'a str,
    /// The evaluations, in step order.
    pub records: &'a [EvalRecord],
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

fn register_font() -> Result<()> {
    static REGISTER: Once = Once::new();
    let mut result = Ok(());
    REGISTER.call_once(|| {
        result = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        )
        .map_err(|_| Error::Backend("could not load the built-in chart font".into()));
    });
    result
}

/// Draw the loss curves of `series` into a PNG at `path` (written to a temporary name and
/// renamed, so a reader never sees half a picture).
///
/// # Errors
/// [`Error::Io`] when the file cannot be written, [`Error::Data`] when there is nothing to draw.
pub fn plot_losses(path: &Path, title: &str, series: &[LossSeries]) -> Result<()> {
    let points = series.iter().flat_map(|s| s.records);
    let max_step = points.clone().map(|r| r.step).max().unwrap_or(0);
    if max_step == 0 {
        return Err(Error::Data("no evaluations to plot yet".into()));
    }
    let losses = points
        .flat_map(|r| [r.train_loss, r.val_loss])
        .filter(|l| l.is_finite());
    let (low, high) = losses.fold((f32::INFINITY, 0.0f32), |(lo, hi), l| {
        (lo.min(l), hi.max(l))
    });
    register_font()?;

    // The image encoder picks the format from the extension, so the temporary name keeps it.
    let tmp = path.with_extension("tmp.png");
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(&tmp, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0usize..max_step, (low * 0.9)..(high * 1.05))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("cross-entropy loss (nats)")
            .label_style(("sans-serif", 15))
            .draw()?;
        for (index, s) in series.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            let train = s.records.iter().map(|r| (r.step, r.train_loss));
            chart
                .draw_series(LineSeries::new(train, color.stroke_width(2)))?
                .label(format!("{} train", s.name))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            let val: Vec<(usize, f32)> = s.records.iter().map(|r| (r.step, r.val_loss)).collect();
            chart
                .draw_series(DashedLineSeries::new(val, 6, 4, color.stroke_width(1)))?
                .label(format!("{} validation (dashed)", s.name))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(1))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|err| Error::Io {
        path: tmp.display().to_string(),
        message: format!("cannot draw the loss chart: {err}"),
    })?;
    std::fs::rename(&tmp, path).map_err(|err| Error::Io {
        path: path.display().to_string(),
        message: format!("cannot move the chart into place: {err}"),
    })
}
