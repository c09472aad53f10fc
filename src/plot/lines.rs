//! Line plots: one or more series against a shared x axis (linear, or log when asked and the x values span
//! decades), with ticks, grid lines, axis labels and a legend that does not hide the curves.
use super::axes::{self, drawing, fmt_num, Scale};
use super::figure::Figure;
use super::font;
use super::legend::{self, Entry, Place};
use anyhow::Result;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One named curve; non-finite points break the line. An empty name keeps it out of the legend.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
}

/// A line plot: build it with [`LinePlot::new`] and [`LinePlot::series`], then save it (PNG + SVG) through
/// [`Figure`].
#[derive(Clone, Debug)]
pub struct LinePlot {
    pub title: String,
    /// The x axis label, with its unit.
    pub xlabel: String,
    /// The y axis label, with its unit.
    pub ylabel: String,
    pub series: Vec<Series>,
    /// Whether x may go on a log axis: it does when its values span decades ([`axes::choose_scale`]).
    pub log_x_if_wide: bool,
    pub size: (u32, u32),
}

/// Space left of, under and around the plot area, in pixels.
const Y_LABEL_AREA: u32 = 64;
const X_LABEL_AREA: u32 = 44;
const MARGIN: u32 = 12;
const CAPTION: f64 = 18.0;

impl LinePlot {
    /// An empty plot with a title, axis labels (units included) and a size in pixels.
    pub fn new(title: &str, xlabel: &str, ylabel: &str, size: (u32, u32)) -> Self {
        LinePlot { title: title.into(), xlabel: xlabel.into(), ylabel: ylabel.into(), series: Vec::new(), log_x_if_wide: false, size }
    }

    /// Adds a series (x and y of one length; extra values of the longer are ignored).
    pub fn series(mut self, name: &str, xs: &[f64], ys: &[f64]) -> Self {
        self.series.push(Series { name: name.into(), xs: xs.to_vec(), ys: ys.to_vec() });
        self
    }

    /// Lets x go on a log axis when its values span decades (training time, evaluations, milliseconds).
    pub fn log_x_if_wide(mut self) -> Self {
        self.log_x_if_wide = true;
        self
    }

    /// The x axis' scale.
    pub fn x_scale(&self) -> Scale {
        if self.log_x_if_wide {
            axes::choose_scale(self.series.iter().flat_map(|s| s.xs.iter().copied()))
        } else {
            Scale::Linear
        }
    }

    /// The x and y ranges of the axes.
    fn ranges(&self, scale: Scale) -> ((f64, f64), (f64, f64)) {
        let x = axes::range(self.series.iter().flat_map(|s| s.xs.iter().copied()), scale, 0.0);
        let y = axes::range(self.series.iter().flat_map(|s| s.ys.iter().copied()), Scale::Linear, 0.05);
        (x, y)
    }

    /// Runs of consecutive finite points of series `s` (on a log axis, non-positive x breaks the line too).
    fn segments(s: &Series, scale: Scale) -> Vec<Vec<(f64, f64)>> {
        let mut out = vec![Vec::new()];
        for (&x, &y) in s.xs.iter().zip(&s.ys) {
            let ok = x.is_finite() && y.is_finite() && (scale == Scale::Linear || x > 0.0);
            match (ok, out.last_mut()) {
                (true, Some(run)) => run.push((x, y)),
                (false, Some(run)) if !run.is_empty() => out.push(Vec::new()),
                _ => {}
            }
        }
        out.retain(|r| !r.is_empty());
        out
    }

    /// The named series as legend entries.
    fn entries(&self) -> Vec<Entry> {
        self.series.iter().enumerate().filter(|(_, s)| !s.name.is_empty()).map(|(k, s)| Entry { name: s.name.clone(), colour: axes::colour(k), dashed: false }).collect()
    }

