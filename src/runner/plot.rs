//! Dependency-light plotting: RGB canvases, a 5x7 bitmap font, density pictures, image grids and
//! line plots, written out as PNG. Everything here works on plain slices so it is pure and testable.

use anyhow::{Context, Result};
use std::path::Path;

/// White, the background of composite pictures.
const WHITE: [u8; 3] = [255, 255, 255];
/// Black, for axes and text.
const BLACK: [u8; 3] = [0, 0, 0];
/// Colour of the gaps between tiles in [`image_grid`].
const GAP: [u8; 3] = [128, 128, 128];
/// Glyph cell width in pixels at scale 1, including one column of spacing.
const CHAR_W: usize = 6;
/// Glyph height in pixels at scale 1.
const CHAR_H: usize = 7;
/// Distinct series colours (tab10-like), cycled.
const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

/// An RGB8 image, row-major, row 0 at the top.
#[derive(Clone, Debug)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<[u8; 3]>,
}

impl Canvas {
    /// Each pixel repeated k x k times (nearest neighbour), so a coarse heat map matches its neighbours' size.
    pub fn upscaled(&self, k: usize) -> Canvas {
        let k = k.max(1);
        let (w, h) = (self.width * k, self.height * k);
        let pixels = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| self.pixels[(y / k) * self.width + x / k]).collect();
        Canvas { width: w, height: h, pixels }
    }

    /// A `width` x `height` canvas filled with `bg`.
    pub fn new(width: usize, height: usize, bg: [u8; 3]) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![bg; width * height],
        }
    }

    /// The pixel at (x, y); panics when out of range.
    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside canvas"
        );
        self.pixels[y * self.width + x]
    }

    /// Set the pixel at (x, y); out-of-range coordinates are ignored.
    pub fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            self.pixels[y * self.width + x] = c;
        }
    }

    /// Like [`Canvas::set`] but for signed coordinates (negative ones are ignored).
    fn set_i(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 {
            self.set(x as usize, y as usize, c);
        }
    }

    /// Fill the rectangle with top-left (x, y) and size w x h, clipped to the canvas.
    pub fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.pixels[yy * self.width + xx] = c;
            }
        }
    }

    /// Copy `other` onto this canvas with its top-left at (x0, y0), clipped to this canvas.
    pub fn blit(&mut self, other: &Canvas, x0: usize, y0: usize) {
        for y in 0..other.height {
            for x in 0..other.width {
                self.set(x0 + x, y0 + y, other.pixels[y * other.width + x]);
            }
        }
    }

    /// Draw ASCII text with a built-in 5x7 bitmap font (scale 1 = 6 px per char incl. spacing; supports
    /// A-Z a-z 0-9 and `. , : - + = ( ) / _ %` and space; lowercase reuses the uppercase glyphs, anything
    /// else is drawn as `?`), top-left at (x, y). The ink stays within [`text_size`] of the string.
    pub fn text(&mut self, x: usize, y: usize, s: &str, color: [u8; 3], scale: usize) {
        for (i, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            let cx = x + i * CHAR_W * scale;
            for (r, bits) in rows.iter().enumerate() {
                for c in 0..5 {
                    if bits & (0b10000 >> c) != 0 {
                        self.fill_rect(cx + c * scale, y + r * scale, scale, scale, color);
                    }
                }
            }
        }
    }

    /// Box-filtered down to at most `width` pixels wide (aspect kept); unchanged when already narrower.
    pub fn shrunk_to_width(&self, width: usize) -> Canvas {
        if self.width <= width || width == 0 {
            return self.clone();
        }
        let f = self.width as f64 / width as f64;
        let height = ((self.height as f64 / f).round() as usize).max(1);
        let mut out = Canvas::new(width, height, WHITE);
        for y in 0..height {
            for x in 0..width {
                let (x0, x1) = ((x as f64 * f) as usize, (((x + 1) as f64 * f) as usize).clamp(1, self.width));
                let (y0, y1) = ((y as f64 * f) as usize, (((y + 1) as f64 * f) as usize).clamp(1, self.height));
                let mut acc = [0u64; 3];
                let mut n = 0u64;
                for yy in y0.min(y1 - 1)..y1 {
                    for xx in x0.min(x1 - 1)..x1 {
                        let p = self.pixels[yy * self.width + xx];
                        (0..3).for_each(|c| acc[c] += p[c] as u64);
                        n += 1;
                    }
                }
                out.pixels[y * width + x] = acc.map(|a| (a / n.max(1)) as u8);
            }
        }
        out
    }

    /// Reads an 8-bit RGB, RGBA, grey or grey-alpha PNG (alpha dropped).
    pub fn read_png(path: &Path) -> Result<Canvas> {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().with_context(|| format!("{}: not a PNG", path.display()))?;
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).with_context(|| format!("{}: unreadable PNG", path.display()))?;
        anyhow::ensure!(info.bit_depth == png::BitDepth::Eight, "{}: only 8-bit PNGs are read", path.display());
        let channels = info.color_type.samples();
        let (w, h) = (info.width as usize, info.height as usize);
        let pixels = buf[..w * h * channels]
            .chunks(channels)
            .map(|p| match channels {
                1 | 2 => [p[0]; 3],
                _ => [p[0], p[1], p[2]],
            })
            .collect();
        Ok(Canvas { width: w, height: h, pixels })
    }

    /// Write a PNG atomically: to `path.tmp` first, then rename; errors name the path.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        self.write_png(&mut bytes).with_context(|| format!("encoding PNG {}", path.display()))?;
        super::files::write_atomic(path, &bytes)
    }

    /// Encode this canvas as an 8-bit RGB PNG into `out`.
    fn write_png(&self, out: &mut Vec<u8>) -> Result<()> {
        anyhow::ensure!(
            self.width > 0 && self.height > 0,
            "cannot save an empty canvas"
        );
        let mut enc = png::Encoder::new(
            out,
            self.width as u32,
            self.height as u32,
        );
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(self.pixels.as_flattened())?;
        writer.finish()?;
        Ok(())
    }
}

