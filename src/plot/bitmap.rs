//! The bitmap backend of every PNG plot: plotters' `BitMapBackend` on an RGB buffer, with text drawn by
//! [`font::rasterize`] (anchors and rotations as plotters lays them out).
use super::font;
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind};

/// An RGB buffer to draw on; every drawing call but text goes to plotters' own bitmap backend.
pub struct Bitmap<'a> {
    inner: BitMapBackend<'a>,
}

impl<'a> Bitmap<'a> {
    /// A backend over `buffer`, `size.0 * size.1 * 3` bytes of RGB.
    pub fn new(buffer: &'a mut [u8], size: (u32, u32)) -> Self {
        Bitmap { inner: BitMapBackend::with_buffer(buffer, size) }
    }
}

type Error = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

impl DrawingBackend for Bitmap<'_> {
    type ErrorType = Error;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(&mut self, from: BackendCoord, to: BackendCoord, style: &S) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(&mut self, ul: BackendCoord, br: BackendCoord, style: &S, fill: bool) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_rect(ul, br, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(&mut self, path: I, style: &S) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(&mut self, center: BackendCoord, radius: u32, style: &S, fill: bool) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(&mut self, vert: I, style: &S) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, (w, h): (u32, u32), src: &[u8]) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.blit_bitmap(pos, (w, h), src)
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(&self, text: &str, style: &TStyle) -> Result<(u32, u32), DrawingErrorKind<Error>> {
        Ok(font::measure(text, style.size(), is_bold(style)))
    }

    /// The text's line box placed by its anchor at `pos`, then rotated about `pos` as plotters does.
    fn draw_text<TStyle: BackendTextStyle>(&mut self, text: &str, style: &TStyle, pos: BackendCoord) -> Result<(), DrawingErrorKind<Error>> {
        let colour = style.color();
        if colour.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        let g = font::rasterize(text, style.size(), is_bold(style));
        let (w, h) = (g.width as i32, g.height as i32);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Center => -w / 2,
            HPos::Right => -w,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let transform = style.transform();
        for (i, &c) in g.coverage.iter().enumerate().filter(|(_, &c)| c > 0.0) {
            let (x, y) = (i as i32 % w, i as i32 / w);
            let (tx, ty) = transform.transform(x + dx, y + dy);
            self.inner.draw_pixel((pos.0 + tx, pos.1 + ty), BackendColor { alpha: colour.alpha * c as f64, rgb: colour.rgb })?;
        }
        Ok(())
    }
}

/// Whether a text style asks for the bold face.
fn is_bold<TStyle: BackendTextStyle>(style: &TStyle) -> bool {
    matches!(style.style(), plotters_backend::FontStyle::Bold)
}