    /// Where the legend goes: the first empty corner of the plot area, else under it.
    fn legend_place(&self, entries: &[Entry]) -> Place {
        let scale = self.x_scale();
        let ((x0, x1), (y0, y1)) = self.ranges(scale);
        let unit = |(x, y): (f64, f64)| ((scale.apply(x) - scale.apply(x0)) / (scale.apply(x1) - scale.apply(x0)), (y - y0) / (y1 - y0));
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| Self::segments(s, scale))
            .flat_map(|run| legend::densify(&run.into_iter().map(unit).collect::<Vec<_>>(), 12))
            .collect();
        let plot_w = self.size.0.saturating_sub(Y_LABEL_AREA + 2 * MARGIN);
        let plot_h = self.size.1.saturating_sub(X_LABEL_AREA + 2 * MARGIN + CAPTION as u32 + 10);
        legend::place_for(&points, entries, (plot_w, plot_h))
    }

    /// Draws the axes, the curves and the legend on a chart with x coordinates `X`.
    fn draw_on<DB, X>(&self, mut chart: ChartContext<'_, DB, Cartesian2d<X, RangedCoordf64>>, place: Place, entries: &[Entry]) -> Result<()>
    where
        DB: DrawingBackend,
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        axes::draw_mesh(&mut chart, &self.xlabel, &self.ylabel, &|v| fmt_num(*v))?;
        let scale = self.x_scale();
        for (k, s) in self.series.iter().enumerate() {
            let colour = axes::colour(k);
            for run in Self::segments(s, scale) {
                if run.len() == 1 {
                    chart.draw_series(run.iter().map(|&p| Circle::new(p, 3, colour.filled()))).map_err(drawing)?;
                } else {
                    chart.draw_series(LineSeries::new(run, colour.stroke_width(2))).map_err(drawing)?;
                }
            }
        }
        if let Place::Inside(corner) = place {
            legend::draw_inside(&chart.plotting_area().strip_coord_spec(), entries, corner)?;
        }
        Ok(())
    }
}

