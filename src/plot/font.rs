//! The one font of every picture: DejaVu Sans (from the `dejavu` crate; Bitstream Vera licence, DejaVu changes in the
//! public domain), so text needs no system font or fontconfig. It is registered with plotters as `sans-serif` (for
//! layout, and the family SVG text names), and bitmap text is rasterized here with `ab_glyph`: [`rasterize`] keeps
//! every glyph's side bearing and the common baseline, which plotters' own ab_glyph renderer (0.3.7) drops.
use super::canvas::Canvas;
use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::sync::OnceLock;

/// The regular and bold faces, parsed once.
fn faces() -> &'static (FontRef<'static>, FontRef<'static>) {
    static FACES: OnceLock<(FontRef<'static>, FontRef<'static>)> = OnceLock::new();
    FACES.get_or_init(|| {
        // The bytes are TrueType fonts shipped by the crate: failing here is a build problem, not a user's.
        let parse = |bytes| FontRef::try_from_slice(bytes).expect("the embedded DejaVu Sans font parses");
        (parse(dejavu::sans::regular()), parse(dejavu::sans::bold()))
    })
}

/// Registers the embedded font with plotters (once per process); the style constructors call it.
pub fn ensure() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let normal = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let bold = register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
        assert!(normal.is_ok() && bold.is_ok(), "the embedded DejaVu Sans font does not load");
    });
}

/// Text of `size` pixels (line height) in the embedded font.
pub fn style(size: f64) -> TextStyle<'static> {
    ensure();
    TextStyle::from(("sans-serif", size).into_font())
}

/// Bold text of `size` pixels, for titles.
pub fn bold(size: f64) -> TextStyle<'static> {
    ensure();
    TextStyle::from(("sans-serif", size, FontStyle::Bold).into_font())
}

/// A line of text as coverage in \[0,1] on a `width` x `height` grid: row 0 at the top of the line (ascent), the
/// baseline at `ascent`.
pub struct Glyphs {
    pub width: u32,
    pub height: u32,
    pub ascent: f32,
    pub coverage: Vec<f32>,
}

/// Glyph positions of `text` at `size` pixels (the caret advanced by each glyph and kerning), and the line's width.
fn layout(text: &str, size: f64, bold: bool) -> (Vec<ab_glyph::Glyph>, f32) {
    let face = if bold { &faces().1 } else { &faces().0 };
    let scaled = face.as_scaled(PxScale::from(size as f32));
    let (mut caret, mut prev, mut glyphs) = (0.0f32, None, Vec::new());
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        glyphs.push(id.with_scale_and_position(scaled.scale(), point(caret, scaled.ascent())));
        caret += scaled.h_advance(id);
        prev = Some(id);
    }
    (glyphs, caret)
}

/// Width and height in pixels of `text` at `size` (the height is the line's: ascent to descent).
pub fn measure(text: &str, size: f64, bold: bool) -> (u32, u32) {
    let face = if bold { &faces().1 } else { &faces().0 };
    let scaled = face.as_scaled(PxScale::from(size as f32));
    (layout(text, size, bold).1.ceil() as u32, (scaled.ascent() - scaled.descent()).ceil() as u32)
}

/// The largest size up to `size` (and at least 8 px) at which `text` fits in `width` pixels: titles shrink rather than
/// run into the next panel.
pub fn fitting(text: &str, size: f64, bold: bool, width: u32) -> f64 {
    let mut s = size;
    while s > 8.0 && measure(text, s, bold).0 > width {
        s -= 0.5;
    }
    s
}

/// Width and height in pixels that `text` takes in `style`.
pub fn text_size(text: &str, style: &TextStyle) -> (u32, u32) {
    measure(text, style.font.get_size(), matches!(style.font.get_style(), FontStyle::Bold))
}

