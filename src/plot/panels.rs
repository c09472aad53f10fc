//! Pictures made of pictures: grids of image samples and rows of titled panels (data | samples | density, contact
//! sheets).
use super::axes::{drawing, fmt_num};
use super::bitmap::Bitmap;
use super::canvas::{blank, paste, Canvas};
use super::density::Bounds;
use super::font;
use anyhow::Result;
use image::Rgb;
use plotters::prelude::*;

/// Colour of the gaps between tiles in [`image_grid`].
pub const GAP: Rgb<u8> = Rgb([128, 128, 128]);
/// Space around and between titled panels, in pixels.
const PAD: u32 = 6;
/// Room for the y tick labels left of a framed panel, and for the x ones under it.
const FRAME_LEFT: u32 = 46;
const FRAME_BOTTOM: u32 = 38;
/// Title sizes tried in turn, the first one at which every title fits its panel.
const TITLE_SIZES: [f64; 3] = [18.0, 14.0, 11.0];

/// Grayscale images (n images of h x w, values in \[0,1], clamped; NaN black) tiled row by row into a grid with
/// `cols` columns and a 1-px grey gap between tiles (none around the outside). Panics if `images` holds fewer
/// than n*h*w values.
pub fn image_grid(images: &[f32], n: usize, h: usize, w: usize, cols: usize) -> Canvas {
    image_grid_channels(images, n, 1, h, w, cols)
}

/// [`image_grid`] of images laid out [n, c, h, w] with c = 1 (grey) or 3 (RGB planes), values in [0, 1].
pub fn image_grid_channels(images: &[f32], n: usize, c: usize, h: usize, w: usize, cols: usize) -> Canvas {
    assert!(c == 1 || c == 3, "image_grid: 1 or 3 channels, got {c}");
    assert!(images.len() >= n * c * h * w, "image_grid: need {n}x{c}x{h}x{w} values, got {}", images.len());
    if n == 0 || h == 0 || w == 0 {
        return Canvas::from_pixel(1, 1, GAP);
    }
    let cols = cols.clamp(1, n);
    let rows = n.div_ceil(cols);
    let mut out = Canvas::from_pixel((cols * (w + 1) - 1) as u32, (rows * (h + 1) - 1) as u32, GAP);
    let level = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8; // NaN clamps to NaN, which casts to 0
    let plane = h * w;
    for (k, img) in images.chunks_exact(c * plane).take(n).enumerate() {
        let (x0, y0) = ((k % cols) * (w + 1), (k / cols) * (h + 1));
        for i in 0..plane {
            let px = if c == 1 { [level(img[i]); 3] } else { [level(img[i]), level(img[plane + i]), level(img[2 * plane + i])] };
            out.put_pixel((x0 + i % w) as u32, (y0 + i / w) as u32, Rgb(px));
        }
    }
    out
}

/// Panels side by side, each with its title centred above it, a few pixels apart, on white. The title size is the
/// largest at which every title fits the width of its panel.
pub fn titled_row(panels: &[(&str, Canvas)]) -> Result<Canvas> {
    let size = TITLE_SIZES
        .into_iter()
        .find(|&s| panels.iter().all(|(t, c)| font::text_size(t, &font::style(s)).0 <= c.width()))
        .unwrap_or(TITLE_SIZES[TITLE_SIZES.len() - 1]);
    let style = font::style(size);
    let title_h = size.ceil() as u32 + 2 * PAD;
    let width = panels.iter().map(|(_, c)| c.width() + PAD).sum::<u32>() + PAD;
    let height = title_h + panels.iter().map(|(_, c)| c.height()).max().unwrap_or(0) + PAD;
    let mut out = blank(width, height);
    let mut x = PAD;
    for (title, c) in panels {
        let tw = font::text_size(title, &style).0;
        font::draw_text(&mut out, (x + c.width().saturating_sub(tw) / 2) as i32, PAD as i32, title, &style)?;
        paste(&mut out, c, x, title_h);
        x += c.width() + PAD;
    }
    Ok(out)
}

