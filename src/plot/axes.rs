//! What every plot's axes share: linear or log scale (log when the values span decades), the data range, tick
//! labels, grid lines, axis labels, and the series colours.
use super::font;
use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Distinct series colours (tab10), cycled.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
/// Values whose max / min exceeds this (all positive) are shown on a log axis.
pub const LOG_SPAN: f64 = 30.0;
/// Grid lines at the labelled ticks, and lighter ones between.
const GRID: RGBColor = RGBColor(215, 215, 215);
const FINE_GRID: RGBColor = RGBColor(240, 240, 240);

/// The colour of series k.
pub fn colour(k: usize) -> RGBColor {
    PALETTE[k % PALETTE.len()]
}

/// How values map onto an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

impl Scale {
    /// Position of `v` along the axis before normalising: `v`, or ln v on a log axis.
    pub fn apply(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log => v.ln(),
        }
    }
}

/// Log when every finite value is positive and they span more than [`LOG_SPAN`] (about one and a half decades),
/// else linear.
pub fn choose_scale(values: impl IntoIterator<Item = f64>) -> Scale {
    let (lo, hi) = finite_extent(values);
    if lo > 0.0 && lo <= hi && hi / lo > LOG_SPAN {
        Scale::Log
    } else {
        Scale::Linear
    }
}

/// (min, max) of the finite values; (inf, -inf) when there are none.
fn finite_extent(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values.into_iter().filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)))
}

/// The axis range for `values` on `scale`, widened by `pad` (a fraction of the span, in the scale's units) on each
/// side; a single value gets a window around it, and no finite value gives \[0, 1] (\[1, 10] on a log axis).
pub fn range(values: impl IntoIterator<Item = f64>, scale: Scale, pad: f64) -> (f64, f64) {
    let (lo, hi) = finite_extent(values.into_iter().filter(|&v| scale == Scale::Linear || v > 0.0));
    match scale {
        _ if lo > hi => if scale == Scale::Log { (1.0, 10.0) } else { (0.0, 1.0) },
        Scale::Linear if lo == hi => {
            let d = (lo.abs() * 0.05).max(0.5);
            (lo - d, hi + d)
        }
        Scale::Linear => (lo - pad * (hi - lo), hi + pad * (hi - lo)),
        Scale::Log if lo == hi => (lo / 2.0, hi * 2.0),
        Scale::Log => {
            let f = (hi / lo).powf(pad);
            (lo / f, hi * f)
        }
    }
}

/// A tick label: fixed point with trailing zeros trimmed, or scientific (`2.5e-4`) when tiny or huge.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a < 1e-12 {
        return "0".into();
    }
    let trim = |s: String| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.2e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{exp}", trim(mantissa.to_string()));
    }
    trim(format!("{v:.4}"))
}

/// Error of a plotters call, as an anyhow error.
pub fn drawing<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

/// Axes with ticks, tick labels (`x_label` formats the x ticks), grid lines at the ticks and axis labels.
pub fn draw_mesh<DB, X>(chart: &mut ChartContext<'_, DB, Cartesian2d<X, RangedCoordf64>>, xlabel: &str, ylabel: &str, x_label: &dyn Fn(&f64) -> String) -> Result<()>
where
    DB: DrawingBackend,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(ylabel)
        .x_label_formatter(x_label)
        .y_label_formatter(&|v| fmt_num(*v))
        .x_labels(9)
        .y_labels(8)
        .label_style(font::style(13.0))
        .axis_desc_style(font::style(15.0))
        .bold_line_style(GRID)
        .light_line_style(FINE_GRID)
        .max_light_lines(1)
        .axis_style(BLACK)
        .draw()
        .map_err(drawing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_scale_when_values_span_decades() {
        assert_eq!(choose_scale([0.5, 3.0, 40.0, 200.0]), Scale::Log);
        assert_eq!(choose_scale([1.0, 20.0]), Scale::Linear);
        assert_eq!(choose_scale([-1.0, 1000.0]), Scale::Linear, "non-positive values stay linear");
        assert_eq!(choose_scale([0.0, 1000.0]), Scale::Linear);
        assert_eq!(choose_scale([f64::NAN, 1.0, 100.0, f64::INFINITY]), Scale::Log);
        assert_eq!(choose_scale([]), Scale::Linear);
    }

    #[test]
    fn ranges_pad_and_survive_degenerate_input() {
        assert_eq!(range([1.0, 3.0], Scale::Linear, 0.0), (1.0, 3.0));
        assert_eq!(range([1.0, 3.0], Scale::Linear, 0.5), (0.0, 4.0));
        assert_eq!(range([f64::NAN], Scale::Linear, 0.1), (0.0, 1.0));
        assert_eq!(range([2.0, 2.0], Scale::Linear, 0.1), (1.5, 2.5));
        let (lo, hi) = range([1.0, 100.0, -5.0], Scale::Log, 0.5);
        assert!((lo - 0.1).abs() < 1e-9 && (hi - 1000.0).abs() < 1e-6, "{lo} {hi}");
        assert_eq!(range([], Scale::Log, 0.1), (1.0, 10.0));
    }

    #[test]
    fn tick_labels() {
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(100.0), "100");
        assert_eq!(fmt_num(0.30000000000000004), "0.3");
        assert_eq!(fmt_num(-2.25), "-2.25");
        assert_eq!(fmt_num(1e-4), "1e-4");
        assert_eq!(fmt_num(2.5e6), "2.5e6");
        assert_eq!(fmt_num(1e-15), "0");
    }
}
