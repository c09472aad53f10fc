//! 8-bit images beyond MNIST: CIFAR-10's binary batches, a folder of PNG / JPEG files (one sub-folder per class
//! gives labels), and uint8 arrays in .npy / .npz files ([N, H, W, C] or [N, C, H, W], or [N, H, W] grey). Every
//! reader returns pixels [N, C, H, W] as uint8 values 0..255 (one byte a pixel: batches become f32 as they are drawn,
//! `data::Dataset::batch`), with labels where the source has them, and names the file in every error (a truncated
//! record, mixed sizes, a file that is not an image).
//!
//! What may not fit in memory is memory-mapped, not read: an `.npy` array is a private read-only map of the file
//! (`at::from_file`; a view of its data, whichever layout), and a folder is decoded one image at a time into an
//! unlinked file under `$TMPDIR` that is then mapped the same way, so the page cache, not the process, holds the
//! pixels. CIFAR-10's six batch files are mapped and their records checked in place; the five training batches are
//! then joined into one 150 MB uint8 tensor. An `.npz` member is read into memory (zip members may be compressed:
//! save a `.npy` to map a large set), and a resize or grey/colour conversion makes a uint8 copy.
use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Decoded images: pixels [N, C, H, W] (uint8 values 0..255, possibly a strided view of a memory map) and one label
/// per image where the source has labels.
#[derive(Debug)]
pub struct Images {
    pub pixels: Tensor,
    pub labels: Option<Vec<i64>>,
    /// Class names by label (a folder's sub-folders, CIFAR-10's classes).
    pub classes: Option<Vec<String>>,
}

/// Bytes per CIFAR-10 record: 1 label byte, then 1024 R, 1024 G, 1024 B bytes of a row-major 32x32 image.
pub const CIFAR_RECORD: usize = 3073;
pub const CIFAR_TRAIN: [&str; 5] = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const CIFAR_TEST: &str = "test_batch.bin";
pub const CIFAR_CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// How a folder's or an array's images become the model's: `size` resizes (after a centre crop to a square) to
/// size x size, `channels` converts to grey (1) or colour (3); None keeps what the files hold.
#[derive(Clone, Copy, Debug, Default)]
pub struct Layout {
    pub size: Option<i64>,
    pub channels: Option<i64>,
}

/// The first `len` bytes of `path` as a uint8 tensor \[len] backed by a private, read-only memory map of the file
/// (`at::from_file` without sharing): pages are read on demand and can be evicted, never written back.
pub fn map_file(path: &Path, len: u64) -> Result<Tensor> {
    ensure!(len > 0, "{}: empty file", path.display());
    let name = path.to_str().with_context(|| format!("{}: the path is not UTF-8, so it cannot be memory-mapped", path.display()))?;
    Tensor::f_from_file(name, false, len as i64, (Kind::Uint8, Device::Cpu)).with_context(|| format!("{}: cannot memory-map {len} bytes", path.display()))
}

/// One CIFAR-10 batch file, memory-mapped: whole 3073-byte records, labels 0..9; the pixels are a view
/// [N, 3, 32, 32] of the records (each skips its label byte).
pub fn cifar_file(path: &Path) -> Result<Images> {
    let len = std::fs::metadata(path).with_context(|| format!("{}: cannot read the CIFAR-10 batch", path.display()))?.len();
    let record = CIFAR_RECORD as u64;
    ensure!(len > 0 && len % record == 0, "{}: truncated record: {len} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records", path.display());
    let n = (len / record) as i64;
    let records = map_file(path, len)?.view([n, CIFAR_RECORD as i64]);
    let labels: Vec<i64> = Vec::try_from(records.select(1, 0).to_kind(Kind::Int64)).context("CIFAR-10 labels")?;
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l >= 10) {
        bail!("{}: record {i} has label {l} (CIFAR-10 labels are 0..9): not a CIFAR-10 batch file", path.display());
    }
    let pixels = records.narrow(1, 1, CIFAR_RECORD as i64 - 1).view([n, 3, 32, 32]);
    Ok(Images { pixels, labels: Some(labels), classes: Some(CIFAR_CLASSES.iter().map(|s| s.to_string()).collect()) })
}