/// Size in pixels (width, height) of the box [`Canvas::text`] uses for `s` at `scale`.
pub fn text_size(s: &str, scale: usize) -> (usize, usize) {
    (s.chars().count() * CHAR_W * scale, CHAR_H * scale)
}

/// The 5x7 glyph for `ch`: seven rows, bit 4 is the leftmost column.
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_uppercase() {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        ' ' => [0; 7],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

/// Plot window for 2D pictures.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub xmin: f64,
    pub xmax: f64,
    pub ymin: f64,
    pub ymax: f64,
}

impl Bounds {
    /// The square window [-half, half]^2.
    pub fn square(half: f64) -> Self {
        Bounds {
            xmin: -half,
            xmax: half,
            ymin: -half,
            ymax: half,
        }
    }
}

/// Viridis-like colormap for t in \[0,1] (clamped; NaN -> black).
pub fn colormap(t: f64) -> [u8; 3] {
    const STOPS: [[f64; 3]; 9] = [
        [68.0, 1.0, 84.0],
        [71.0, 44.0, 122.0],
        [59.0, 82.0, 139.0],
        [44.0, 113.0, 142.0],
        [33.0, 145.0, 140.0],
        [39.0, 173.0, 129.0],
        [94.0, 201.0, 98.0],
        [170.0, 220.0, 50.0],
        [253.0, 231.0, 37.0],
    ];
    if t.is_nan() {
        return BLACK;
    }
    let pos = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    std::array::from_fn(|k| (a[k] + f * (b[k] - a[k])).round() as u8)
}

/// Grid cell (column, row-from-top) of point (x, y) on a size x size grid over `b`, if inside.
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

/// 2D histogram of points (xs, ys same length) on a size x size grid over `bounds`, shown with the
/// colormap (log1p(count) / log1p(max count), so sparse regions stay visible). y increases upward;
/// points outside the window or non-finite are dropped.
pub fn scatter_density(xs: &[f32], ys: &[f32], bounds: Bounds, size: usize) -> Canvas {
    debug_assert_eq!(
        xs.len(),
        ys.len(),
        "scatter_density: xs and ys differ in length"
    );
    let mut counts = vec![0u32; size * size];
    if size > 0 {
        for (&x, &y) in xs.iter().zip(ys) {
            if let Some((c, r)) = cell_of(x as f64, y as f64, bounds, size) {
                counts[r * size + c] += 1;
            }
        }
    }
    let denom = (counts.iter().copied().max().unwrap_or(0) as f64)
        .ln_1p()
        .max(f64::MIN_POSITIVE);
    let pixels = counts
        .iter()
        .map(|&n| colormap((n as f64).ln_1p() / denom))
        .collect();
    Canvas {
        width: size,
        height: size,
        pixels,
    }
}

