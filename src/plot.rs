//! Loss curves as a PNG chart (plotters, with the DejaVu Sans font built in so the chart renders
//! the same on any machine, fonts installed or not).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use burn::tensor::Device;

use crate::device::{floats, token_tensor};
use crate::error::{Error, Result};
use crate::fs::write_atomically_with;
use crate::model::{ForwardOptions, Gpt, ShapeTrace};
use crate::text::Tokenizer;
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

    let draw = |tmp: &Path| -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(tmp, (900, 560)).into_drawing_area();
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
    write_png(path, draw)
}

/// Draw a PNG at a temporary path with `draw`, then move it into place (see [`crate::fs`]).
/// Check that `path` names a PNG file: the pictures are PNG, and the name says so.
///
/// # Errors
/// [`Error::Picture`] when the name does not end in `.png`.
pub fn check_png_path(path: &Path) -> Result<()> {
    let is_png = path
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("png"));
    match is_png {
        true => Ok(()),
        false => Err(Error::Picture {
            path: path.to_path_buf(),
            message: "the pictures are PNG files: give a name that ends in .png".into(),
        }),
    }
}

fn write_png(
    path: &Path,
    draw: impl FnOnce(&Path) -> std::result::Result<(), Box<dyn std::error::Error>>,
) -> Result<()> {
    check_png_path(path)?;
    write_atomically_with(path, |tmp| {
        draw(tmp).map_err(|err| Error::Picture {
            path: path.to_path_buf(),
            message: err.to_string(),
        })
    })
}

/// One attention layer's weights for one sequence, on the host.
pub struct AttentionMap<'a> {
    /// Title, e.g. `blocks.0.attn`.
    pub name: &'a str,
    /// Weights `[H, T, T]`, row-major: `weights[h][query][key]`.
    pub weights: &'a [f32],
    /// Heads, `H`.
    pub heads: usize,
}

/// Draw a grid of heatmaps, one per layer (rows) and head (columns): cell `(query, key)` is
/// darker the more weight the query gives that key. Under a causal mask everything above the
/// diagonal is blank. `labels` name the tokens along both axes.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written, [`Error::Data`] for no maps or mismatched
/// sizes.
pub fn plot_attention(path: &Path, labels: &[String], maps: &[AttentionMap]) -> Result<()> {
    let seq = labels.len();
    let heads = maps.first().map_or(0, |m| m.heads);
    if maps.is_empty()
        || seq == 0
        || maps
            .iter()
            .any(|m| m.weights.len() != m.heads * seq * seq || m.heads != heads)
    {
        return Err(Error::Data(
            "attention maps do not match the token labels".into(),
        ));
    }
    register_font()?;
    let cell = 110 + 14 * seq as u32;
    let draw = |tmp: &Path| -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(tmp, (cell * heads as u32, cell * maps.len() as u32 + 40))
            .into_drawing_area();
        root.fill(&WHITE)?;
        let (title, grid) = root.split_vertically(40);
        title.titled(
            "attention weights: rows = queries, columns = keys",
            ("sans-serif", 20),
        )?;
        let panels = grid.split_evenly((maps.len(), heads));
        for (index, panel) in panels.iter().enumerate() {
            let (layer, head) = (index / heads, index % heads);
            let map = &maps[layer];
            let weights = &map.weights[head * seq * seq..(head + 1) * seq * seq];
            draw_heatmap(panel, &format!("{} head {head}", map.name), labels, weights)?;
        }
        root.present()?;
        Ok(())
    };
    write_png(path, draw)
}

/// One head's `[T, T]` weights as a grid of shaded cells on `panel`, query 0 at the top.
fn draw_heatmap(
    panel: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    caption: &str,
    labels: &[String],
    weights: &[f32],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let seq = labels.len();
    let mut chart = ChartBuilder::on(panel)
        .caption(caption, ("sans-serif", 13))
        .margin(4)
        .x_label_area_size(18)
        .y_label_area_size(18)
        .build_cartesian_2d((0..seq).into_segmented(), (0..seq).into_segmented())?;
    // Only segment centres carry a token; query 0 is drawn at the top.
    let key_label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let query_label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < seq => labels[seq - 1 - i].clone(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(seq)
        .y_labels(seq)
        .x_label_formatter(&key_label)
        .y_label_formatter(&query_label)
        .label_style(("sans-serif", 11))
        .draw()?;
    chart.draw_series((0..seq).flat_map(|query| {
        (0..seq).map(move |key| {
            let w = weights[query * seq + key].clamp(0.0, 1.0) as f64;
            let shade = (255.0 * (1.0 - w)) as u8;
            let row = seq - 1 - query;
            Rectangle::new(
                [
                    (SegmentValue::Exact(key), SegmentValue::Exact(row)),
                    (SegmentValue::Exact(key + 1), SegmentValue::Exact(row + 1)),
                ],
                RGBColor(shade, shade, 255).filled(),
            )
        })
    }))?;
    Ok(())
}

/// Draw what every head of `model` looks at while reading `prompt`: run it once with the
/// readable attention (the only kernel that materialises the weights), keep each layer's
/// weights, and draw them with [`plot_attention`], labelled with the prompt's tokens
/// (`␣` for a space, `⏎` for a newline). A prompt longer than the context keeps its end.
///
/// # Errors
/// [`Error::Tokens`] for an empty prompt, the model's errors, and [`plot_attention`]'s.
pub fn attention_heatmap(
    model: &Gpt,
    tokenizer: &Tokenizer,
    prompt: &[usize],
    path: &Path,
    device: &Device,
) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::Tokens(
            "an attention heatmap needs at least one token".into(),
        ));
    }
    let prompt = &prompt[prompt.len().saturating_sub(model.config().max_seq_len)..];
    // A traced call runs the readable path, which keeps every layer's weights.
    let mut trace = ShapeTrace::with_attention_weights();
    model.forward_with(
        token_tensor(prompt, 1, prompt.len(), device)?,
        ForwardOptions::default().with_trace(&mut trace),
    )?;
    let layers = trace
        .attention_weights()
        .iter()
        .map(|(name, weights)| {
            let heads = weights.dims()[1];
            let name = name.trim_end_matches(".weights").to_string();
            Ok((name, heads, floats(weights.clone())?))
        })
        .collect::<Result<Vec<_>>>()?;
    let maps: Vec<AttentionMap> = layers
        .iter()
        .map(|(name, heads, weights)| AttentionMap {
            name,
            weights,
            heads: *heads,
        })
        .collect();
    let labels: Vec<String> = prompt
        .iter()
        .map(|&id| {
            tokenizer
                .token_text(id)
                .replace(' ', "␣")
                .replace('\n', "⏎")
        })
        .collect();
    plot_attention(path, &labels, &maps)
}