/// CIFAR-10's `cifar-10-batches-bin` folder (`dir` itself or a `cifar-10-batches-bin` inside it): the 50,000
/// training and 10,000 test images.
pub fn cifar10(dir: &Path) -> Result<(Images, Images)> {
    let inner = dir.join("cifar-10-batches-bin");
    let dir = if inner.is_dir() { inner } else { dir.to_path_buf() };
    let missing: Vec<&str> = CIFAR_TRAIN.iter().copied().chain([CIFAR_TEST]).filter(|f| !dir.join(f).exists()).collect();
    ensure!(
        missing.is_empty(),
        "{}: CIFAR-10 is missing {} (run `make data CIFAR10=<path to cifar-10-binary.tar.gz>`, or `scripts/fetch_data.sh cifar10` where the machine can reach cs.toronto.edu)",
        dir.display(),
        missing.join(", ")
    );
    let parts = CIFAR_TRAIN.iter().map(|f| cifar_file(&dir.join(f))).collect::<Result<Vec<_>>>()?;
    let labels = parts.iter().flat_map(|p| p.labels.clone().unwrap_or_default()).collect();
    let pixels = Tensor::cat(&parts.iter().map(|p| p.pixels.shallow_clone()).collect::<Vec<_>>(), 0);
    let classes = Some(CIFAR_CLASSES.iter().map(|s| s.to_string()).collect());
    Ok((Images { pixels, labels: Some(labels), classes }, cifar_file(&dir.join(CIFAR_TEST))?))
}

/// CIFAR-10 (see [`cifar10`]) at `side` x `side`: the centre crop of both splits when `side` is given.
pub fn cifar10_at(dir: &Path, side: Option<i64>) -> Result<(Images, Images)> {
    let (train, test) = cifar10(dir)?;
    match side {
        Some(s) => Ok((centre_crop(train, s)?, centre_crop(test, s)?)),
        None => Ok((train, test)),
    }
}

/// Image files under a folder: PNG and JPEG (by extension, case-insensitive); hidden files are skipped.
fn is_image_name(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(), Some("png" | "jpg" | "jpeg"))
}

fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list the image folder", dir.display()))? {
        let p = e.with_context(|| format!("{}: cannot list the image folder", dir.display()))?.path();
        if !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The files of an image folder with their labels: flat (no labels), or one sub-folder per class (labels by sorted
/// folder name). Anything else in it is an error naming the file.
fn folder_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<Vec<i64>>, Option<Vec<String>>)> {
    let entries = visible_entries(dir)?;
    let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) = entries.into_iter().partition(|p| p.is_dir());
    let check = |files: &[PathBuf]| -> Result<()> {
        if let Some(bad) = files.iter().find(|p| !is_image_name(p)) {
            bail!("{}: not a PNG or JPEG file (an image folder holds .png / .jpg / .jpeg files, or one sub-folder of them per class)", bad.display());
        }
        Ok(())
    };
    match (dirs.is_empty(), files.is_empty()) {
        (true, true) => bail!("{}: the image folder is empty", dir.display()),
        (true, false) => {
            check(&files)?;
            Ok((files, None, None))
        }
        (false, true) => {
            let (mut all, mut labels, mut names) = (Vec::new(), Vec::new(), Vec::new());
            for (k, d) in dirs.iter().enumerate() {
                let files = visible_entries(d)?;
                if let Some(sub) = files.iter().find(|p| p.is_dir()) {
                    bail!("{}: class folders hold image files, not further folders", sub.display());
                }
                check(&files)?;
                ensure!(!files.is_empty(), "{}: the class folder is empty", d.display());
                labels.extend(std::iter::repeat(k as i64).take(files.len()));
                all.extend(files);
                names.push(d.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string());
            }
            Ok((all, Some(labels), Some(names)))
        }
        (false, false) => bail!(
            "{}: mixes image files ({}) with class folders ({}); put every image in a class folder, or none",
            dir.display(),
            files[0].display(),
            dirs[0].display()
        ),
    }
}