/// Heat map of a size x size grid of values given row-major with row 0 = the TOP row (largest y);
/// values are densities (>= 0) coloured by value / max (negative clamps to 0, NaN is black).
/// Panics if `values.len() != size * size`.
pub fn heatmap(values: &[f32], size: usize) -> Canvas {
    assert_eq!(
        values.len(),
        size * size,
        "heatmap: expected {size}x{size} values"
    );
    let max = values
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, &v| m.max(v as f64));
    let denom = if max > 0.0 { max } else { 1.0 };
    let pixels = values.iter().map(|&v| colormap(v as f64 / denom)).collect();
    Canvas {
        width: size,
        height: size,
        pixels,
    }
}

/// The grid of points (cell centres) at which [`heatmap`] expects values, in the same row-major
/// order (top row first), as (xs, ys) vectors of length size*size; and the area of one cell.
pub fn grid_points(bounds: Bounds, size: usize) -> (Vec<f32>, Vec<f32>, f64) {
    let dx = (bounds.xmax - bounds.xmin) / size as f64;
    let dy = (bounds.ymax - bounds.ymin) / size as f64;
    let (mut xs, mut ys) = (
        Vec::with_capacity(size * size),
        Vec::with_capacity(size * size),
    );
    for r in 0..size {
        let y = bounds.ymax - (r as f64 + 0.5) * dy;
        for c in 0..size {
            xs.push((bounds.xmin + (c as f64 + 0.5) * dx) as f32);
            ys.push(y as f32);
        }
    }
    (xs, ys, dx * dy)
}

/// Panels side by side, each with a centred title above it, separated by a few pixels, on a white
/// background. Titles use scale 2 when every one fits its panel's width, else scale 1.
pub fn titled_row(panels: &[(&str, Canvas)]) -> Canvas {
    const PAD: usize = 6;
    let fits2 = panels.iter().all(|(t, c)| text_size(t, 2).0 <= c.width);
    let scale = if fits2 { 2 } else { 1 };
    let title_h = CHAR_H * scale + 2 * PAD;
    let width = panels.iter().map(|(_, c)| c.width + PAD).sum::<usize>() + PAD;
    let height = title_h + panels.iter().map(|(_, c)| c.height).max().unwrap_or(0) + PAD;
    let mut out = Canvas::new(width, height, WHITE);
    let mut x = PAD;
    for (title, c) in panels {
        let tw = text_size(title, scale).0;
        out.text(x + c.width.saturating_sub(tw) / 2, PAD, title, BLACK, scale);
        out.blit(c, x, title_h);
        x += c.width + PAD;
    }
    out
}

/// Grayscale images (n images of h x w, values in \[0,1], clamped) tiled row by row into a grid with
/// `cols` columns and a 1-px grey gap between tiles (none around the outside). Panics if `images`
/// holds fewer than n*h*w values.
pub fn image_grid(images: &[f32], n: usize, h: usize, w: usize, cols: usize) -> Canvas {
    assert!(
        images.len() >= n * h * w,
        "image_grid: need {n}x{h}x{w} values, got {}",
        images.len()
    );
    if n == 0 || h == 0 || w == 0 {
        return Canvas::new(1, 1, GAP);
    }
    let cols = cols.clamp(1, n);
    let rows = n.div_ceil(cols);
    let mut out = Canvas::new(cols * (w + 1) - 1, rows * (h + 1) - 1, GAP);
    for (k, img) in images.chunks_exact(h * w).take(n).enumerate() {
        let (x0, y0) = ((k % cols) * (w + 1), (k / cols) * (h + 1));
        for (i, &v) in img.iter().enumerate() {
            let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8; // NaN clamps to NaN -> 0
            out.set(x0 + i % w, y0 + i / w, [g; 3]);
        }
    }
    out
}

/// Format an axis value compactly: fixed point with trailing zeros trimmed, or scientific when tiny/huge.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-2..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    format!("{v:.3}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

/// Finite data range (min, max) of all finite points, widened when degenerate; [0, 1] when empty.
fn data_range<'a>(vals: impl Iterator<Item = &'a f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        let d = (lo.abs() * 0.05).max(0.5);
        (lo - d, hi + d)
    } else {
        (lo, hi)
    }
}

