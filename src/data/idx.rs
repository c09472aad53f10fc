//! IDX files (the MNIST file format), raw or gzip-compressed, and MNIST-like image sets.
//!
//! An IDX file is a 4-byte magic `00 00 TT NN` (element type `TT`, `NN` dimensions), then `NN`
//! big-endian `u32` dimension sizes, then the row-major payload. Only unsigned-byte payloads
//! (`TT = 0x08`) are supported, which covers MNIST and Fashion-MNIST. Every error names the file.

use anyhow::{anyhow, bail, ensure, Context, Result};
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// IDX element type code for unsigned bytes.
const UBYTE: u8 = 0x08;

/// SHA-256 of the uncompressed IDX files: (file name, MNIST, Fashion-MNIST).
const KNOWN_SUMS: [(&str, &str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// A decoded IDX file: dims (e.g. `[60000, 28, 28]`) and the raw u8 payload (row-major).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// Size of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The payload, `dims.iter().product()` bytes in row-major order.
    pub data: Vec<u8>,
}

/// Read an IDX file, gzip-compressed (detected by the 1f 8b magic, not the name) or raw.
/// Only unsigned-byte (0x08) payloads.
pub fn read_idx(path: &Path) -> Result<Idx> {
    parse_idx(path, read_decompressed(path)?)
}

/// Which split of an MNIST-like folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The 60000-example training split (`train-*` files).
    Train,
    /// The 10000-example test split (`t10k-*` files).
    Test,
}

impl Split {
    /// The file-name prefix of this split: `train` or `t10k`.
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Images `[N, rows, cols]` as u8 plus labels `[N]` from `dir` holding the four standard files
/// (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-...`); checks counts
/// match, labels < 10, and (when `verify` is true) the SHA-256 of the decompressed payload against
/// the known MNIST and Fashion-MNIST sums (a file whose sum matches neither dataset's expected sum
/// for that file name is an error naming the file, expected and got).
#[derive(Clone)]
pub struct ImageSet {
    /// Pixels, `n * rows * cols` bytes, row-major, 0 = background.
    pub images: Vec<u8>,
    /// One class label in `0..10` per image.
    pub labels: Vec<u8>,
    /// Number of images.
    pub n: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

/// Load one split of an MNIST-like folder; see [`ImageSet`] for the files and the checks made.
pub fn load_split(dir: &Path, split: Split, verify: bool) -> Result<ImageSet> {
    let prefix = split.prefix();
    let (images_path, images) = load_checked(dir, &format!("{prefix}-images-idx3-ubyte"), verify)?;
    let (labels_path, labels) = load_checked(dir, &format!("{prefix}-labels-idx1-ubyte"), verify)?;
    let [n, rows, cols] = expect_dims::<3>(&images_path, &images.dims, "[N, rows, cols]")?;
    let [n_labels] = expect_dims::<1>(&labels_path, &labels.dims, "[N]")?;
    ensure!(
        n == n_labels,
        "{}: {n} images, but {} has {n_labels} labels",
        images_path.display(),
        labels_path.display()
    );
    check_labels(&labels_path, &labels.data)?;
    Ok(ImageSet {
        images: images.data,
        labels: labels.data,
        n,
        rows,
        cols,
    })
}

/// The same images as a float tensor `[N, 1, rows, cols]` with values (pixel + u)/256,
/// u ~ U(0,1) drawn from torch's RNG (uniform dequantization; density on `[0,1]^D`, so
/// bits/dim = nll/(D ln 2) + 8), or pixel/255 when `dequantize` is false.
pub fn to_tensor(set: &ImageSet, dequantize: bool) -> Tensor {
    let pixels = pixels(set);
    if dequantize {
        super::dequantize(&pixels)
    } else {
        pixels / 255.0
    }
}

/// The raw pixel values 0..=255 as an f32 tensor [N, 1, rows, cols].
pub fn pixels(set: &ImageSet) -> Tensor {
    let shape = [set.n, 1, set.rows, set.cols].map(|d| d as i64);
    Tensor::from_slice(&set.images).view(shape).to_kind(Kind::Float)
}

/// Read a whole file, decompressing it when it starts with the gzip magic.
fn read_decompressed(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => anyhow!("{}: missing (run `make data`)", path.display()),
        _ => anyhow::Error::new(e).context(format!("{}: cannot read", path.display())),
    })?;
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() * 4);
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .with_context(|| format!("{}: not a valid gzip stream", path.display()))?;
    Ok(out)
}