/// A 2D picture over `bounds` (a heat map or scatter density) inside axes: ticks and tick labels on the left and
/// bottom, axis labels `x1` and `x2`. The picture keeps its pixels; the frame adds room around it.
pub fn framed(picture: &Canvas, bounds: Bounds) -> Result<Canvas> {
    let (w, h) = picture.dimensions();
    let size = (w + FRAME_LEFT + PAD, h + FRAME_BOTTOM + PAD);
    let mut page = blank(size.0, size.1);
    paste(&mut page, picture, FRAME_LEFT, PAD);
    let root = Bitmap::new(page.as_mut(), size).into_drawing_area();
    let mut chart = ChartBuilder::on(&root)
        .margin_top(PAD)
        .margin_right(PAD)
        .x_label_area_size(FRAME_BOTTOM)
        .y_label_area_size(FRAME_LEFT)
        .build_cartesian_2d(bounds.xmin..bounds.xmax, bounds.ymin..bounds.ymax)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("x1")
        .y_desc("x2")
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&|v| fmt_num(*v))
        .y_label_formatter(&|v| fmt_num(*v))
        .label_style(font::style(12.0))
        .axis_desc_style(font::style(13.0))
        .draw()
        .map_err(drawing)?;
    root.present().map_err(drawing)?;
    drop(chart);
    drop(root);
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::canvas::WHITE;

    #[test]
    fn image_grid_size_and_tiles() {
        // Three 2x3 images in 2 columns: 2 rows of tiles, 1-px gaps.
        let (n, h, w) = (3, 2, 3);
        let mut imgs = vec![0.0f32; n * h * w];
        imgs[2 * h * w + w + 2] = 1.5; // image 2, row 1, col 2 (clamped to white)
        imgs[w + 1] = 0.5; // image 0, row 1, col 1: mid grey
        let c = image_grid(&imgs, n, h, w, 2);
        assert_eq!(c.dimensions(), (2 * w as u32 + 1, 2 * h as u32 + 1));
        assert_eq!(c.get_pixel(2, 4), &WHITE); // tile (col 0, row 1) starts at y = h + 1 = 3
        assert_eq!(c.get_pixel(1, 1), &Rgb([128; 3]));
        assert_eq!(c.get_pixel(3, 0), &GAP);
        assert_eq!(c.get_pixel(0, 2), &GAP);
        assert_eq!(c.pixels().filter(|&&p| p == WHITE).count(), 1);
        // The empty fourth tile stays gap-coloured; no images gives one pixel.
        assert_eq!(c.get_pixel(5, 4), &GAP);
        assert_eq!(image_grid(&[], 0, 2, 2, 8).dimensions(), (1, 1));
        // Colour: planes R, G, B of one 1x2 image.
        let c = image_grid_channels(&[1.0, 0.0, 0.0, 1.0, 0.0, 0.5], 1, 3, 1, 2, 8);
        assert_eq!((c.get_pixel(0, 0).0, c.get_pixel(1, 0).0), ([255, 0, 0], [0, 255, 128]));
    }

    #[test]
    fn titled_row_layout() {
        let red = Canvas::from_pixel(120, 100, Rgb([255, 0, 0]));
        let blue = Canvas::from_pixel(200, 50, Rgb([0, 0, 255]));
        let c = titled_row(&[("data", red), ("samples", blue)]).unwrap();
        let title_h = 18 + 2 * PAD; // both titles fit at the largest size
        assert_eq!(c.dimensions(), (PAD + 120 + PAD + 200 + PAD, title_h + 100 + PAD));
        assert_eq!(c.get_pixel(PAD, title_h), &Rgb([255, 0, 0]));
        assert_eq!(c.get_pixel(2 * PAD + 120, title_h + 49), &Rgb([0, 0, 255]));
        assert_eq!(c.get_pixel(2 * PAD + 120, title_h + 50), &WHITE);
        // Dark title ink above each panel, within the panel's columns.
        let ink = |x0: u32, x1: u32| (x0..x1).any(|x| (0..title_h).any(|y| c.get_pixel(x, y).0.iter().all(|&v| v < 100)));
        assert!(ink(PAD, PAD + 120) && ink(2 * PAD + 120, 2 * PAD + 320));
        // A title too wide for its panel makes every title smaller.
        let c = titled_row(&[("a long title", blank(60, 4))]).unwrap();
        assert!(c.height() < 18 + 2 * PAD + 4 + PAD, "{}", c.height());
    }

    #[test]
    fn framed_panel_keeps_its_pixels_and_gains_ticks() {
        let red = Canvas::from_pixel(100, 80, Rgb([255, 0, 0]));
        let c = framed(&red, Bounds::square(4.0)).unwrap();
        assert_eq!(c.dimensions(), (100 + FRAME_LEFT + PAD, 80 + FRAME_BOTTOM + PAD));
        // The picture's inside is untouched (its edges carry the axis lines).
        assert_eq!(c.get_pixel(FRAME_LEFT + 50, PAD + 40), &Rgb([255, 0, 0]));
        assert_eq!(c.get_pixel(FRAME_LEFT + 98, PAD + 2), &Rgb([255, 0, 0]));
        // Dark tick labels left of it and under it.
        let dark = |x0: u32, x1: u32, y0: u32, y1: u32| (x0..x1).any(|x| (y0..y1).any(|y| c.get_pixel(x, y).0.iter().all(|&v| v < 90)));
        assert!(dark(0, FRAME_LEFT - 2, PAD, PAD + 80), "no y tick labels");
        assert!(dark(FRAME_LEFT, FRAME_LEFT + 100, PAD + 82, c.height()), "no x tick labels");
    }
}