/// Draw a 1-px line from (x0, y0) to (x1, y1) (Bresenham), clipped to the canvas.
fn line(c: &mut Canvas, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), col: [u8; 3]) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    loop {
        c.set_i(x0, y0, col);
        if x0 == x1 && y0 == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x0 += sx;
        }
        if e2 <= dx {
            err += dx;
            y0 += sy;
        }
    }
}

/// Pixel rectangle of a plot's data area (inclusive edges) and the data window (x, y) it shows.
struct Frame {
    left: usize,
    top: usize,
    right: usize,
    bottom: usize,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    /// Pixel position of data point (x, y); y increases upward.
    fn to_px(&self, x: f64, y: f64) -> (i64, i64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        let px = self.left as f64 + fx * (self.right - self.left) as f64;
        let py = self.bottom as f64 - fy * (self.bottom - self.top) as f64;
        (px.round() as i64, py.round() as i64)
    }
}

/// A line plot of one or more series (name, x, y) with linear axes, min/max tick labels on both
/// axes, a title and a legend of the named series. Colours are distinct per series (cycled after 8);
/// non-finite points are skipped and break the line. Never panics on empty or all-NaN input.
pub fn line_plot(title: &str, series: &[(&str, &[f64], &[f64])], width: usize, height: usize) -> Canvas {
    labelled_line_plot(title, "", "", series, width, height)
}

/// [`line_plot`] with an x-axis label under the axis and a y-axis label above it (empty: none).
pub fn labelled_line_plot(title: &str, xlabel: &str, ylabel: &str, series: &[(&str, &[f64], &[f64])], width: usize, height: usize) -> Canvas {
    let mut c = Canvas::new(width, height, WHITE);
    let x = data_range(series.iter().flat_map(|s| s.1.iter()));
    let y = data_range(series.iter().flat_map(|s| s.2.iter()));
    let ylabel_w = text_size(&fmt_num(y.0), 1).0.max(text_size(&fmt_num(y.1), 1).0);
    let tscale = if text_size(title, 2).0 + 8 <= width { 2 } else { 1 };
    let label_rows = |s: &str| if s.is_empty() { 0 } else { CHAR_H + 6 };
    let (left, top) = (ylabel_w + 8, CHAR_H * tscale + 10 + label_rows(ylabel));
    let right = width.saturating_sub(10).max(left + 1);
    let bottom = height.saturating_sub(CHAR_H + 8 + label_rows(xlabel)).max(top + 1);
    let frame = Frame { left, top, right, bottom, x, y };
    let tx = width.saturating_sub(text_size(title, tscale).0) / 2;
    c.text(tx, 4, title, BLACK, tscale);
    if !ylabel.is_empty() {
        c.text(2, top.saturating_sub(CHAR_H + 4), ylabel, BLACK, 1);
    }
    if !xlabel.is_empty() {
        c.text(width.saturating_sub(text_size(xlabel, 1).0) / 2, bottom + CHAR_H + 10, xlabel, BLACK, 1);
    }
    draw_axes(&mut c, &frame);
    for (k, (_, xs, ys)) in series.iter().enumerate() {
        draw_series(&mut c, &frame, xs, ys, PALETTE[k % PALETTE.len()]);
    }
    legend(&mut c, series, right, top);
    c
}

/// One series of an [`errorbar_plot`]: a name, and per category a mean and a half-width (NaN: no bar).
pub struct ErrorSeries<'a> {
    pub name: &'a str,
    pub means: &'a [f64],
    pub errs: &'a [f64],
}