/// Decode the IDX header of `bytes` (the decompressed content of `path`) and keep the payload.
fn parse_idx(path: &Path, mut bytes: Vec<u8>) -> Result<Idx> {
    let shown = path.display();
    ensure!(
        bytes.len() >= 4,
        "{shown}: truncated: {} bytes, too short for the IDX magic",
        bytes.len()
    );
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let ndims = usize::from(bytes[3]);
    if bytes[..2] != [0, 0] || ndims == 0 {
        bail!("{shown}: bad IDX magic 0x{magic:08x} (expected 0x00000803 or 0x00000801)");
    }
    ensure!(
        bytes[2] == UBYTE,
        "{shown}: unsupported IDX element type 0x{:02x} in magic 0x{magic:08x} \
         (only unsigned byte 0x08)",
        bytes[2]
    );
    let header = 4 + 4 * ndims;
    ensure!(
        bytes.len() >= header,
        "{shown}: truncated: header of {ndims} dims needs {header} bytes, file has {}",
        bytes.len()
    );
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = payload_len(path, &dims)?;
    let got = bytes.len() - header;
    ensure!(
        got >= expected,
        "{shown}: truncated: header says {expected} bytes of data, file has {got}"
    );
    ensure!(
        got == expected,
        "{shown}: header says {expected} bytes of data, file has {got} (trailing bytes)"
    );
    bytes.drain(..header);
    Ok(Idx { dims, data: bytes })
}

/// The number of payload bytes `dims` call for, failing on overflow.
fn payload_len(path: &Path, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| anyhow!("{}: IDX dims {dims:?} overflow", path.display()))
}

/// Locate `name.gz` (preferred) or `name` in `dir`, read it, and verify its SHA-256 if asked.
fn load_checked(dir: &Path, name: &str, verify: bool) -> Result<(PathBuf, Idx)> {
    let path = locate(dir, name);
    let bytes = read_decompressed(&path)?;
    if verify {
        verify_sum(&path, name, &bytes)?;
    }
    let idx = parse_idx(&path, bytes)?;
    Ok((path, idx))
}

/// `dir/name.gz` if it exists, else `dir/name` if that exists, else `dir/name.gz` (reported
/// as missing).
fn locate(dir: &Path, name: &str) -> PathBuf {
    let gz = dir.join(format!("{name}.gz"));
    let raw = dir.join(name);
    if !gz.exists() && raw.exists() {
        raw
    } else {
        gz
    }
}

