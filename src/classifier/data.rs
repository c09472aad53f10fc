//! Labelled MNIST-like images for the classifier. `data::Dataset` carries no labels (the generative models do not
//! use them), so the classifier reads the IDX files itself through `data::idx`.
use super::net::SIDE;
use crate::data::idx::{self, Split};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The datasets a classifier can be trained on.
pub const DATASETS: [&str; 2] = ["mnist", "fashion-mnist"];

/// One split: raw pixel values and class labels, on the CPU.
#[derive(Debug)]
pub struct Labelled {
    /// Pixel values 0..=255 as f32, [N, 1, 28, 28].
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
        bail!("the classifier works on {} images, not `{name}`", DATASETS.join(" or "));
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
    if set.rows as i64 != SIDE || set.cols as i64 != SIDE {
        bail!("{}: {}x{} images, the classifier takes {SIDE}x{SIDE}", dir.display(), set.rows, set.cols);
    }
    let labels = Tensor::from_slice(&set.labels).to_kind(Kind::Int64);
    Ok(Labelled { pixels: idx::pixels(&set), labels })
}

/// Images at the centre of their dequantization bins, (pixel + 1/2)/256: a deterministic stand-in for
/// (pixel + u)/256 that draws nothing from torch's global random stream.
pub fn bin_centres(pixels: &Tensor) -> Tensor {
    (pixels + 0.5) / 256.0
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
        assert!(check_name("cifar10").unwrap_err().to_string().contains("mnist or fashion-mnist"));
    }
}