/// Means with ± error bars over categories (e.g. noise levels), one colour per series, points joined by lines; an
/// x-axis label under the category ticks and a y-axis label above the axis; y range from every mean ± error. A
/// series with a single value is drawn as a dashed horizontal reference line across all categories (a baseline).
pub fn errorbar_plot(title: &str, xlabel: &str, ylabel: &str, categories: &[String], series: &[ErrorSeries], width: usize, height: usize) -> Canvas {
    let mut c = Canvas::new(width, height, WHITE);
    let n = categories.len().max(1);
    let ends: Vec<f64> = series
        .iter()
        .flat_map(|s| s.means.iter().zip(s.errs).flat_map(|(m, e)| {
            let e = if e.is_finite() { *e } else { 0.0 };
            [m - e, m + e]
        }))
        .collect();
    let (y0, y1) = data_range(ends.iter());
    let pad = 0.05 * (y1 - y0);
    let y = (y0 - pad, y1 + pad);
    let ylabel_w = text_size(&fmt_num(y.0), 1).0.max(text_size(&fmt_num(y.1), 1).0);
    let tscale = if text_size(title, 2).0 + 8 <= width { 2 } else { 1 };
    let (left, top) = (ylabel_w + 8, CHAR_H * tscale + CHAR_H + 18);
    let right = width.saturating_sub(10).max(left + 1);
    let bottom = height.saturating_sub(2 * CHAR_H + 16).max(top + 1);
    let frame = Frame { left, top, right, bottom, x: (-0.5, n as f64 - 0.5), y };
    c.text(width.saturating_sub(text_size(title, tscale).0) / 2, 4, title, BLACK, tscale);
    c.text(2, top - CHAR_H - 6, ylabel, BLACK, 1);
    let (l, b) = (left as i64 - 1, bottom as i64 + 1);
    line(&mut c, (l, top as i64), (l, b), BLACK);
    line(&mut c, (l, b), (right as i64, b), BLACK);
    let [ylo, yhi] = [y.0, y.1].map(fmt_num);
    c.text(left.saturating_sub(4 + text_size(&yhi, 1).0), top, &yhi, BLACK, 1);
    c.text(left.saturating_sub(4 + text_size(&ylo, 1).0), bottom.saturating_sub(CHAR_H - 1), &ylo, BLACK, 1);
    for (i, cat) in categories.iter().enumerate() {
        let (px, _) = frame.to_px(i as f64, y.0);
        line(&mut c, (px, b), (px, b + 3), BLACK);
        c.text((px as usize).saturating_sub(text_size(cat, 1).0 / 2), bottom + 6, cat, BLACK, 1);
    }
    c.text(width.saturating_sub(text_size(xlabel, 1).0) / 2, bottom + CHAR_H + 10, xlabel, BLACK, 1);
    let slots = series.len().max(1) as f64;
    for (k, s) in series.iter().enumerate() {
        let col = PALETTE[k % PALETTE.len()];
        if s.means.len() == 1 && n > 1 {
            let (x0, py) = frame.to_px(-0.5, s.means[0]);
            let (x1, _) = frame.to_px(n as f64 - 0.5, s.means[0]);
            for xs in (x0..x1).step_by(8) {
                line(&mut c, (xs, py), ((xs + 4).min(x1), py), col);
            }
            if s.errs[0].is_finite() {
                for m in [s.means[0] - s.errs[0], s.means[0] + s.errs[0]] {
                    let (_, pe) = frame.to_px(0.0, m);
                    for xs in (x0..x1).step_by(16) {
                        c.set_i(xs, pe, col);
                    }
                }
            }
            continue;
        }
        // Series side by side within a category, so bars do not hide each other.
        let offset = (k as f64 - (slots - 1.0) / 2.0) * 0.08;
        let mut prev: Option<(i64, i64)> = None;
        for (i, (&m, &e)) in s.means.iter().zip(s.errs).enumerate() {
            if !m.is_finite() {
                prev = None;
                continue;
            }
            let (px, py) = frame.to_px(i as f64 + offset, m);
            if let Some(p) = prev {
                line(&mut c, p, (px, py), col);
            }
            if e.is_finite() && e > 0.0 {
                let (_, lo) = frame.to_px(0.0, m - e);
                let (_, hi) = frame.to_px(0.0, m + e);
                line(&mut c, (px, lo), (px, hi), col);
                line(&mut c, (px - 3, lo), (px + 3, lo), col);
                line(&mut c, (px - 3, hi), (px + 3, hi), col);
            }
            c.fill_rect((px - 2).max(0) as usize, (py - 2).max(0) as usize, 5, 5, col);
            prev = Some((px, py));
        }
    }
    let named: Vec<(&str, &[f64], &[f64])> = series.iter().map(|s| (s.name, s.means, s.errs)).collect();
    legend(&mut c, &named, right, top);
    c
}

