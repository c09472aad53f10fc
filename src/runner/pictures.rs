//! Pictures of a model: for 2D data, training data | samples | density heat map side by side; image grids for
//! images; loss curves from metrics.jsonl.
use crate::plot::{self, canvas, Bounds, Canvas, Figure, LinePlot};
use crate::data::Dataset;
use crate::experiment::EvalConfig;
use crate::model::Model;
use anyhow::{Context, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The 2D plot window: `eval.bounds`, [-4, 4]² for toy sets, else the test data's range plus a margin.
pub fn bounds_for(data: &Dataset, eval: &EvalConfig) -> Bounds {
    if let Some([xmin, xmax, ymin, ymax]) = eval.bounds {
        return Bounds { xmin, xmax, ymin, ymax };
    }
    if data.is_synthetic() {
        return Bounds::square(4.0);
    }
    let range = |col: i64| {
        let c = data.test.select(1, col);
        let (lo, hi) = (c.min().double_value(&[]), c.max().double_value(&[]));
        let pad = 0.1 * (hi - lo).max(1e-3);
        (lo - pad, hi + pad)
    };
    let (xmin, xmax) = range(0);
    let (ymin, ymax) = if data.dim() >= 2 { range(1) } else { (-1.0, 1.0) };
    Bounds { xmin, xmax, ymin, ymax }
}

/// p(x) at the centres of a size x size grid over `bounds` (top row first, as `plot::heatmap` expects) and the
/// cell area, so Σ p · area approximates the mass inside the window.
pub fn density_grid(model: &dyn Model, bounds: Bounds, size: usize, device: Device) -> (Vec<f32>, f64, crate::model::Kind) {
    let (xs, ys, area) = plot::grid_points(bounds, size);
    let pts = Tensor::stack(&[Tensor::from_slice(&xs), Tensor::from_slice(&ys)], 1);
    let (lp, kind) = super::evaluate::log_prob_batched(model, &pts, 20_000, device);
    let p: Vec<f32> = Vec::try_from(lp.exp().to_kind(Kind::Float)).unwrap_or_default();
    (p, area, kind)
}

/// The first two coordinates of each row (1-D data: the coordinate and 0, points along a line).
fn columns(x: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let x = x.to_device(Device::Cpu).to_kind(Kind::Float);
    let col = |i| Vec::<f32>::try_from(x.select(1, i).contiguous()).unwrap_or_default();
    let ys = if x.size()[1] >= 2 { col(1) } else { vec![0.0; x.size()[0] as usize] };
    (col(0), ys)
}

fn scatter(x: &Tensor, bounds: Bounds, size: usize) -> Canvas {
    let (xs, ys) = columns(x);
    plot::scatter_density(&xs, &ys, bounds, size)
}

/// A posterior estimate beside its reference: θ1 against θ2 of reference samples | q(θ | x_o) samples, on the
/// window holding the central 99.8% of the reference (padded by a tenth), written to `path`.
pub fn posterior_panels(reference: &Tensor, q: &Tensor, path: &Path) -> Result<()> {
    let r = reference.narrow(1, 0, 2).to_kind(Kind::Double);
    let lo = r.quantile_scalar(0.001, 0, false, "linear");
    let hi = r.quantile_scalar(0.999, 0, false, "linear");
    let pad = (&hi - &lo) * 0.1;
    let (lo, hi) = (Vec::<f64>::try_from(&lo - &pad)?, Vec::<f64>::try_from(&hi + &pad)?);
    let bounds = Bounds { xmin: lo[0], xmax: hi[0], ymin: lo[1], ymax: hi[1] };
    let size = 256;
    let panels = [("reference posterior", scatter(&r, bounds, size)), ("q(θ | x_o)", scatter(&q.narrow(1, 0, 2).to_kind(Kind::Double), bounds, size))];
    let framed = panels.iter().map(|(t, c)| Ok((*t, plot::panels::framed(c, bounds)?))).collect::<Result<Vec<_>>>()?;
    plot::save_png(&plot::titled_row(&framed)?, path)
}

/// The picture for a model at one moment of training, written to `path`.
pub fn draw(model: &dyn Model, data: &Dataset, eval: &EvalConfig, device: Device, path: &Path) -> Result<()> {
    let n = eval.n_samples.min(20_000).max(1);
    draw_with(model, data, eval, device, path, &model.sample(n))
}

/// The picture for given model samples (the density panel still evaluates the model on a grid).
pub fn draw_with(model: &dyn Model, data: &Dataset, eval: &EvalConfig, device: Device, path: &Path, samples: &Tensor) -> Result<()> {
    let samples = samples.to_device(Device::Cpu);
    let n = samples.size()[0];
    let picture = if data.is_image() {
        image_panels(model, &samples, data)?
    } else {
        let size = 256;
        let bounds = bounds_for(data, eval);
        let shown = data.test.narrow(0, 0, n.min(data.test.size()[0]));
        let mut panels = vec![("data", scatter(&shown, bounds, size)), ("samples", scatter(&samples, bounds, size))];
        // A conditional model has a density per context, not one map: its picture is data | samples.
        if data.dim() == 2 && model.context_spec().is_none() {
            let grid = eval.grid.max(8) as usize;
            let (p, _, kind) = density_grid(model, bounds, grid, device);
            let (title, map) = match kind {
                crate::model::Kind::Exact => ("density", plot::heatmap(&p, grid)),
                // A one-sample bound is noisy: its exponential is dominated by a few points, so show it in log scale.
                crate::model::Kind::LowerBound => ("log bound", plot::heatmap(&log_scale(&p), grid)),
                crate::model::Kind::Estimate => ("log density (est.)", plot::heatmap(&log_scale(&p), grid)),
            };
            panels.push((title, canvas::upscaled(&map, (size / grid) as u32)));
        }
        let framed = panels.iter().map(|(t, c)| Ok((*t, plot::panels::framed(c, bounds)?))).collect::<Result<Vec<_>>>()?;
        plot::titled_row(&framed)?
    };
    plot::save_png(&picture, path)
}

/// log p shifted to [0, 1] over the 12 nats below its maximum, for heat maps of noisy bounds.
fn log_scale(p: &[f32]) -> Vec<f32> {
    let logs: Vec<f32> = p.iter().map(|&v| v.max(1e-30).ln()).collect();
    let max = logs.iter().cloned().filter(|v| v.is_finite()).fold(f32::MIN, f32::max);
    logs.iter().map(|&l| ((l - max + 12.0) / 12.0).clamp(0.0, 1.0)).collect()
}

/// 8x8 sample grids: at temperature 1 and, for models that define one, at temperature 0.7 beside it.
fn image_panels(model: &dyn Model, samples: &Tensor, data: &Dataset) -> Result<Canvas> {
    let grid = image_grid(samples, data);
    match model.sample_tempered(64, 0.7) {
        Some(cool) => {
            let cool = canvas::upscaled(&image_grid(&cool.to_device(Device::Cpu), data), 2);
            plot::titled_row(&[("T = 1.0", canvas::upscaled(&grid, 2)), ("T = 0.7", cool)])
        }
        None => Ok(grid),
    }
}

/// Up to 64 image samples in an 8-wide grid.
pub fn image_grid(samples: &Tensor, data: &Dataset) -> Canvas {
    let n = samples.size()[0].min(64);
    image_rows(&samples.narrow(0, 0, n), data, 8)
}

/// (C, H, W) of a dataset's images; flattened images are square, grey or colour (784 = 28², 3072 = 3 x 32²).
fn image_layout(data: &Dataset) -> (i64, i64, i64) {
    if let [c, h, w] = data.shape[..] {
        return (c, h, w);
    }
    let d = data.dim();
    let square = |d: i64| {
        let s = (d as f64).sqrt().round() as i64;
        (s * s == d).then_some(s)
    };
    match (square(d), (d % 3 == 0).then(|| square(d / 3)).flatten()) {
        (Some(s), _) => (1, s, s),
        (None, Some(s)) => (3, s, s),
        _ => (1, 1, d),
    }
}

/// All of `samples` as a grid of `per_row` images a row (a conditional sample: one row per context).
pub fn image_rows(samples: &Tensor, data: &Dataset, per_row: i64) -> Canvas {
    let n = samples.size()[0];
    let (c, h, w) = image_layout(data);
    let imgs = samples.reshape([n, c, h, w]).clamp(0.0, 1.0).to_kind(Kind::Float).contiguous();
    let flat: Vec<f32> = Vec::try_from(imgs.flatten(0, -1)).unwrap_or_default();
    plot::image_grid_channels(&flat, n as usize, c as usize, h as usize, w as usize, per_row as usize)
}

/// Training loss and test NLL against steps, from a run's metrics: `loss.png` and `loss.svg` in the run folder.
pub fn loss_curve(run_dir: &Path) -> Result<()> {
    loss_plot(run_dir)?.save(&run_dir.join("loss.png")).with_context(|| format!("drawing the loss curves of {}", run_dir.display()))
}

/// The loss-curve plot of a run folder's metrics.jsonl (also drawn afresh by the report, whatever drew the run's own).
pub fn loss_plot(run_dir: &Path) -> Result<LinePlot> {
    let lines = super::metrics::read(&run_dir.join("metrics.jsonl"))?;
    let (s1, loss) = super::metrics::series(&lines, "loss");
    let (s2, nll) = super::metrics::series(&lines, "test_nll");
    Ok(LinePlot::new("Training loss and test NLL", "training step", "training loss, test NLL (nats)", (640, 400))
        .series("training loss", &s1, &loss)
        .series("test NLL", &s2, &nll))
}
