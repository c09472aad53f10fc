//! Legends that do not hide data: in the corner of the plot whose box holds no data, on a semi-transparent white
//! box, or in a strip under the plot when every corner holds data.
use super::axes::drawing;
use super::font;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Height of one legend row, in pixels.
pub const ROW_H: u32 = 20;
/// Length of the line sample before each name.
const SAMPLE_W: u32 = 24;
/// Space inside the legend box and between entries.
const PAD: u32 = 6;

/// One legend line: a name, its colour, and whether its line is dashed.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub colour: RGBColor,
    pub dashed: bool,
}

/// A corner of the plot area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corner {
    UpperRight,
    UpperLeft,
    LowerRight,
    LowerLeft,
}

/// Where the legend goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Inside(Corner),
    Below,
}

/// The first corner (upper right, upper left, lower right, lower left) whose box of `box_w` x `box_h` (fractions of
/// the plot area) holds none of `points` (unit coordinates, (0, 0) bottom-left, (1, 1) top-right); else below.
pub fn place(points: &[(f64, f64)], box_w: f64, box_h: f64) -> Place {
    if box_w > 0.6 || box_h > 0.6 {
        return Place::Below;
    }
    let inside = |c: Corner, (x, y): (f64, f64)| {
        let in_x = match c {
            Corner::UpperLeft | Corner::LowerLeft => x <= box_w,
            _ => x >= 1.0 - box_w,
        };
        let in_y = match c {
            Corner::LowerLeft | Corner::LowerRight => y <= box_h,
            _ => y >= 1.0 - box_h,
        };
        in_x && in_y
    };
    [Corner::UpperRight, Corner::UpperLeft, Corner::LowerRight, Corner::LowerLeft]
        .into_iter()
        .find(|&c| !points.iter().any(|&p| inside(c, p)))
        .map_or(Place::Below, Place::Inside)
}

/// Points along a polyline (unit coordinates), `per_segment` per segment, so a line crossing a corner counts there
/// even when none of its vertices does.
pub fn densify(line: &[(f64, f64)], per_segment: usize) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = line.first().copied().into_iter().collect();
    for w in line.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        out.extend((1..=per_segment).map(|i| {
            let t = i as f64 / per_segment as f64;
            (x0 + t * (x1 - x0), y0 + t * (y1 - y0))
        }));
    }
    out
}

/// Width and height in pixels of a boxed legend of `entries` in one column.
pub fn box_size(entries: &[Entry]) -> (u32, u32) {
    let style = font::style(13.0);
    let text_w = entries.iter().map(|e| font::text_size(&e.name, &style).0).max().unwrap_or(0);
    (SAMPLE_W + text_w + 3 * PAD, entries.len() as u32 * ROW_H + PAD)
}

/// Columns and rows of the strip legend under a plot `width` pixels wide.
pub fn strip_layout(entries: &[Entry], width: u32) -> (u32, u32) {
    let (entry_w, _) = box_size(entries);
    let cols = (width / entry_w.max(1)).clamp(1, entries.len().max(1) as u32);
    (cols, (entries.len() as u32).div_ceil(cols))
}

/// Height of the strip legend under a plot `width` pixels wide.
pub fn strip_height(entries: &[Entry], width: u32) -> u32 {
    strip_layout(entries, width).1 * ROW_H + 2 * PAD
}

/// Draws one entry with its top-left corner at (x, y).
fn draw_entry<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, e: &Entry, x: i32, y: i32) -> Result<()> {
    let mid = y + ROW_H as i32 / 2;
    let style = e.colour.stroke_width(2);
    let sample = (x..x + SAMPLE_W as i32).step_by(if e.dashed { 8 } else { SAMPLE_W as usize });
    for x0 in sample {
        let x1 = if e.dashed { x0 + 5 } else { x + SAMPLE_W as i32 };
        area.draw(&PathElement::new(vec![(x0, mid), (x1, mid)], style)).map_err(drawing)?;
    }
    let text = font::style(13.0).pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Left,
        plotters::style::text_anchor::VPos::Center,
    ));
    area.draw(&Text::new(e.name.clone(), (x + SAMPLE_W as i32 + PAD as i32, mid), text)).map_err(drawing)
}