impl Figure for LinePlot {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(drawing)?;
        let entries = self.entries();
        let place = if entries.is_empty() { Place::Inside(legend::Corner::UpperRight) } else { self.legend_place(&entries) };
        let area = legend::make_room(root, place, &entries)?;
        let scale = self.x_scale();
        let ((x0, x1), (y0, y1)) = self.ranges(scale);
        let mut builder = ChartBuilder::on(&area);
        let caption = font::fitting(&self.title, CAPTION, true, root.dim_in_pixel().0.saturating_sub(16));
        builder.caption(&self.title, font::bold(caption)).margin(MARGIN).x_label_area_size(X_LABEL_AREA).y_label_area_size(Y_LABEL_AREA);
        match scale {
            Scale::Linear => self.draw_on(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(drawing)?, place, &entries),
            Scale::Log => self.draw_on(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1).map_err(drawing)?, place, &entries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::canvas::Canvas;

    fn count(c: &Canvas, col: RGBColor) -> usize {
        c.pixels().filter(|p| p.0 == [col.0, col.1, col.2]).count()
    }

    /// Pixels of colour `col` in the rectangle [x0, x1) x [y0, y1).
    fn count_in(c: &Canvas, col: RGBColor, (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> usize {
        (x0..x1).flat_map(|x| (y0..y1).map(move |y| (x, y))).filter(|&(x, y)| c.get_pixel(x, y).0 == [col.0, col.1, col.2]).count()
    }

    #[test]
    fn a_known_series_is_drawn_where_expected() {
        // A rising line from bottom-left to top-right, unnamed: no legend, so its colour is only on the line.
        let p = LinePlot::new("rising", "step", "nats", (400, 300)).series("", &[0.0, 1.0], &[0.0, 1.0]);
        let c = p.png().unwrap();
        assert_eq!(c.dimensions(), (400, 300));
        let blue = axes::colour(0);
        assert!(count(&c, blue) > 200, "{}", count(&c, blue));
        // The line runs from the lower left to the upper right: it crosses the left third low and the right third
        // high, and never the upper left or the lower right.
        assert!(count_in(&c, blue, (0, 150), (180, 300)) > 50 && count_in(&c, blue, (300, 400), (0, 110)) > 50);
        assert_eq!(count_in(&c, blue, (0, 150), (0, 110)) + count_in(&c, blue, (300, 400), (180, 300)), 0);
        // Two series get two colours; a third colour is absent.
        let two = p.clone().series("", &[0.0, 1.0], &[1.0, 0.0]).png().unwrap();
        assert!(count(&two, axes::colour(1)) > 200 && count(&two, axes::colour(2)) == 0);
    }

    #[test]
    fn non_finite_points_break_the_line() {
        let s = Series { name: String::new(), xs: vec![0.0, 1.0, f64::NAN, 3.0, 4.0, 5.0], ys: vec![1.0, 2.0, 3.0, f64::INFINITY, 1.0, 0.0] };
        let runs = LinePlot::segments(&s, Scale::Linear);
        assert_eq!(runs, vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(4.0, 1.0), (5.0, 0.0)]]);
        let s = Series { name: String::new(), xs: vec![0.0, 1.0, 10.0], ys: vec![1.0, 1.0, 1.0] };
        assert_eq!(LinePlot::segments(&s, Scale::Log), vec![vec![(1.0, 1.0), (10.0, 1.0)]]);
    }

    #[test]
    fn degenerate_input_still_draws() {
        let nan = [f64::NAN, f64::INFINITY];
        for p in [
            LinePlot::new("t", "", "", (200, 120)),
            LinePlot::new("t", "", "", (200, 120)).series("empty", &[], &[]),
            LinePlot::new("t", "", "", (200, 120)).series("nan", &nan, &nan),
            LinePlot::new("t", "", "", (200, 120)).series("one", &[1.0], &[2.0]).log_x_if_wide(),
        ] {
            assert_eq!(p.png().unwrap().dimensions(), (200, 120));
        }
    }

    #[test]
    fn log_x_only_when_asked_and_the_data_spans_decades() {
        let t = [0.5, 2.0, 10.0, 80.0, 300.0];
        let y = [3.0, 2.0, 1.5, 1.2, 1.1];
        assert_eq!(LinePlot::new("", "", "", (300, 200)).series("a", &t, &y).x_scale(), Scale::Linear);
        assert_eq!(LinePlot::new("", "", "", (300, 200)).series("a", &t, &y).log_x_if_wide().x_scale(), Scale::Log);
        let narrow = [10.0, 20.0, 40.0];
        assert_eq!(LinePlot::new("", "", "", (300, 200)).series("a", &narrow, &y[..3]).log_x_if_wide().x_scale(), Scale::Linear);
        // On the log axis the tick labels are powers of ten.
        let svg = LinePlot::new("speed", "training time (s)", "test NLL (nats)", (500, 300)).series("a", &t, &y).log_x_if_wide().svg().unwrap();
        let texts = crate::plot::figure::svg_texts(&svg);
        assert!(["1", "10", "100"].iter().all(|t| texts.contains(&t.to_string())), "{texts:?}");
    }

    #[test]
    fn svg_carries_title_axis_labels_and_legend() {
        let p = LinePlot::new("training loss and test NLL", "training step", "loss (nats)", (640, 400))
            .series("train loss", &[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0])
            .series("test nll", &[1.0, 3.0], &[3.2, 1.4]);
        let svg = p.svg().unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let texts = crate::plot::figure::svg_texts(&svg);
        for text in ["training loss and test NLL", "training step", "loss (nats)", "train loss", "test nll"] {
            assert!(texts.contains(&text.to_string()), "{text} missing from {texts:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        p.save(&dir.path().join("loss.png")).unwrap();
        assert!(std::fs::read(dir.path().join("loss.png")).unwrap().starts_with(b"\x89PNG"));
        assert_eq!(std::fs::read_to_string(dir.path().join("loss.svg")).unwrap(), svg);
    }

    #[test]
    fn legend_box_sits_in_an_empty_corner() {
        // Falling curves leave the upper right free: the legend's dark text lands there, over a light box.
        let p = LinePlot::new("", "", "", (400, 300)).series("train loss", &[0.0, 1.0, 10.0], &[5.0, 1.0, 0.5]).series("test nll", &[0.0, 10.0], &[5.5, 0.7]);
        assert_eq!(p.legend_place(&p.entries()), Place::Inside(legend::Corner::UpperRight));
        // Data in every corner: the legend goes under the plot.
        let q = LinePlot::new("", "", "", (400, 300)).series("a", &[0.0, 1.0], &[0.0, 1.0]).series("b", &[0.0, 1.0], &[1.0, 0.0]);
        assert_eq!(q.legend_place(&q.entries()), Place::Below);
        let c = q.png().unwrap();
        // The swatches of both series appear in the strip under the x axis.
        let strip = (c.height() - legend::strip_height(&q.entries(), 400), c.height());
        assert!(count_in(&c, axes::colour(0), (0, 400), strip) > 10 && count_in(&c, axes::colour(1), (0, 400), strip) > 10);
    }
}