/// Check the SHA-256 of decompressed `bytes` against the MNIST and Fashion-MNIST sums for `name`.
fn verify_sum(path: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let (_, mnist, fashion) = KNOWN_SUMS
        .iter()
        .find(|(file, _, _)| *file == name)
        .ok_or_else(|| anyhow!("{}: no known SHA-256 for {name}", path.display()))?;
    let got = hex(&Sha256::digest(bytes));
    ensure!(
        got == *mnist || got == *fashion,
        "{}: SHA-256 mismatch: expected {mnist} (MNIST) or {fashion} (Fashion-MNIST), got {got}",
        path.display()
    );
    Ok(())
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `dims` as an array of exactly `N` sizes, or an error naming the file and the expected layout.
fn expect_dims<const N: usize>(path: &Path, dims: &[usize], layout: &str) -> Result<[usize; N]> {
    dims.try_into().map_err(|_| {
        anyhow!(
            "{}: expected {N} IDX dims {layout}, got {dims:?}",
            path.display()
        )
    })
}

/// Fail on the first label outside `0..10`.
fn check_labels(path: &Path, labels: &[u8]) -> Result<()> {
    match labels.iter().position(|&l| l >= 10) {
        Some(i) => bail!(
            "{}: label {} at index {i} is not in 0..10",
            path.display(),
            labels[i]
        ),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;
    use tempfile::TempDir;

    /// Encode an unsigned-byte IDX file.
    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, UBYTE, dims.len() as u8];
        dims.iter()
            .for_each(|d| out.extend_from_slice(&d.to_be_bytes()));
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The full error chain as one string.
    fn err_text<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// A tiny MNIST-like split: 3 images of 2x2 and their labels.
    fn tiny_split(dir: &TempDir, labels: &[u8]) {
        let pixels: Vec<u8> = (0..12).map(|i| i * 20).collect();
        write(
            dir,
            "train-images-idx3-ubyte.gz",
            &gzip(&idx_bytes(&[3, 2, 2], &pixels)),
        );
        write(
            dir,
            "train-labels-idx1-ubyte",
            &idx_bytes(&[labels.len() as u32], labels),
        );
    }

    #[test]
    fn reads_raw_and_gzip_by_magic_not_name() {
        let dir = TempDir::new().unwrap();
        let raw = idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let want = Idx {
            dims: vec![2, 3],
            data: vec![1, 2, 3, 4, 5, 6],
        };
        assert_eq!(read_idx(&write(&dir, "raw.gz", &raw)).unwrap(), want);
        assert_eq!(
            read_idx(&write(&dir, "packed.idx", &gzip(&raw))).unwrap(),
            want
        );
    }

    #[test]
    fn truncated_payload_and_header() {
        let dir = TempDir::new().unwrap();
        let short = idx_bytes(&[10, 28, 28], &[0; 1000]);
        let text = err_text(read_idx(&write(&dir, "short", &short)));
        assert!(
            text.contains("truncated: header says 7840 bytes of data, file has 1000"),
            "{text}"
        );
        assert!(text.contains("short"), "{text}");
        let text = err_text(read_idx(&write(&dir, "hdr", &[0, 0, 8, 3, 0, 0])));
        assert!(text.contains("truncated"), "{text}");
    }

    #[test]
    fn trailing_bytes_rejected() {
        let dir = TempDir::new().unwrap();
        let text = err_text(read_idx(&write(&dir, "long", &idx_bytes(&[2], &[1, 2, 3]))));
        assert!(text.contains("trailing"), "{text}");
    }

    #[test]
    fn bad_magic_and_unsupported_type() {
        let dir = TempDir::new().unwrap();
        let text = err_text(read_idx(&write(
            &dir,
            "bad",
            &[0x12, 0x34, 0x56, 0x78, 0, 0],
        )));
        assert!(text.contains("bad IDX magic 0x12345678"), "{text}");
        let text = err_text(read_idx(&write(
            &dir,
            "float",
            &[0, 0, 0x0d, 1, 0, 0, 0, 0],
        )));
        assert!(
            text.contains("magic 0x00000d01") && text.contains("0x08"),
            "{text}"
        );
    }

    #[test]
    fn missing_file_says_make_data() {
        let dir = TempDir::new().unwrap();
        let text = err_text(read_idx(&dir.path().join("nope.gz")));
        assert!(
            text.contains("nope.gz: missing (run `make data`)"),
            "{text}"
        );
        let text = err_text(load_split(dir.path(), Split::Test, false));
        assert!(
            text.contains("t10k-images-idx3-ubyte.gz: missing") && text.contains("make data"),
            "{text}"
        );
    }

    #[test]
    fn corrupt_gzip_is_clear() {
        let dir = TempDir::new().unwrap();
        let mut bytes = gzip(&idx_bytes(&[4], &[1, 2, 3, 4]));
        bytes.truncate(bytes.len() / 2);
        let text = err_text(read_idx(&write(&dir, "cut.gz", &bytes)));
        assert!(text.contains("cut.gz: not a valid gzip stream"), "{text}");
        let text = err_text(read_idx(&write(
            &dir,
            "junk.gz",
            &[0x1f, 0x8b, 0xff, 0xff, 0xff],
        )));
        assert!(text.contains("junk.gz: not a valid gzip stream"), "{text}");
    }

    #[test]
    fn load_split_checks_counts_labels_and_sums() {
        let dir = TempDir::new().unwrap();
        tiny_split(&dir, &[0, 9, 4]);
        let set = load_split(dir.path(), Split::Train, false).unwrap();
        assert_eq!((set.n, set.rows, set.cols), (3, 2, 2));
        assert_eq!((set.images.len(), set.labels), (12, vec![0, 9, 4]));
        let text = err_text(load_split(dir.path(), Split::Train, true));
        assert!(
            text.contains("train-images-idx3-ubyte.gz: SHA-256 mismatch: expected"),
            "{text}"
        );
        tiny_split(&dir, &[0, 10, 4]);
        let text = err_text(load_split(dir.path(), Split::Train, false));
        assert!(text.contains("label 10 at index 1"), "{text}");
        tiny_split(&dir, &[0, 1]);
        let text = err_text(load_split(dir.path(), Split::Train, false));
        assert!(
            text.contains("3 images") && text.contains("2 labels"),
            "{text}"
        );
    }

    #[test]
    fn to_tensor_scales_and_dequantizes() {
        let set = ImageSet {
            images: vec![0, 128, 255, 7],
            labels: vec![1],
            n: 1,
            rows: 2,
            cols: 2,
        };
        let pixels = Tensor::from_slice(&[0f32, 128., 255., 7.]).view([1, 1, 2, 2]);
        let plain = to_tensor(&set, false);
        assert_eq!(plain.size(), [1, 1, 2, 2]);
        assert!(plain.allclose(&(&pixels / 255.0), 1e-6, 1e-6, false));
        let u = to_tensor(&set, true) * 256.0 - &pixels;
        assert!(u.min().double_value(&[]) >= 0.0 && u.max().double_value(&[]) < 1.0);
    }

    /// The real-data folder: `$RELAXFLOW_DATA_DIR`, else `data/` in this crate.
    fn data_dir() -> PathBuf {
        std::env::var_os("RELAXFLOW_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data")))
    }

    /// Load a real split with verification, failing loudly (with the `make data` hint) if absent.
    fn real_split(dataset: &str, split: Split) -> ImageSet {
        load_split(&data_dir().join(dataset), split, true).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn label_counts(labels: &[u8]) -> [usize; 10] {
        let mut counts = [0; 10];
        labels.iter().for_each(|&l| counts[usize::from(l)] += 1);
        counts
    }

    #[test]
    fn mnist_label_counts() {
        let set = real_split("mnist", Split::Train);
        assert_eq!((set.n, set.rows, set.cols), (60000, 28, 28));
        assert_eq!(set.images.len(), 60000 * 28 * 28);
        let want = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
        assert_eq!(label_counts(&set.labels), want);
    }

    #[test]
    fn fashion_mnist_test_split() {
        let set = real_split("fashion-mnist", Split::Test);
        assert_eq!((set.n, set.rows, set.cols), (10000, 28, 28));
        assert_eq!(label_counts(&set.labels), [1000; 10]);
    }
}
