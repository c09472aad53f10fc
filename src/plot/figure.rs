//! A plot drawn once for any plotters backend, and so rendered both as a PNG and as an SVG.
use super::axes::drawing;
use super::bitmap::Bitmap;
use super::canvas::{blank, save_png, Canvas};
use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// A plot that can draw itself on any backend; PNG and SVG come from the same drawing code.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);

    /// Draws the whole plot onto `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;

    /// The plot as an RGB image.
    fn png(&self) -> Result<Canvas> {
        let (w, h) = self.size();
        let mut image = blank(w, h);
        {
            let root = Bitmap::new(image.as_mut(), (w, h)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(drawing)?;
        }
        Ok(image)
    }

    /// The plot as an SVG document (text as text, in the `sans-serif` family).
    fn svg(&self) -> Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size()).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(drawing)?;
        }
        Ok(svg)
    }

    /// Writes the PNG to `png` and the SVG beside it (same name, `.svg`).
    fn save(&self, png: &Path) -> Result<()> {
        save_png(&self.png()?, png)?;
        let svg = png.with_extension("svg");
        crate::files::write_atomic(&svg, self.svg()?.as_bytes()).with_context(|| format!("writing {}", svg.display()))
    }
}

/// The text of every `<text>` element of an SVG written by plotters, for tests.
#[cfg(test)]
pub fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text").skip(1).filter_map(|t| Some(t.split_once('>')?.1.split("</text>").next()?.trim().to_string())).collect()
}
