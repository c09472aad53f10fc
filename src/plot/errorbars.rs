//! Means with ± error bars over categories (e.g. noise levels), one colour per series, in panels side by side; a
//! series with a single value is a dashed reference line across all categories (a baseline) with its ± band.
use super::axes::{self, drawing, Scale};
use super::figure::Figure;
use super::font;
use super::legend::{self, Entry, Place};
use anyhow::Result;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One series of an [`ErrorPanel`]: a name, and per category a mean and a half-width (NaN: no point or no bar).
#[derive(Clone, Debug)]
pub struct ErrorSeries {
    pub name: String,
    pub means: Vec<f64>,
    pub errs: Vec<f64>,
}

impl ErrorSeries {
    /// A baseline: one value drawn across every category.
    fn is_baseline(&self, categories: usize) -> bool {
        self.means.len() == 1 && categories > 1
    }
}

/// One panel: a title, the categories along x, the y label (with its unit) and the series.
#[derive(Clone, Debug)]
pub struct ErrorPanel {
    pub title: String,
    pub xlabel: String,
    pub ylabel: String,
    pub categories: Vec<String>,
    pub series: Vec<ErrorSeries>,
}

/// Panels side by side, each `panel_size` pixels; saved as PNG + SVG through [`Figure`].
#[derive(Clone, Debug)]
pub struct ErrorPlot {
    pub panels: Vec<ErrorPanel>,
    pub panel_size: (u32, u32),
}

/// Horizontal shift between series within a category, so their bars do not hide each other.
const OFFSET: f64 = 0.08;
const CAPTION: f64 = 17.0;

/// The x axis of n categories: category i at x = i, the axis from -0.5 to n - 0.5, ticks at the categories only.
struct CategoryAxis {
    n: usize,
    inner: RangedCoordf64,
}

impl CategoryAxis {
    fn new(n: usize) -> Self {
        CategoryAxis { n, inner: (-0.5..n.max(1) as f64 - 0.5).into() }
    }
}

impl Ranged for CategoryAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    /// Every category when there is room for it, else every k-th; no lighter lines between them.
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        let step = self.n.div_ceil(hint.max_num_points().max(1)).max(1);
        (0..self.n).step_by(step).map(|i| i as f64).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

impl ErrorPanel {
    /// The y range: every mean ± error, padded.
    fn y_range(&self) -> (f64, f64) {
        let ends = self.series.iter().flat_map(|s| {
            s.means.iter().zip(&s.errs).flat_map(|(m, e)| {
                let e = if e.is_finite() { *e } else { 0.0 };
                [m - e, m + e]
            })
        });
        axes::range(ends.collect::<Vec<_>>(), Scale::Linear, 0.08)
    }

    /// x position of series k's point in category i.
    fn x_of(&self, k: usize, i: usize) -> f64 {
        let slots = self.series.iter().filter(|s| !s.is_baseline(self.categories.len())).count().max(1) as f64;
        i as f64 + (k as f64 - (slots - 1.0) / 2.0) * OFFSET
    }

    /// Legend entries of the named series (baselines dashed).
    fn entries(&self) -> Vec<Entry> {
        let n = self.categories.len();
        let named = self.series.iter().enumerate().filter(|(_, s)| !s.name.is_empty());
        named.map(|(k, s)| Entry { name: s.name.clone(), colour: axes::colour(k), dashed: s.is_baseline(n) }).collect()
    }

