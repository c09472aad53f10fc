//! RGB images ([`Canvas`], the `image` crate's `RgbImage`): blank pages, pasting, scaling, stacking, and PNG files
//! read and written (written atomically, through [`crate::files::write_atomic`]).
use anyhow::{Context, Result};
use image::{imageops, Rgb, RgbImage};
use std::path::Path;

/// An 8-bit RGB image, row 0 at the top.
pub type Canvas = RgbImage;

/// White, the background of every picture.
pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// A `width` x `height` white image.
pub fn blank(width: u32, height: u32) -> Canvas {
    Canvas::from_pixel(width, height, WHITE)
}

/// Copies `part` onto `page` with its top-left corner at (x, y), clipped to the page.
pub fn paste(page: &mut Canvas, part: &Canvas, x: u32, y: u32) {
    imageops::replace(page, part, x as i64, y as i64);
}

/// Each pixel repeated k x k times (nearest neighbour), so a coarse heat map matches its neighbours' size.
pub fn upscaled(image: &Canvas, k: u32) -> Canvas {
    let k = k.max(1);
    imageops::resize(image, image.width() * k, image.height() * k, imageops::FilterType::Nearest)
}

/// Shrunk to at most `width` pixels wide (aspect kept, area-averaged); unchanged when already narrower.
pub fn shrunk_to_width(image: &Canvas, width: u32) -> Canvas {
    if image.width() <= width || width == 0 {
        return image.clone();
    }
    let height = ((image.height() as f64 * width as f64 / image.width() as f64).round() as u32).max(1);
    imageops::thumbnail(image, width, height)
}

/// Images one above the other, left-aligned, on white.
pub fn stacked(images: &[Canvas]) -> Canvas {
    let width = images.iter().map(|i| i.width()).max().unwrap_or(1);
    let mut page = blank(width, images.iter().map(|i| i.height()).sum::<u32>().max(1));
    let mut y = 0;
    for image in images {
        paste(&mut page, image, 0, y);
        y += image.height();
    }
    page
}

/// Images side by side, top-aligned, on white.
pub fn side_by_side(images: &[Canvas]) -> Canvas {
    let height = images.iter().map(|i| i.height()).max().unwrap_or(1);
    let mut page = blank(images.iter().map(|i| i.width()).sum::<u32>().max(1), height);
    let mut x = 0;
    for image in images {
        paste(&mut page, image, x, 0);
        x += image.width();
    }
    page
}

/// The image encoded as an 8-bit RGB PNG.
pub fn png_bytes(image: &Canvas) -> Result<Vec<u8>> {
    anyhow::ensure!(image.width() > 0 && image.height() > 0, "cannot save an empty picture");
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).context("encoding a PNG")?;
    Ok(bytes.into_inner())
}

/// Writes a PNG atomically (a temporary file beside it, then a rename); errors name the path.
pub fn save_png(image: &Canvas, path: &Path) -> Result<()> {
    let bytes = png_bytes(image).with_context(|| format!("encoding PNG {}", path.display()))?;
    crate::files::write_atomic(path, &bytes)
}

/// Reads a PNG (any colour type; alpha is dropped) as RGB.
pub fn read_png(path: &Path) -> Result<Canvas> {
    let reader = image::ImageReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let image = reader.with_guessed_format().with_context(|| format!("reading {}", path.display()))?.decode();
    Ok(image.with_context(|| format!("{}: not a readable PNG", path.display()))?.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_png_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let mut c = Canvas::from_pixel(5, 3, Rgb([10, 20, 30]));
        c.put_pixel(4, 2, Rgb([200, 100, 0]));
        save_png(&c, &path).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
        assert!(std::fs::read(&path).unwrap().starts_with(b"\x89PNG"));
        assert_eq!(read_png(&path).unwrap(), c);
        let err = save_png(&c, &dir.path().join("missing/x.png")).unwrap_err();
        assert!(format!("{err:#}").contains("missing/x.png"), "{err:#}");
        assert!(read_png(&dir.path().join("none.png")).is_err());
    }

    #[test]
    fn scaling_and_stacking() {
        let mut c = blank(2, 1);
        c.put_pixel(1, 0, Rgb([0, 0, 0]));
        let up = upscaled(&c, 3);
        assert_eq!(up.dimensions(), (6, 3));
        assert_eq!((up.get_pixel(2, 2), up.get_pixel(3, 0)), (&WHITE, &Rgb([0, 0, 0])));
        let small = shrunk_to_width(&blank(100, 50), 40);
        assert_eq!(small.dimensions(), (40, 20));
        assert_eq!(shrunk_to_width(&c, 40).dimensions(), (2, 1));
        let s = stacked(&[blank(3, 2), up.clone()]);
        assert_eq!(s.dimensions(), (6, 5));
        assert_eq!(s.get_pixel(3, 2), &Rgb([0, 0, 0]));
        let r = side_by_side(&[blank(3, 2), up]);
        assert_eq!(r.dimensions(), (9, 3));
        assert_eq!(r.get_pixel(6, 0), &Rgb([0, 0, 0]));
    }
}