/// Decodes one image file as `channels` channels (1: grey, 3: colour; None: what the file holds, grey or colour),
/// centre-cropped to a square and resized to size x size when `size` is given. Returns (C, H, W, bytes in CHW order).
fn decode_file(path: &Path, layout: Layout) -> Result<(i64, i64, i64, Vec<u8>)> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", path.display()))?
        .decode()
        .with_context(|| format!("{}: not an image (PNG or JPEG that decodes)", path.display()))?;
    let img = match layout.size {
        Some(s) => {
            let side = img.width().min(img.height());
            let (x0, y0) = ((img.width() - side) / 2, (img.height() - side) / 2);
            img.crop_imm(x0, y0, side, side).resize_exact(s as u32, s as u32, image::imageops::FilterType::Triangle)
        }
        None => img,
    };
    let channels = layout.channels.unwrap_or(if img.color().has_color() { 3 } else { 1 });
    let (w, h) = (img.width() as i64, img.height() as i64);
    let hwc: Vec<u8> = match channels {
        1 => img.to_luma8().into_raw(),
        3 => img.to_rgb8().into_raw(),
        c => bail!("data.channels must be 1 (grey) or 3 (colour), got {c}"),
    };
    let mut chw = vec![0u8; hwc.len()];
    let c = channels as usize;
    let plane = (w * h) as usize;
    for (i, px) in hwc.chunks_exact(c).enumerate() {
        for (k, &v) in px.iter().enumerate() {
            chw[k * plane + i] = v;
        }
    }
    Ok((channels, h, w, chw))
}

/// Every image of a folder (flat, or one sub-folder per class), decoded one by one and streamed into an unlinked
/// file under `$TMPDIR`, which is then memory-mapped as [N, C, H, W]: memory stays flat whatever the folder holds.
/// Without `layout.size` every image must have the first one's size; without `layout.channels` the first image
/// decides grey or colour.
pub fn folder(dir: &Path, layout: Layout) -> Result<Images> {
    let (files, labels, classes) = folder_files(dir)?;
    let (c, h, w, first) = decode_file(&files[0], layout)?;
    let layout = Layout { channels: Some(c), ..layout };
    let cache = tempfile::NamedTempFile::new().context("creating the decoded-image file under $TMPDIR")?;
    let mut out = std::io::BufWriter::new(cache.as_file());
    let write_err = || format!("writing decoded images to {} (is $TMPDIR full?)", cache.path().display());
    out.write_all(&first).with_context(write_err)?;
    let bar = indicatif::ProgressBar::new(files.len() as u64).with_message(format!("decoding {}", dir.display()));
    for f in &files[1..] {
        let (_, fh, fw, bytes) = decode_file(f, layout)?;
        ensure!(
            (fh, fw) == (h, w),
            "mixed sizes: {} is {w}x{h} but {} is {fw}x{fh}; set data.image_size to centre-crop and resize every image",
            files[0].display(),
            f.display()
        );
        out.write_all(&bytes).with_context(write_err)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.flush().with_context(write_err)?;
    drop(out);
    let len = (files.len() * first.len()) as u64;
    // The map outlives the file's name: dropping `cache` unlinks it, and the pages stay readable until unmapped.
    let pixels = map_file(cache.path(), len)?.view([files.len() as i64, c, h, w]);
    Ok(Images { pixels, labels, classes })
}

/// uint8 images of an array's shape, as [N, C, H, W] (a view of `data`, the array's bytes): [N, H, W] is grey,
/// [N, H, W, C] with C in {1, 3} (and not [N, C, H, W]-shaped) is channels-last.
fn array_pixels(data: Tensor, shape: &[i64], what: &str) -> Result<Tensor> {
    let t = data.view(shape);
    let t = match shape {
        [_, _, _] => t.unsqueeze(1),
        [_, c, _, _] if matches!(c, 1 | 3) => t,
        [_, _, _, c] if matches!(c, 1 | 3) => t.permute([0, 3, 1, 2]),
        _ => bail!("{what}: image arrays are [N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3, got shape {shape:?}"),
    };
    Ok(t)
}

/// Grey from colour with the weights the `image` crate uses for files (Rec. 709 luma), so arrays and folders agree.
const LUMA: [f64; 3] = [0.2126, 0.7152, 0.0722];

/// Centre crop to a square and bilinear resize to size x size, and grey <-> colour, of [N, C, H, W] uint8 pixels.
/// Without a conversion or resize the result is a view of `pixels` (a memory map stays a memory map).
fn apply_layout(pixels: Tensor, layout: Layout) -> Result<Tensor> {
    let mut x = pixels;
    if let Some(c) = layout.channels {
        x = match (x.size()[1], c) {
            (a, b) if a == b => x,
            (3, 1) => {
                let f = x.to_kind(Kind::Float);
                (f.select(1, 0) * LUMA[0] + f.select(1, 1) * LUMA[1] + f.select(1, 2) * LUMA[2]).round().unsqueeze(1).to_kind(Kind::Uint8)
            }
            (1, 3) => x.expand([-1, 3, -1, -1], false),
            (_, c) => bail!("data.channels must be 1 (grey) or 3 (colour), got {c}"),
        };
    }
    if let Some(s) = layout.size {
        let (h, w) = (x.size()[2], x.size()[3]);
        let side = h.min(w);
        let x0 = x.narrow(2, (h - side) / 2, side).narrow(3, (w - side) / 2, side);
        x = if side == s { x0 } else { x0.to_kind(Kind::Float).upsample_bilinear2d([s, s], false, None, None).round().clamp(0.0, 255.0).to_kind(Kind::Uint8) };
    }
    Ok(x)
}

/// An .npy file of uint8 images, or an .npz archive holding them as `x` / `images` / `arr_0` with optional labels
/// as `y` / `labels` / `arr_1`.
pub fn array(path: &Path, layout: Layout) -> Result<Images> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let (pixels, labels) = match ext.as_deref() {
        Some("npy") => {
            let (offset, shape, len) = npy_header(path)?;
            let data = map_file(path, len)?.narrow(0, offset as i64, len as i64 - offset as i64);
            (array_pixels(data, &shape, &path.display().to_string())?, None)
        }
        Some("npz") => npz(path)?,
        _ => bail!("{}: image arrays are .npy or .npz files", path.display()),
    };
    if let Some(l) = &labels {
        ensure!(l.len() as i64 == pixels.size()[0], "{}: {} labels for {} images", path.display(), l.len(), pixels.size()[0]);
    }
    Ok(Images { pixels: apply_layout(pixels, layout)?, labels, classes: None })
}