    /// Every drawn point, bar end and baseline in unit coordinates, for placing the legend.
    fn unit_points(&self) -> Vec<(f64, f64)> {
        let n = self.categories.len().max(1) as f64;
        let (y0, y1) = self.y_range();
        let unit = |x: f64, y: f64| ((x + 0.5) / n, (y - y0) / (y1 - y0));
        let mut points = Vec::new();
        for (k, s) in self.series.iter().enumerate() {
            if s.is_baseline(self.categories.len()) {
                let line = [unit(-0.5, s.means[0]), unit(n - 0.5, s.means[0])];
                points.extend(legend::densify(&line, 40));
                continue;
            }
            let finite: Vec<(f64, f64)> = s.means.iter().enumerate().filter(|(_, m)| m.is_finite()).map(|(i, &m)| unit(self.x_of(k, i), m)).collect();
            points.extend(legend::densify(&finite, 12));
            for (i, (&m, &e)) in s.means.iter().zip(&s.errs).enumerate().filter(|(_, (m, e))| m.is_finite() && e.is_finite()) {
                points.extend([unit(self.x_of(k, i), m - e), unit(self.x_of(k, i), m + e)]);
            }
        }
        points
    }

    /// Draws the panel onto `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let entries = self.entries();
        let (w, h) = root.dim_in_pixel();
        let place = legend::place_for(&self.unit_points(), &entries, (w.saturating_sub(90), h.saturating_sub(100)));
        let area = legend::make_room(root, place, &entries)?;
        let (y0, y1) = self.y_range();
        let mut chart = ChartBuilder::on(&area)
            .caption(&self.title, font::bold(font::fitting(&self.title, CAPTION, true, w.saturating_sub(16))))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(CategoryAxis::new(self.categories.len()), y0..y1)
            .map_err(drawing)?;
        let category = |v: &f64| {
            let i = v.round();
            let near = (v - i).abs() < 1e-6 && i >= 0.0;
            near.then(|| self.categories.get(i as usize).cloned()).flatten().unwrap_or_default()
        };
        axes::draw_mesh(&mut chart, &self.xlabel, &self.ylabel, &category)?;
        for (k, s) in self.series.iter().enumerate() {
            if s.is_baseline(self.categories.len()) {
                self.draw_baseline(&mut chart, s, axes::colour(k))?;
            } else {
                self.draw_series(&mut chart, k, s)?;
            }
        }
        if let Place::Inside(corner) = place {
            legend::draw_inside(&chart.plotting_area().strip_coord_spec(), &entries, corner)?;
        }
        Ok(())
    }

    /// Points joined by lines (a NaN mean breaks the line), with ± error bars and caps.
    fn draw_series<DB: DrawingBackend, C: CoordTranslate<From = (f64, f64)>>(&self, chart: &mut ChartContext<'_, DB, C>, k: usize, s: &ErrorSeries) -> Result<()> {
        let colour = axes::colour(k);
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (i, &m) in s.means.iter().enumerate() {
            match (m.is_finite(), runs.last_mut()) {
                (true, Some(run)) => run.push((self.x_of(k, i), m)),
                (false, Some(run)) if !run.is_empty() => runs.push(Vec::new()),
                _ => {}
            }
        }
        for run in runs.into_iter().filter(|r| r.len() > 1) {
            chart.draw_series(LineSeries::new(run, colour.stroke_width(2))).map_err(drawing)?;
        }
        let bars = s.means.iter().zip(&s.errs).enumerate().filter(|(_, (m, e))| m.is_finite() && e.is_finite() && **e > 0.0);
        chart
            .draw_series(bars.map(|(i, (&m, &e))| ErrorBar::new_vertical(self.x_of(k, i), m - e, m, m + e, colour.stroke_width(2), 10)))
            .map_err(drawing)?;
        let points = s.means.iter().enumerate().filter(|(_, m)| m.is_finite());
        chart.draw_series(points.map(|(i, &m)| Circle::new((self.x_of(k, i), m), 4, colour.filled()))).map_err(drawing)?;
        Ok(())
    }

    /// A dashed line at the single mean across the panel, over a light band of ± its error.
    fn draw_baseline<DB: DrawingBackend, C: CoordTranslate<From = (f64, f64)>>(&self, chart: &mut ChartContext<'_, DB, C>, s: &ErrorSeries, colour: RGBColor) -> Result<()> {
        let (m, e) = (s.means[0], s.errs.first().copied().unwrap_or(f64::NAN));
        let (x0, x1) = (-0.5, self.categories.len() as f64 - 0.5);
        if !m.is_finite() {
            return Ok(());
        }
        if e.is_finite() && e > 0.0 {
            chart.draw_series([Rectangle::new([(x0, m - e), (x1, m + e)], colour.mix(0.15).filled())]).map_err(drawing)?;
        }
        chart.draw_series(DashedLineSeries::new([(x0, m), (x1, m)], 8, 5, colour.stroke_width(2))).map_err(drawing)?;
        Ok(())
    }
}

