//! Labelled images for the classifier: MNIST-like IDX files (through `data::idx`) and CIFAR-10's batches (through
//! `data::images`), read here rather than through `data::Dataset`, whose contexts are optional.
use super::net::MNIST_SHAPE;
use crate::data::idx::{self, Split};
use crate::data::images;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The datasets a classifier can be trained on.
pub const DATASETS: [&str; 3] = ["mnist", "fashion-mnist", "cifar10"];

/// One split: raw pixel values and class labels, on the CPU.
#[derive(Debug)]
pub struct Labelled {
    /// Pixel values 0..=255, [N, C, H, W]: f32 [N, 1, 28, 28] for MNIST / Fashion-MNIST, uint8 [N, 3, s, s] for
    /// CIFAR-10 (s = 32, or its centre crop).
    pub pixels: Tensor,
    /// Class labels 0..10 as i64, \[N].
    pub labels: Tensor,
}

impl Labelled {
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Errors unless `name` is one of [`DATASETS`].
pub fn check_name(name: &str) -> Result<()> {
    if !DATASETS.contains(&name) {
        bail!("the classifier works on mnist, fashion-mnist or cifar10 images, not `{name}`");
    }
    Ok(())
}

/// The folder holding `name`'s IDX files: `data_dir/name` (as `data.dir` is used), or `data_dir` itself when it
/// already is that folder.
pub fn dataset_dir(data_dir: &Path, name: &str) -> PathBuf {
    let inner = data_dir.join(name);
    if inner.is_dir() {
        inner
    } else {
        data_dir.to_path_buf()
    }
}

/// Loads one split (checking the files' SHA-256 against the known sums) from `dir`, the dataset's own folder.
pub fn load(dir: &Path, split: Split) -> Result<Labelled> {
    let set = idx::load_split(dir, split, true).with_context(|| format!("loading {split:?} images and labels from {}", dir.display()))?;
    let side = MNIST_SHAPE[1];
    if set.rows as i64 != side || set.cols as i64 != side {
        bail!("{}: {}x{} images, the classifier takes {side}x{side}", dir.display(), set.rows, set.cols);
    }
    let labels = Tensor::from_slice(&set.labels).to_kind(Kind::Int64);
    Ok(Labelled { pixels: idx::pixels(&set), labels })
}

/// The training and test splits of `name` from `dir`, the dataset's own folder (`data/mnist`, `data/cifar10`), with
/// CIFAR-10 centre-cropped to `crop` x `crop` when given (the side of a CPU colour run); MNIST-like sets are 28x28.
pub fn load_splits(dir: &Path, name: &str, crop: Option<i64>) -> Result<(Labelled, Labelled)> {
    check_name(name)?;
    if name != "cifar10" {
        if let Some(s) = crop.filter(|&s| s != MNIST_SHAPE[1]) {
            bail!("data.image_size = {s}: {name} images are {0}x{0}; only cifar10 is cropped", MNIST_SHAPE[1]);
        }
        return Ok((load(dir, Split::Train)?, load(dir, Split::Test)?));
    }
    let (train, test) = images::cifar10_at(dir, crop)?;
    let labelled = |set: images::Images| Labelled { labels: Tensor::from_slice(&set.labels.unwrap_or_default()), pixels: set.pixels };
    Ok((labelled(train), labelled(test)))
}

/// Images at the centre of their dequantization bins, (pixel + 1/2)/256: a deterministic stand-in for
/// (pixel + u)/256 that draws nothing from torch's global random stream.
pub fn bin_centres(pixels: &Tensor) -> Tensor {
    (pixels.to_kind(Kind::Float) + 0.5) / 256.0
}

/// `k` indices spread evenly over 0..n (i·n/k), so a subset covers the whole file without drawing random numbers.
pub fn spread(n: i64, k: i64) -> Tensor {
    let k = k.clamp(0, n);
    let idx: Vec<i64> = (0..k).map(|i| i * n / k.max(1)).collect();
    Tensor::from_slice(&idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_indices_are_distinct_and_cover_the_range() {
        let i: Vec<i64> = Vec::try_from(spread(10, 4)).unwrap();
        assert_eq!(i, vec![0, 2, 5, 7]);
        assert_eq!(spread(5, 9).size(), vec![5], "never more than n");
        assert_eq!(spread(5, 0).size(), vec![0]);
    }

    #[test]
    fn loads_labelled_mnist_test_split() {
        let dir = dataset_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data"), "mnist");
        let Ok(test) = load(&dir, Split::Test) else {
            eprintln!("skipped: MNIST not found in {} (run `make data`)", dir.display());
            return;
        };
        assert_eq!((test.pixels.size(), test.len()), (vec![10_000, 1, 28, 28], 10_000));
        let counts: Vec<i64> = Vec::try_from(test.labels.bincount::<Tensor>(None, 10)).unwrap();
        assert_eq!(counts.iter().sum::<i64>(), 10_000);
        assert!(counts.iter().all(|&c| (850..=1150).contains(&c)), "MNIST test classes are roughly balanced: {counts:?}");
        assert!(check_name("svhn").unwrap_err().to_string().contains("mnist, fashion-mnist or cifar10"));
        assert!(load_splits(&dir, "mnist", Some(16)).unwrap_err().to_string().contains("only cifar10 is cropped"));
    }
}