/// Rasterizes one line of text at `size` pixels.
pub fn rasterize(text: &str, size: f64, bold: bool) -> Glyphs {
    let face = if bold { &faces().1 } else { &faces().0 };
    let (width, height) = measure(text, size, bold);
    let mut coverage = vec![0.0f32; (width * height) as usize];
    for glyph in layout(text, size, bold).0 {
        let Some(outline) = face.outline_glyph(glyph) else { continue };
        let b = outline.px_bounds();
        outline.draw(|x, y, c| {
            let (px, py) = (b.min.x as i32 + x as i32, b.min.y as i32 + y as i32);
            if (0..width as i32).contains(&px) && (0..height as i32).contains(&py) {
                let cell = &mut coverage[(py as u32 * width + px as u32) as usize];
                *cell = cell.max(c.clamp(0.0, 1.0));
            }
        });
    }
    let ascent = face.as_scaled(PxScale::from(size as f32)).ascent();
    Glyphs { width, height, ascent, coverage }
}

/// Draws `text` onto an image with the top-left corner of its line at (x, y).
pub fn draw_text(image: &mut Canvas, x: i32, y: i32, text: &str, style: &TextStyle) -> Result<()> {
    let (w, h) = image.dimensions();
    let mut backend = super::bitmap::Bitmap::new(image.as_mut(), (w, h));
    backend.draw_text(text, style, (x, y)).map_err(|e| anyhow!("drawing the text {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_titles_shrink_to_fit_and_short_ones_keep_their_size() {
        assert_eq!(fitting("loss", 17.0, true, 400), 17.0);
        let long = "DiffFlow on the rings: diffusion coefficient g: mass outside the support";
        let s = fitting(long, 17.0, true, 400);
        assert!(s < 17.0 && measure(long, s, true).0 <= 400, "size {s}");
        assert_eq!(fitting(long, 17.0, true, 10), 8.0, "never below 8 px");
    }

    #[test]
    fn text_is_drawn_inside_its_box() {
        let mut img = Canvas::from_pixel(200, 60, image::Rgb([255, 255, 255]));
        let st = style(20.0);
        let (w, h) = text_size("Training loss", &st);
        assert!(w > 80 && w < 190 && h >= 18, "{w}x{h}");
        draw_text(&mut img, 10, 10, "Training loss", &st).unwrap();
        let ink: Vec<(u32, u32)> = img.enumerate_pixels().filter(|(_, _, p)| p.0 != [255; 3]).map(|(x, y, _)| (x, y)).collect();
        assert!(ink.len() > 100, "too little ink: {}", ink.len());
        for &(x, y) in &ink {
            assert!((10..10 + w).contains(&x) && (10..10 + h).contains(&y), "ink at ({x}, {y})");
        }
        // Lower case and upper case differ: this is a real font, not capitals only.
        assert_ne!(text_size("abc", &st), text_size("ABC", &st));
    }

    #[test]
    fn glyphs_share_a_baseline_and_keep_their_spacing() {
        // "l." : the full stop sits on the baseline, as low as the bottom of the l.
        let g = rasterize("l.", 40.0, false);
        let lowest = |x0: u32, x1: u32| (0..g.height).rev().find(|&y| (x0..x1).any(|x| g.coverage[(y * g.width + x) as usize] > 0.5)).unwrap();
        let split = g.width / 2;
        assert!(lowest(0, split).abs_diff(lowest(split, g.width)) <= 1, "{} vs {}", lowest(0, split), lowest(split, g.width));
        assert!((lowest(0, split) as f32 - g.ascent).abs() <= 1.5);
        // "ii" has the same gap between its two stems as "i i" has less a space: side bearings are kept.
        let columns = |t: &str| {
            let g = rasterize(t, 40.0, false);
            (0..g.width).filter(|&x| (0..g.height).any(|y| g.coverage[(y * g.width + x) as usize] > 0.5)).collect::<Vec<u32>>()
        };
        let ii = columns("ii");
        let gap = ii.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(gap >= 5, "stems of ii {gap} px apart: bearings dropped");
    }
}