impl Figure for ErrorPlot {
    fn size(&self) -> (u32, u32) {
        (self.panel_size.0 * self.panels.len().max(1) as u32, self.panel_size.1)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(drawing)?;
        for (panel, area) in self.panels.iter().zip(root.split_evenly((1, self.panels.len().max(1)))) {
            panel.draw(&area)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::canvas::Canvas;

    fn count(c: &Canvas, col: RGBColor) -> usize {
        c.pixels().filter(|p| p.0 == [col.0, col.1, col.2]).count()
    }

    fn panel(series: Vec<ErrorSeries>) -> ErrorPanel {
        let categories = ["0.001", "0.2", "1"].map(String::from).to_vec();
        ErrorPanel { title: "gap".into(), xlabel: "noise g".into(), ylabel: "NLL gap (nats)".into(), categories, series }
    }

    fn swept(name: &str) -> ErrorSeries {
        ErrorSeries { name: name.into(), means: vec![0.5, 0.3, f64::NAN], errs: vec![0.05, f64::NAN, 0.1] }
    }

    #[test]
    fn bars_points_and_a_dashed_baseline() {
        let plot = ErrorPlot { panels: vec![panel(vec![swept("")])], panel_size: (420, 300) };
        let c = plot.png().unwrap();
        assert_eq!(c.dimensions(), (420, 300));
        // Two finite points (discs of radius 4), the line between them, one error bar with caps.
        let alone = count(&c, axes::colour(0));
        assert!(alone > 2 * 40 + 100, "{alone}");
        let base = ErrorSeries { name: "baseline".into(), means: vec![0.4], errs: vec![0.02] };
        let with_base = ErrorPlot { panels: vec![panel(vec![swept("swept"), base])], panel_size: (420, 300) }.png().unwrap();
        // Dashed: well under the whole width of the plot area is drawn in the baseline's colour.
        let dashes = count(&with_base, axes::colour(1));
        assert!(dashes > 150 && dashes < 2 * 2 * 340, "{dashes}");
    }

    #[test]
    fn category_labels_and_panels_side_by_side() {
        let other = ErrorPanel { title: "mass outside".into(), ylabel: "fraction".into(), ..panel(vec![swept("swept")]) };
        let plot = ErrorPlot { panels: vec![panel(vec![swept("swept")]), other], panel_size: (420, 300) };
        assert_eq!(plot.png().unwrap().dimensions(), (840, 300));
        let svg = plot.svg().unwrap();
        let texts = crate::plot::figure::svg_texts(&svg);
        for text in ["gap", "mass outside", "noise g", "NLL gap (nats)", "0.001", "0.2", "1", "swept"] {
            assert!(texts.contains(&text.to_string()), "{text} missing from {texts:?}");
        }
        // Each category labelled once per panel.
        assert_eq!(texts.iter().filter(|t| *t == "0.001").count(), 2, "{texts:?}");
    }

    #[test]
    fn empty_panels_still_draw() {
        let empty = ErrorPanel { title: "empty".into(), xlabel: String::new(), ylabel: String::new(), categories: vec![], series: vec![] };
        assert_eq!(ErrorPlot { panels: vec![empty], panel_size: (60, 50) }.png().unwrap().dimensions(), (60, 50));
    }
}