/// The data offset, shape and file length of a uint8 .npy file, read from its first 64 KiB (headers are shorter).
fn npy_header(path: &Path) -> Result<(usize, Vec<i64>, u64)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let len = file.metadata().with_context(|| format!("{}: cannot read", path.display()))?.len();
    let mut head = vec![0u8; len.min(1 << 16) as usize];
    file.read_exact(&mut head).with_context(|| format!("{}: cannot read", path.display()))?;
    let (offset, shape) = super::npy::header_u8(&head, len as usize).with_context(|| format!("{}: not an image array", path.display()))?;
    ensure!(offset < len as usize, "{}: the array holds no images (shape {shape:?})", path.display());
    Ok((offset, shape, len))
}

/// The images (and labels) of an .npz archive.
fn npz(path: &Path) -> Result<(Tensor, Option<Vec<i64>>)> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut zip = zip::ZipArchive::new(file).with_context(|| format!("{}: not an .npz (zip) archive", path.display()))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let pick = |keys: &[&str]| keys.iter().find_map(|k| names.iter().find(|n| n.as_str() == format!("{k}.npy")).cloned());
    let Some(images) = pick(&["x", "images", "arr_0"]) else {
        bail!("{}: no image array in the archive (expected x, images or arr_0; it holds {})", path.display(), names.join(", "))
    };
    let read = |zip: &mut zip::ZipArchive<std::fs::File>, name: &str| -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        zip.by_name(name).with_context(|| format!("{}: cannot read {name}", path.display()))?.read_to_end(&mut bytes).with_context(|| format!("{}: {name} is damaged", path.display()))?;
        Ok(bytes)
    };
    let bytes = read(&mut zip, &images)?;
    let (data, shape) = super::npy::decode_u8(&bytes).with_context(|| format!("{}: {images} is not an image array", path.display()))?;
    let pixels = array_pixels(Tensor::from_slice(&data), &shape, &format!("{}: {images}", path.display()))?;
    let labels = match pick(&["y", "labels", "arr_1"]) {
        Some(name) => {
            let t = super::npy::decode(&read(&mut zip, &name)?).with_context(|| format!("{}: {name} is not a label array", path.display()))?;
            ensure!(t.dim() == 1, "{}: labels {name} must be one per image, got shape {:?}", path.display(), t.size());
            let v: Vec<f64> = Vec::try_from(&t).with_context(|| format!("{}: labels {name}", path.display()))?;
            ensure!(v.iter().all(|x| *x >= 0.0 && x.fract() == 0.0), "{}: labels {name} must be integers 0..K-1", path.display());
            Some(v.into_iter().map(|x| x as i64).collect())
        }
        None => None,
    };
    Ok((pixels, labels))
}

