//! 2D densities as heat maps: a histogram of points ([`scatter_density`]) or values on a grid ([`heatmap`]), one
//! pixel per cell, coloured with [`colormap`], y increasing upward.
use super::canvas::Canvas;
use super::colormap::colormap;
use image::Rgb;

/// Plot window of a 2D picture.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub xmin: f64,
    pub xmax: f64,
    pub ymin: f64,
    pub ymax: f64,
}

impl Bounds {
    /// The square window [-half, half]².
    pub fn square(half: f64) -> Self {
        Bounds { xmin: -half, xmax: half, ymin: -half, ymax: half }
    }
}

/// Grid cell (column, row from the top) of point (x, y) on a size x size grid over `b`, if inside.
fn cell_of(x: f64, y: f64, b: Bounds, size: usize) -> Option<(usize, usize)> {
    let fx = (x - b.xmin) / (b.xmax - b.xmin);
    let fy = (y - b.ymin) / (b.ymax - b.ymin);
    if !(0.0..=1.0).contains(&fx) || !(0.0..=1.0).contains(&fy) {
        return None; // also rejects NaN and degenerate bounds
    }
    let col = ((fx * size as f64) as usize).min(size - 1);
    let row_up = ((fy * size as f64) as usize).min(size - 1);
    Some((col, size - 1 - row_up))
}

/// A size x size image of per-cell values in \[0,1] (row-major, top row first) through the colormap.
fn coloured(values: &[f64], size: usize) -> Canvas {
    let side = size as u32;
    Canvas::from_fn(side, side, |x, y| Rgb(colormap(values[y as usize * size + x as usize])))
}

/// 2D histogram of points (xs, ys of one length) on a size x size grid over `bounds`, coloured by
/// log1p(count) / log1p(max count), so sparse regions stay visible. Points outside the window or non-finite are
/// dropped.
pub fn scatter_density(xs: &[f32], ys: &[f32], bounds: Bounds, size: usize) -> Canvas {
    debug_assert_eq!(xs.len(), ys.len(), "scatter_density: xs and ys differ in length");
    let mut counts = vec![0u32; size * size];
    if size > 0 {
        for (&x, &y) in xs.iter().zip(ys) {
            if let Some((c, r)) = cell_of(x as f64, y as f64, bounds, size) {
                counts[r * size + c] += 1;
            }
        }
    }
    let denom = (counts.iter().copied().max().unwrap_or(0) as f64).ln_1p().max(f64::MIN_POSITIVE);
    let values: Vec<f64> = counts.iter().map(|&n| (n as f64).ln_1p() / denom).collect();
    coloured(&values, size)
}

/// Heat map of a size x size grid of values given row-major with row 0 the top row (largest y); values are
/// densities (>= 0) coloured by value / max (negative clamps to 0, NaN is black). Panics if
/// `values.len() != size * size`.
pub fn heatmap(values: &[f32], size: usize) -> Canvas {
    assert_eq!(values.len(), size * size, "heatmap: expected {size}x{size} values");
    let max = values.iter().filter(|v| v.is_finite()).fold(0.0f64, |m, &v| m.max(v as f64));
    let denom = if max > 0.0 { max } else { 1.0 };
    let scaled: Vec<f64> = values.iter().map(|&v| v as f64 / denom).collect();
    coloured(&scaled, size)
}

/// The points (cell centres) at which [`heatmap`] expects values, in its order (top row first), as (xs, ys) of
/// length size², and the area of one cell.
pub fn grid_points(bounds: Bounds, size: usize) -> (Vec<f32>, Vec<f32>, f64) {
    let dx = (bounds.xmax - bounds.xmin) / size as f64;
    let dy = (bounds.ymax - bounds.ymin) / size as f64;
    let (mut xs, mut ys) = (Vec::with_capacity(size * size), Vec::with_capacity(size * size));
    for r in 0..size {
        let y = bounds.ymax - (r as f64 + 0.5) * dy;
        for c in 0..size {
            xs.push((bounds.xmin + (c as f64 + 0.5) * dx) as f32);
            ys.push(y as f32);
        }
    }
    (xs, ys, dx * dy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::colormap::NAN_COLOUR;

    const B: Bounds = Bounds { xmin: -2.0, xmax: 2.0, ymin: -1.0, ymax: 3.0 };

    fn at(c: &Canvas, x: u32, y: u32) -> [u8; 3] {
        c.get_pixel(x, y).0
    }

    #[test]
    fn grid_points_order_and_area() {
        let (xs, ys, area) = grid_points(B, 4);
        assert_eq!((xs.len(), ys.len()), (16, 16));
        assert!((area - 1.0).abs() < 1e-12);
        // First point: top-left cell centre; second: one step right; fifth: one row down.
        assert_eq!((xs[0], ys[0]), (-1.5, 2.5));
        assert_eq!((xs[1], ys[1]), (-0.5, 2.5));
        assert_eq!((xs[4], ys[4]), (-1.5, 1.5));
        assert_eq!((xs[15], ys[15]), (1.5, -0.5));
        let (_, _, a2) = grid_points(Bounds::square(1.0), 10);
        assert!((a2 - 0.04).abs() < 1e-12);
    }

    #[test]
    fn heatmap_max_cell_has_the_top_colour() {
        let mut v = vec![0.1f32; 9];
        v[0] = 5.0;
        let c = heatmap(&v, 3);
        assert_eq!(c.dimensions(), (3, 3));
        assert_eq!(at(&c, 0, 0), colormap(1.0));
        assert_eq!(at(&c, 2, 2), colormap(0.02));
        assert_ne!(at(&c, 0, 0), at(&c, 1, 0));
        assert_eq!(at(&heatmap(&[f32::NAN], 1), 0, 0), NAN_COLOUR);
    }

    #[test]
    fn heatmap_of_grid_points_is_oriented() {
        // A density that grows with y and with x must be hottest at the top-right.
        let (xs, ys, _) = grid_points(B, 8);
        let v: Vec<f32> = xs.iter().zip(&ys).map(|(x, y)| (x + y).exp()).collect();
        assert_eq!(at(&heatmap(&v, 8), 7, 0), colormap(1.0));
    }

    #[test]
    fn scatter_point_top_right() {
        let eps = 1e-3;
        let c = scatter_density(&[(B.xmax - eps) as f32], &[(B.ymax - eps) as f32], B, 5);
        assert_eq!(at(&c, 4, 0), colormap(1.0));
        let hot: Vec<(u32, u32)> = c.enumerate_pixels().filter(|(_, _, p)| p.0 != colormap(0.0)).map(|(x, y, _)| (x, y)).collect();
        assert_eq!(hot, vec![(4, 0)]);
        // Bottom-left point, NaN and out-of-window points.
        let c = scatter_density(&[-1.99, f32::NAN, 10.0], &[-0.99, 0.0, 0.0], B, 5);
        assert_eq!(at(&c, 0, 4), colormap(1.0));
        assert_eq!(c.pixels().filter(|p| p.0 != colormap(0.0)).count(), 1);
        // Counts are stretched relative to the max: 4 points -> top colour, 1 point -> in between.
        let c = scatter_density(&[0.1, 0.1, 0.1, 0.1, -1.9], &[0.1; 5], Bounds::square(2.0), 2);
        assert_eq!(at(&c, 1, 0), colormap(1.0));
        let mid = at(&c, 0, 0);
        assert!(mid != colormap(0.0) && mid != colormap(1.0), "{mid:?}");
    }
}