/// A boxed legend (white at 85 % opacity, grey border) in `corner` of `plot`, the plot area (its own pixel
/// coordinates: a chart's `plotting_area().strip_coord_spec()`).
pub fn draw_inside<DB: DrawingBackend>(plot: &DrawingArea<DB, Shift>, entries: &[Entry], corner: Corner) -> Result<()> {
    let (pw, ph) = plot.dim_in_pixel();
    let (w, h) = box_size(entries);
    let (w, h, m) = (w as i32, h as i32, PAD as i32);
    let x = match corner {
        Corner::UpperLeft | Corner::LowerLeft => m,
        _ => pw as i32 - w - m,
    };
    let y = match corner {
        Corner::UpperLeft | Corner::UpperRight => m,
        _ => ph as i32 - h - m,
    };
    plot.draw(&Rectangle::new([(x, y), (x + w, y + h)], WHITE.mix(0.85).filled())).map_err(drawing)?;
    plot.draw(&Rectangle::new([(x, y), (x + w, y + h)], RGBColor(160, 160, 160).stroke_width(1))).map_err(drawing)?;
    for (i, e) in entries.iter().enumerate() {
        draw_entry(plot, e, x + m, y + m / 2 + i as i32 * ROW_H as i32)?;
    }
    Ok(())
}

/// The area left for the plot: all of `root` when the legend goes inside, else `root` less a strip at the bottom,
/// where the legend is drawn here.
pub fn make_room<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, place: Place, entries: &[Entry]) -> Result<DrawingArea<DB, Shift>> {
    if place != Place::Below || entries.is_empty() {
        return Ok(root.clone());
    }
    let (w, h) = root.dim_in_pixel();
    let (area, strip) = root.split_vertically(h.saturating_sub(strip_height(entries, w)));
    draw_strip(&strip, entries)?;
    Ok(area)
}

/// Where the legend of a plot area of `plot_size` pixels goes, given the data's `points` in unit coordinates.
pub fn place_for(points: &[(f64, f64)], entries: &[Entry], plot_size: (u32, u32)) -> Place {
    let (w, h) = box_size(entries);
    place(points, (w + 12) as f64 / plot_size.0.max(1) as f64, (h + 12) as f64 / plot_size.1.max(1) as f64)
}

/// The legend in columns across `strip`, an area under the plot.
pub fn draw_strip<DB: DrawingBackend>(strip: &DrawingArea<DB, Shift>, entries: &[Entry]) -> Result<()> {
    let (width, _) = strip.dim_in_pixel();
    let (cols, _) = strip_layout(entries, width);
    let col_w = width / cols;
    for (i, e) in entries.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        draw_entry(strip, e, (c * col_w + PAD) as i32, (PAD + r * ROW_H) as i32)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legend_goes_to_an_empty_corner() {
        // A falling curve (upper left to lower right) leaves the upper right empty.
        let falling = densify(&[(0.0, 1.0), (0.3, 0.2), (1.0, 0.0)], 10);
        assert_eq!(place(&falling, 0.3, 0.2), Place::Inside(Corner::UpperRight));
        // A rising one leaves the upper left.
        let rising = densify(&[(0.0, 0.0), (1.0, 1.0)], 20);
        assert_eq!(place(&rising, 0.3, 0.2), Place::Inside(Corner::UpperLeft));
        // Data in all four corners: under the plot.
        let corners = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)];
        assert_eq!(place(&corners, 0.3, 0.2), Place::Below);
        // A legend as big as the plot never goes inside.
        assert_eq!(place(&[], 0.9, 0.2), Place::Below);
    }

    #[test]
    fn densify_samples_segments() {
        let d = densify(&[(0.0, 0.0), (1.0, 1.0)], 4);
        assert_eq!(d.len(), 5);
        assert_eq!(d[2], (0.5, 0.5));
        assert!(densify(&[], 4).is_empty());
    }

    #[test]
    fn strip_wraps_into_columns() {
        let e = |n: &str| Entry { name: n.into(), colour: BLACK, dashed: false };
        let entries: Vec<Entry> = (0..6).map(|i| e(&format!("run {i}"))).collect();
        let (cols, rows) = strip_layout(&entries, 400);
        assert!(cols >= 2 && cols * rows >= 6, "{cols}x{rows}");
        assert_eq!(strip_layout(&entries[..1], 400), (1, 1));
        assert!(strip_height(&entries, 100) > strip_height(&entries, 1000));
    }
}