/// Left and bottom axis lines just outside the frame, with min/max labels at their ends.
fn draw_axes(c: &mut Canvas, f: &Frame) {
    let (l, t, r, b) = (
        f.left as i64 - 1,
        f.top as i64,
        f.right as i64,
        f.bottom as i64 + 1,
    );
    line(c, (l, t), (l, b), BLACK);
    line(c, (l, b), (r, b), BLACK);
    let [x0, x1, y0, y1] = [f.x.0, f.x.1, f.y.0, f.y.1].map(fmt_num);
    let right_aligned = |s: &str, edge: usize| edge.saturating_sub(text_size(s, 1).0);
    c.text(right_aligned(&y1, f.left - 4), f.top, &y1, BLACK, 1);
    let ylo_y = f.bottom.saturating_sub(CHAR_H - 1);
    c.text(right_aligned(&y0, f.left - 4), ylo_y, &y0, BLACK, 1);
    c.text(f.left, f.bottom + 5, &x0, BLACK, 1);
    c.text(right_aligned(&x1, f.right + 1), f.bottom + 5, &x1, BLACK, 1);
}

/// One series as connected 1-px segments; a non-finite point breaks the line, and an isolated
/// finite point is drawn as a dot.
fn draw_series(c: &mut Canvas, f: &Frame, xs: &[f64], ys: &[f64], col: [u8; 3]) {
    let mut prev = None;
    for (&x, &y) in xs.iter().zip(ys) {
        let p = (x.is_finite() && y.is_finite()).then(|| f.to_px(x, y));
        if let Some(b) = p {
            line(c, prev.unwrap_or(b), b, col);
        }
        prev = p;
    }
}