/// Whether `path` names images for `data.path`: a folder, an .npz archive, or an .npy file of uint8 values.
pub fn is_image_source(path: &Path) -> bool {
    if path.is_dir() {
        return true;
    }
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("npz") => true,
        Some("npy") => {
            let mut head = vec![0u8; 4096];
            let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
            head.truncate(n);
            super::npy::is_u8(&head)
        }
        _ => false,
    }
}

/// The images `path` names (a folder or an array file), in the given layout.
pub fn load(path: &Path, layout: Layout) -> Result<Images> {
    if path.is_dir() {
        return folder(path, layout);
    }
    array(path, layout)
}

/// The centre `side` x `side` crop of [N, C, H, W] images (CIFAR-10 at 16x16: the CPU profile's small colour run).
pub fn centre_crop(images: Images, side: i64) -> Result<Images> {
    let (h, w) = (images.pixels.size()[2], images.pixels.size()[3]);
    ensure!(side >= 2 && side <= h.min(w), "data.image_size = {side}: a centre crop of {h}x{w} images is at most {} (and at least 2)", h.min(w));
    let pixels = images.pixels.narrow(2, (h - side) / 2, side).narrow(3, (w - side) / 2, side);
    Ok(Images { pixels, ..images })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A .npy file's bytes for uint8 (`|u1`) or float32 (`<f4`) data of `shape`.
    fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        h.push_str(&" ".repeat((64 - (10 + h.len() + 1) % 64) % 64));
        h.push('\n');
        let mut b = b"\x93NUMPY".to_vec();
        b.extend([1, 0]);
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(data);
        b
    }

    fn save_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
    }

    #[test]
    fn centre_crop_keeps_the_middle_pixels_and_refuses_a_larger_side() {
        let pixels = Tensor::arange(2 * 3 * 6 * 6, (Kind::Int64, tch::Device::Cpu)).reshape([2, 3, 6, 6]);
        let images = || Images { pixels: pixels.shallow_clone(), labels: Some(vec![1, 2]), classes: None };
        let c = centre_crop(images(), 2).unwrap();
        assert_eq!(c.pixels.size(), vec![2, 3, 2, 2]);
        // Rows 2..4 and columns 2..4 of every channel: pixel (2, 2) of channel 1 of image 1 is 108 + 36 + 14.
        assert_eq!(c.pixels.int64_value(&[1, 1, 0, 0]), 108 + 36 + 2 * 6 + 2);
        assert_eq!(c.pixels.int64_value(&[0, 2, 1, 1]), 72 + 3 * 6 + 3);
        assert_eq!(c.labels, Some(vec![1, 2]));
        let e = centre_crop(images(), 7).unwrap_err().to_string();
        assert!(e.contains("data.image_size = 7") && e.contains("6x6"), "{e}");
    }

    #[test]
    fn cifar_batches_decode_by_plane_and_damaged_ones_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        // Two records: label 3 with R = 10, G = 20, B = 30 everywhere; label 9 with pixel i of R = i mod 256.
        let mut bytes = vec![3u8];
        for v in [10u8, 20, 30] {
            bytes.extend(std::iter::repeat(v).take(1024));
        }
        bytes.push(9);
        bytes.extend((0..3072).map(|i| (i % 256) as u8));
        let f = tmp.path().join("data_batch_1.bin");
        std::fs::write(&f, &bytes).unwrap();
        let imgs = cifar_file(&f).unwrap();
        assert_eq!(imgs.pixels.size(), [2, 3, 32, 32]);
        assert_eq!(imgs.labels, Some(vec![3, 9]));
        let mean = |i: i64, c: i64| imgs.pixels.get(i).get(c).mean(Kind::Double).double_value(&[]);
        assert_eq!((mean(0, 0), mean(0, 1), mean(0, 2)), (10.0, 20.0, 30.0), "R, G, B planes in that order");
        assert_eq!(imgs.pixels.get(1).get(0).get(0).get(5).double_value(&[]), 5.0, "row-major within a plane");
        std::fs::write(&f, &bytes[..bytes.len() - 7]).unwrap();
        let e = format!("{:#}", cifar_file(&f).unwrap_err());
        assert!(e.contains("truncated record") && e.contains("data_batch_1.bin"), "{e}");
        bytes[0] = 12;
        std::fs::write(&f, &bytes).unwrap();
        let e = format!("{:#}", cifar_file(&f).unwrap_err());
        assert!(e.contains("label 12"), "{e}");
        let e = format!("{:#}", cifar10(tmp.path()).unwrap_err());
        assert!(e.contains("data_batch_2.bin") && e.contains("test_batch.bin") && e.contains("make data CIFAR10="), "{e}");
    }

    #[test]
    fn a_folder_of_class_folders_gives_labels_and_every_bad_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("imgs");
        for (k, class) in ["cats", "dogs"].iter().enumerate() {
            std::fs::create_dir_all(root.join(class)).unwrap();
            for i in 0..3u8 {
                save_png(&root.join(class).join(format!("{i}.png")), 8, 6, [40 * (k as u8 + 1), i, 200]);
            }
        }
        let imgs = folder(&root, Layout::default()).unwrap();
        assert_eq!(imgs.pixels.size(), [6, 3, 6, 8], "[N, C, H, W] of 8 wide, 6 high colour images");
        assert_eq!(imgs.labels, Some(vec![0, 0, 0, 1, 1, 1]));
        assert_eq!(imgs.classes, Some(vec!["cats".to_string(), "dogs".to_string()]));
        assert_eq!(imgs.pixels.get(3).get(0).mean(Kind::Double).double_value(&[]), 80.0, "dogs' red value");
        assert_eq!(imgs.pixels.get(4).get(1).mean(Kind::Double).double_value(&[]), 1.0, "green = file index");
        // Resize after a centre crop, and grey.
        let small = folder(&root, Layout { size: Some(4), channels: Some(1) }).unwrap();
        assert_eq!(small.pixels.size(), [6, 1, 4, 4]);
        let grey = LUMA[0] * 40.0 + LUMA[2] * 200.0;
        assert!((small.pixels.get(0).mean(Kind::Double).double_value(&[]) - grey).abs() <= 1.0);
        // Mixed sizes without data.image_size.
        save_png(&root.join("dogs").join("big.png"), 10, 10, [1, 2, 3]);
        let e = format!("{:#}", folder(&root, Layout::default()).unwrap_err());
        assert!(e.contains("mixed sizes") && e.contains("big.png") && e.contains("data.image_size"), "{e}");
        assert_eq!(folder(&root, Layout { size: Some(4), channels: None }).unwrap().pixels.size(), [7, 3, 4, 4]);
        // A damaged PNG, a file that is no image, files beside class folders, an empty folder.
        std::fs::write(root.join("dogs").join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let e = format!("{:#}", folder(&root, Layout { size: Some(4), channels: None }).unwrap_err());
        assert!(e.contains("broken.png") && e.contains("not an image"), "{e}");
        std::fs::remove_file(root.join("dogs").join("broken.png")).unwrap();
        std::fs::File::create(root.join("cats").join("notes.txt")).unwrap().write_all(b"hello").unwrap();
        let e = format!("{:#}", folder(&root, Layout { size: Some(4), channels: None }).unwrap_err());
        assert!(e.contains("notes.txt") && e.contains("not a PNG or JPEG"), "{e}");
        std::fs::remove_file(root.join("cats").join("notes.txt")).unwrap();
        save_png(&root.join("stray.png"), 8, 6, [0, 0, 0]);
        let e = format!("{:#}", folder(&root, Layout::default()).unwrap_err());
        assert!(e.contains("mixes image files") && e.contains("stray.png"), "{e}");
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(format!("{:#}", folder(&empty, Layout::default()).unwrap_err()).contains("empty"));
        // A JPEG decodes too (lossy: within a few levels).
        let flat = tmp.path().join("flat");
        std::fs::create_dir_all(&flat).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([100, 150, 200])).save(flat.join("a.jpg")).unwrap();
        let j = folder(&flat, Layout::default()).unwrap();
        assert!(j.labels.is_none() && (j.pixels.mean(Kind::Double).double_value(&[]) - 150.0).abs() < 3.0);
    }

    #[test]
    fn uint8_arrays_in_either_layout_and_npz_labels_are_read_and_bad_arrays_named() {
        let tmp = tempfile::tempdir().unwrap();
        // [N, H, W, C] = [2, 2, 3, 3] with value = 100 c + 10 h + w (+ 50 for image 1).
        let mut data = Vec::new();
        for n in 0..2u8 {
            for h in 0..2u8 {
                for w in 0..3u8 {
                    for c in 0..3u8 {
                        data.push(100 * (c / 2) + 10 * h + w + 50 * n + c);
                    }
                }
            }
        }
        let nhwc = tmp.path().join("x.npy");
        std::fs::write(&nhwc, npy_bytes("|u1", &[2, 2, 3, 3], &data)).unwrap();
        assert!(is_image_source(&nhwc));
        let a = array(&nhwc, Layout::default()).unwrap();
        assert_eq!(a.pixels.size(), [2, 3, 2, 3], "channels-last becomes [N, C, H, W]");
        let v = |t: &Tensor, i: [i64; 4]| t.get(i[0]).get(i[1]).get(i[2]).get(i[3]).double_value(&[]);
        assert_eq!(v(&a.pixels, [1, 2, 1, 2]), data[(((1 * 2 + 1) * 3 + 2) * 3 + 2) as usize] as f64);
        // The same values saved channels-first read back equal.
        let nchw: Vec<u8> = Vec::try_from(a.pixels.to_kind(Kind::Uint8).flatten(0, -1)).unwrap();
        let first = tmp.path().join("c.npy");
        std::fs::write(&first, npy_bytes("|u1", &[2, 3, 2, 3], &nchw)).unwrap();
        assert!(array(&first, Layout::default()).unwrap().pixels.equal(&a.pixels));
        // Floats are refused by dtype; an odd shape by shape; a truncated file as truncated.
        let floats = tmp.path().join("f.npy");
        std::fs::write(&floats, npy_bytes("<f4", &[1, 2, 2], &[0u8; 16])).unwrap();
        assert!(!is_image_source(&floats), "float arrays are points, not images");
        let e = format!("{:#}", array(&floats, Layout::default()).unwrap_err());
        assert!(e.contains("uint8") && e.contains("f.npy"), "{e}");
        let odd = tmp.path().join("odd.npy");
        std::fs::write(&odd, npy_bytes("|u1", &[2, 5, 4, 4], &[0u8; 160])).unwrap();
        assert!(format!("{:#}", array(&odd, Layout::default()).unwrap_err()).contains("C = 1 or 3"));
        let mut cut = npy_bytes("|u1", &[2, 2, 3, 3], &data);
        cut.truncate(cut.len() - 5);
        std::fs::write(&nhwc, cut).unwrap();
        assert!(format!("{:#}", array(&nhwc, Layout::default()).unwrap_err()).contains("truncated"));
        // A .npy is memory-mapped, not read: bytes rewritten in place on disk show through the loaded pixels.
        let mapped = tmp.path().join("m.npy");
        let file_bytes = npy_bytes("|u1", &[2, 3, 2, 3], &nchw);
        std::fs::write(&mapped, &file_bytes).unwrap();
        let m = array(&mapped, Layout::default()).unwrap();
        assert_eq!(m.pixels.kind(), Kind::Uint8);
        let last = file_bytes.len() as u64 - 1;
        let mut f = std::fs::OpenOptions::new().write(true).open(&mapped).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(last)).unwrap();
        f.write_all(&[201]).unwrap();
        drop(f);
        assert_eq!(m.pixels.int64_value(&[1, 2, 1, 2]), 201, "the pixels are a view of the file's pages");
        // An .npz with images and labels (numpy's savez names: x, y).
        let npz = tmp.path().join("set.npz");
        let mut zw = zip::ZipWriter::new(std::fs::File::create(&npz).unwrap());
        let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zw.start_file("x.npy", opts).unwrap();
        zw.write_all(&npy_bytes("|u1", &[2, 3, 2, 3], &nchw)).unwrap();
        zw.start_file("y.npy", opts).unwrap();
        zw.write_all(&npy_bytes("<f4", &[2], &[0, 0, 0, 0, 0, 0, 128, 63])).unwrap();
        zw.finish().unwrap();
        let z = array(&npz, Layout { size: None, channels: Some(1) }).unwrap();
        assert_eq!((z.pixels.size(), z.labels), (vec![2, 1, 2, 3], Some(vec![0, 1])));
        std::fs::write(&npz, b"PK\x03\x04 damaged").unwrap();
        assert!(format!("{:#}", array(&npz, Layout::default()).unwrap_err()).contains("set.npz"));
    }
}