/// Legend box in the top-right corner of the plot area (whose right and top edges are given): a
/// colour swatch and the name of every named series.
fn legend(c: &mut Canvas, series: &[(&str, &[f64], &[f64])], right: usize, top: usize) {
    let named: Vec<(usize, &str)> = series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.0.is_empty())
        .map(|(k, s)| (k, s.0))
        .collect();
    let Some(tw) = named.iter().map(|(_, n)| text_size(n, 1).0).max() else {
        return;
    };
    let (w, h) = (tw + 22, named.len() * (CHAR_H + 4) + 4);
    let (bx, by) = (right.saturating_sub(w + 2), top + 2);
    c.fill_rect(bx, by, w, h, [200, 200, 200]);
    c.fill_rect(
        bx + 1,
        by + 1,
        w.saturating_sub(2),
        h.saturating_sub(2),
        WHITE,
    );
    for (i, (k, name)) in named.iter().enumerate() {
        let y = by + 4 + i * (CHAR_H + 4);
        c.fill_rect(bx + 4, y + 2, 10, 3, PALETTE[k % PALETTE.len()]);
        c.text(bx + 18, y, name, BLACK, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        xmin: -2.0,
        xmax: 2.0,
        ymin: -1.0,
        ymax: 3.0,
    };

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
    fn heatmap_hot_cell_top_left() {
        let mut v = vec![0.1f32; 9];
        v[0] = 5.0;
        let c = heatmap(&v, 3);
        assert_eq!((c.width, c.height), (3, 3));
        assert_eq!(c.get(0, 0), colormap(1.0));
        assert_eq!(c.get(2, 2), colormap(0.02));
        assert_ne!(c.get(0, 0), c.get(1, 0));
        assert_eq!(heatmap(&[f32::NAN], 1).get(0, 0), BLACK);
    }

    #[test]
    fn heatmap_of_grid_points_is_oriented() {
        // A density that grows with y and with x must be hottest at the top-right.
        let (xs, ys, _) = grid_points(B, 8);
        let v: Vec<f32> = xs.iter().zip(&ys).map(|(x, y)| (x + y).exp()).collect();
        let c = heatmap(&v, 8);
        assert_eq!(c.get(7, 0), colormap(1.0));
    }

    #[test]
    fn scatter_point_top_right() {
        let eps = 1e-3;
        let c = scatter_density(&[(B.xmax - eps) as f32], &[(B.ymax - eps) as f32], B, 5);
        assert_eq!(c.get(4, 0), colormap(1.0));
        let hot: Vec<usize> = (0..25).filter(|&i| c.pixels[i] != colormap(0.0)).collect();
        assert_eq!(hot, vec![4]);
        // Bottom-left point, NaN and out-of-window points.
        let c = scatter_density(&[-1.99, f32::NAN, 10.0], &[-0.99, 0.0, 0.0], B, 5);
        assert_eq!(c.get(0, 4), colormap(1.0));
        assert_eq!(c.pixels.iter().filter(|&&p| p != colormap(0.0)).count(), 1);
        // Counts are stretched relative to the max: 4 points -> top colour, 1 point -> in between.
        let c = scatter_density(
            &[0.1, 0.1, 0.1, 0.1, -1.9],
            &[0.1; 5],
            Bounds::square(2.0),
            2,
        );
        assert_eq!(c.get(1, 0), colormap(1.0));
        let mid = c.get(0, 0);
        assert!(mid != colormap(0.0) && mid != colormap(1.0), "{mid:?}");
    }

    #[test]
    fn colormap_ends_and_nan() {
        assert_eq!(colormap(0.0), [68, 1, 84]);
        assert_eq!(colormap(1.0), [253, 231, 37]);
        assert_eq!(colormap(-3.0), colormap(0.0));
        assert_eq!(colormap(7.0), colormap(1.0));
        assert_eq!(colormap(f64::NAN), BLACK);
    }

    #[test]
    fn image_grid_layout() {
        // Three 2x3 images in 2 columns: 2 rows of tiles, 1-px gaps.
        let (n, h, w) = (3, 2, 3);
        let mut imgs = vec![0.0f32; n * h * w];
        imgs[2 * h * w + w + 2] = 1.5; // image 2, row 1, col 2 (clamped to white)
        let c = image_grid(&imgs, n, h, w, 2);
        assert_eq!((c.width, c.height), (2 * w + 1, 2 * h + 1));
        assert_eq!(c.get(2, 4), WHITE); // tile (col 0, row 1) starts at y = h + 1 = 3
        assert_eq!(c.get(3, 0), GAP);
        assert_eq!(c.get(0, 2), GAP);
        assert_eq!(c.pixels.iter().filter(|&&p| p == WHITE).count(), 1);
    }

    #[test]
    fn save_png_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let mut c = Canvas::new(5, 3, [10, 20, 30]);
        c.set(4, 2, [200, 100, 0]);
        c.set(99, 99, WHITE); // ignored
        c.save_png(&path).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
        let dec = png::Decoder::new(std::fs::File::open(&path).unwrap());
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width, info.height, info.color_type),
            (5, 3, png::ColorType::Rgb)
        );
        assert_eq!(&buf[..info.buffer_size()], c.pixels.as_flattened());
        let err = c.save_png(&dir.path().join("missing/x.png")).unwrap_err();
        assert!(format!("{err:#}").contains("missing/x.png"), "{err:#}");
    }

    #[test]
    fn text_draws_inside_its_box() {
        let mut c = Canvas::new(100, 40, WHITE);
        let s = "Ab9:%(x)";
        c.text(7, 5, s, BLACK, 2);
        let (w, h) = text_size(s, 2);
        let mut ink = 0;
        for y in 0..c.height {
            for x in 0..c.width {
                if c.get(x, y) != WHITE {
                    ink += 1;
                    assert!(
                        (7..7 + w).contains(&x) && (5..5 + h).contains(&y),
                        "ink at ({x}, {y})"
                    );
                }
            }
        }
        assert!(ink > 50, "too little ink: {ink}");
        // Exact shape and spacing: "--" is two 5-px bars on row 3, one blank column apart.
        let mut c = Canvas::new(12, 7, WHITE);
        c.text(0, 0, "--", BLACK, 1);
        let row3: Vec<bool> = (0..12).map(|x| c.get(x, 3) == BLACK).collect();
        let want: Vec<bool> = (0..12).map(|x| x % 6 < 5).collect();
        assert_eq!(row3, want);
        assert!((0..12).all(|x| c.get(x, 2) == WHITE));
        // Every supported character has a glyph distinct from the fallback (except space is blank).
        for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:-+=()/_%".chars() {
            assert_ne!(glyph(ch), glyph('~'), "{ch}");
        }
        assert_eq!(glyph(' '), [0; 7]);
        assert_eq!(glyph('q'), glyph('Q'));
    }

    #[test]
    fn line_plot_handles_degenerate_input() {
        let nan = [f64::NAN, f64::INFINITY];
        for s in [
            vec![],
            vec![("empty", &[][..], &[][..])],
            vec![("nan", &nan[..], &nan[..])],
            vec![("one", &[1.0][..], &[2.0][..])],
        ] {
            let c = line_plot("t", &s, 200, 120);
            assert_eq!((c.width, c.height), (200, 120));
        }
        line_plot("tiny", &[("a", &[0.0, 1.0][..], &[0.0, 1.0][..])], 3, 2);
        line_plot("zero", &[], 0, 0);
    }

    #[test]
    fn line_plot_draws_series_colours() {
        let x = [0.0, 1.0, 2.0, f64::NAN, 3.0];
        let y = [1.0, 3.0, 2.0, 5.0, 0.5];
        let y2 = [2.0, 2.0, 2.0, 2.0, 2.0];
        let count = |c: &Canvas, col| c.pixels.iter().filter(|&&p| p == col).count();
        // Unnamed series: no legend, so every coloured pixel comes from the lines.
        let bare = line_plot("loss", &[("", &x, &y), ("", &x, &y2)], 240, 160);
        assert!(count(&bare, PALETTE[0]) > 100 && count(&bare, PALETTE[1]) > 100);
        assert_eq!(count(&bare, PALETTE[2]), 0);
        let named = line_plot("loss", &[("train", &x, &y), ("val", &x, &y2)], 240, 160);
        assert!(
            count(&named, PALETTE[0]) > count(&bare, PALETTE[0]),
            "legend swatch"
        );
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(100.0), "100");
        assert_eq!(fmt_num(1e-4), "1.00e-4");
    }

    #[test]
    fn errorbar_plot_draws_bars_points_and_a_dashed_baseline() {
        let count = |c: &Canvas, col| c.pixels.iter().filter(|&&p| p == col).count();
        let cats: Vec<String> = ["0.001", "0.2", "1"].iter().map(|s| s.to_string()).collect();
        let (m, e) = ([0.5, 0.3, f64::NAN], [0.05, f64::NAN, 0.1]);
        let swept = ErrorSeries { name: "", means: &m, errs: &e };
        let c = errorbar_plot("gap", "g", "nats", &cats, &[swept], 300, 200);
        // Two finite points (5x5 squares), the line between them, one error bar with caps.
        assert!(count(&c, PALETTE[0]) > 2 * 25 + 20, "{}", count(&c, PALETTE[0]));
        let (bm, be) = ([0.4], [0.02]);
        let swept = ErrorSeries { name: "swept", means: &m, errs: &e };
        let base = ErrorSeries { name: "", means: &bm, errs: &be };
        let with_base = errorbar_plot("gap", "g", "nats", &cats, &[swept, base], 300, 200);
        let dashes = count(&with_base, PALETTE[1]);
        // Dashed: about half of the frame's width is drawn.
        assert!(dashes > 60 && dashes < 300, "{dashes}");
        // The tallest error bar sets the range: the bars stay inside the canvas.
        errorbar_plot("empty", "", "", &[], &[], 50, 40);
    }

    #[test]
    fn titled_row_layout() {
        let red = Canvas::new(12, 10, [255, 0, 0]);
        let blue = Canvas::new(20, 5, [0, 0, 255]);
        let c = titled_row(&[("a", red), ("b", blue)]);
        let title_h = 2 * CHAR_H + 12; // both titles fit at scale 2 (12 px wide)
        assert_eq!((c.width, c.height), (6 + 12 + 6 + 20 + 6, title_h + 10 + 6));
        assert_eq!(c.get(6, title_h), [255, 0, 0]);
        assert_eq!(c.get(24, title_h + 4), [0, 0, 255]);
        assert_eq!(c.get(24, title_h + 5), WHITE);
        assert!((0..c.width).any(|x| (6..title_h).any(|y| c.get(x, y) == BLACK)));
        // A title too wide for its panel drops both titles to scale 1.
        let c = titled_row(&[("abc", Canvas::new(20, 4, WHITE))]);
        assert_eq!(c.height, CHAR_H + 12 + 4 + 6);
    }

    #[test]
    fn series_orientation_and_nan_breaks() {
        let f = Frame {
            left: 0,
            top: 0,
            right: 10,
            bottom: 10,
            x: (0.0, 10.0),
            y: (0.0, 10.0),
        };
        let mut c = Canvas::new(11, 11, WHITE);
        let red = [255, 0, 0];
        draw_series(
            &mut c,
            &f,
            &[0.0, 5.0, f64::NAN, 10.0],
            &[0.0, 5.0, 5.0, 10.0],
            red,
        );
        assert_eq!(c.get(0, 10), red); // (0, 0) is bottom-left
        assert_eq!(c.get(3, 7), red); // on the first segment
        assert_eq!(c.get(10, 0), red); // isolated point after the NaN, drawn as a dot
        assert_eq!(c.get(7, 3), WHITE); // the NaN breaks the line
    }
}
