//! Sample quality of image models, measured with relaxflow's own classifier (Inception weights are not available
//! offline, so this is not FID): the Fréchet distance between the classifier's penultimate features of model
//! samples and of test images, the same distance between test and training images at the same n (its floor: the
//! estimator is biased upwards for small n, so a perfect sampler shows about this much), and how the samples spread
//! over the 10 classes.
//!
//! Reference images are taken at the centres of their dequantization bins, (pixel + 1/2)/256, at indices spread
//! evenly over the test and training files: nothing is drawn from torch's global random stream, so calling this from
//! the runner changes no other result.
use super::data::{self as labelled, bin_centres, spread};
use super::frechet::frechet_distance;
use super::net::{Classifier, Trained, CLASSES};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Images per forward pass of the classifier.
const CHUNK: i64 = 1000;
/// A class is covered when its share of the samples is at least this fraction of its share of the test set.
pub const COVERAGE_FRACTION: f64 = 0.25;

/// Sample quality of image samples, as written into a generative run's summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageQuality {
    /// The classifier run whose features and predictions are used.
    pub classifier_run: PathBuf,
    /// That classifier's accuracy on the test set.
    pub classifier_test_accuracy: f64,
    /// `mnist`, `fashion-mnist` or `cifar10`.
    pub dataset: String,
    /// Samples used.
    pub n: i64,
    /// Sample values that were NaN or infinite (set to 0 before scoring).
    pub n_nonfinite: i64,
    /// Test (and training) images the distances use: min(n, 10000).
    pub n_reference: i64,
    /// Fréchet distance between the features of the samples and of `n_reference` test images.
    pub frechet_distance: f64,
    /// Fréchet distance between `n_reference` test and `n_reference` training images: what a perfect sampler would
    /// show at this n.
    pub frechet_floor: f64,
    /// Samples per predicted (argmax) class, 10 entries.
    pub class_counts: Vec<i64>,
    /// Classes c (out of 10) with count_c / n ≥ COVERAGE_FRACTION × (share of c in the test set).
    pub class_coverage: i64,
    /// Mean over samples of the largest softmax probability.
    pub mean_confidence: f64,
    /// A class-conditional model: the share of samples drawn at class k that the classifier labels k (the samples
    /// are drawn at classes 0, 1, ..., 9, 0, ... in turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditional_class_accuracy: Option<f64>,
    pub note: String,
}

/// The note every [`ImageQuality`] carries.
pub fn note(dataset: &str, feature_dim: i64) -> String {
    format!(
        "Fréchet distance in the feature space of relaxflow's own {dataset} classifier ({feature_dim}-d penultimate layer), \
         not FID: not comparable with published FIDs; compare runs only at the same n and classifier. frechet_floor is \
         the same distance between n test and n training images. class_coverage counts the classes whose share of the \
         samples (by argmax) is at least a quarter of their share of the test set"
    )
}

/// The classifier experiment of a dataset: `mnist-classifier`, `fashion-classifier` or `cifar10-classifier`.
pub fn classifier_experiment(dataset_name: &str) -> Option<&'static str> {
    match dataset_name {
        "mnist" => Some("mnist-classifier"),
        "fashion-mnist" => Some("fashion-classifier"),
        "cifar10" => Some("cifar10-classifier"),
        _ => None,
    }
}

/// The newest finished classifier run (by the time of its summary.json) for `dataset_name` under
/// `<runs>/<mnist|fashion|cifar10>-classifier/` that takes images of `dim` values (a CIFAR-10 classifier of 32x32
/// images does not score a 16x16 crop's samples); None when there is none.
pub fn find_classifier(dataset_name: &str, runs: &Path, dim: i64) -> Option<PathBuf> {
    let base = runs.join(classifier_experiment(dataset_name)?);
    std::fs::read_dir(base)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|run| run.join("checkpoint.pt").is_file())
        .filter(|run| input_dim(run) == Some(dim))
        .filter_map(|run| Some((std::fs::metadata(run.join("summary.json")).ok()?.modified().ok()?, run)))
        .max()
        .map(|(_, run)| run)
}

/// The values per image a finished classifier run takes: the product of its summary's `shape` (784 for runs written
/// before the field existed). Read here, not through the runner's summary type: the runner imports this module.
fn input_dim(run: &Path) -> Option<i64> {
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).ok()?).ok()?;
    match summary.get("shape").and_then(|s| s.as_array()) {
        Some(shape) => shape.iter().map(|d| d.as_i64()).product(),
        None => Some(super::net::MNIST_SHAPE.iter().product()),
    }
}

/// Scores image samples [n, C, H, W] or [n, C·H·W] (the classifier's image shape) with values in [0, 1] (clamped
/// there; NaN and ±inf become 0 and are counted) against `dataset_name`'s test set, read from `data_dir` (the folder
/// holding `mnist/`, `fashion-mnist/` and `cifar10/`, like `data.dir`; or the dataset's own folder) and centre-cropped
/// like the classifier's images, in the feature space of `trained` (a classifier run opened by
/// `runner::classifier_run::open_run`).
pub fn image_quality(samples: &Tensor, dataset_name: &str, data_dir: &Path, trained: &Trained) -> Result<ImageQuality> {
    labelled::check_name(dataset_name)?;
    let size = samples.size();
    let per_sample: i64 = size.iter().skip(1).product();
    let [c, h, w] = trained.net.shape();
    ensure!(
        size.len() >= 2 && per_sample == c * h * w,
        "image quality with the classifier run {} needs samples [n, {c}, {h}, {w}] or [n, {}], got shape {size:?} (train a classifier at the samples' size, e.g. --set data.image_size=SIDE)",
        trained.run.display(),
        c * h * w
    );
    let n = size[0];
    ensure!(n >= 2, "image quality needs at least 2 samples (a covariance), got {n}");
    let device = trained.vs.device();
    if trained.dataset != dataset_name {
        bail!(
            "the classifier run {} was trained on {}, but the samples are {dataset_name} images (use a {} run)",
            trained.run.display(),
            trained.dataset,
            classifier_experiment(dataset_name).unwrap_or("matching")
        );
    }
    let x = samples.to_device(Device::Cpu).to_kind(Kind::Float);
    let finite = x.isfinite();
    let n_nonfinite = finite.logical_not().sum(Kind::Int64).int64_value(&[]);
    let x = x.where_self(&finite, &x.zeros_like()).clamp(0.0, 1.0);

    let dir = labelled::dataset_dir(data_dir, dataset_name);
    let (train, test) = labelled::load_splits(&dir, dataset_name, Some(h))?;
    let n_ref = n.min(test.len());
    let reference = |set: &labelled::Labelled| bin_centres(&set.pixels.index_select(0, &spread(set.len(), n_ref)));
    let net = &trained.net;
    let (sample_features, logits) = features_and_logits(net, &x, device);
    let test_features = features_and_logits(net, &reference(&test), device).0;
    let train_features = features_and_logits(net, &reference(&train), device).0;

    let class_counts: Vec<i64> = Vec::try_from(logits.argmax(-1, false).bincount::<Tensor>(None, CLASSES))?;
    let test_counts: Vec<i64> = Vec::try_from(test.labels.bincount::<Tensor>(None, CLASSES))?;
    Ok(ImageQuality {
        classifier_run: trained.run.clone(),
        classifier_test_accuracy: trained.test_accuracy,
        dataset: dataset_name.to_string(),
        n,
        n_nonfinite,
        n_reference: n_ref,
        frechet_distance: frechet_distance(&sample_features, &test_features),
        frechet_floor: frechet_distance(&test_features, &train_features),
        class_coverage: coverage(&class_counts, &test_counts),
        class_counts,
        mean_confidence: logits.softmax(-1, Kind::Double).amax(-1, false).mean(Kind::Double).double_value(&[]),
        conditional_class_accuracy: None,
        note: note(dataset_name, net.feature_dim()),
    })
}

/// The share of `samples` (as for [`image_quality`]) that `trained` labels (argmax) with their `intended` class.
pub fn class_accuracy(samples: &Tensor, intended: &Tensor, trained: &Trained) -> f64 {
    let x = samples.to_device(Device::Cpu).to_kind(Kind::Float).nan_to_num(0.0, 0.0, 0.0).clamp(0.0, 1.0);
    let x = x.view([x.size()[0], -1]);
    let logits = features_and_logits(&trained.net, &x, trained.vs.device()).1;
    logits.argmax(-1, false).eq_tensor(&intended.to_device(Device::Cpu)).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}

/// Classes whose share of `counts` is at least COVERAGE_FRACTION times their share of `reference_counts`.
pub fn coverage(counts: &[i64], reference_counts: &[i64]) -> i64 {
    let (n, m) = (counts.iter().sum::<i64>().max(1) as f64, reference_counts.iter().sum::<i64>().max(1) as f64);
    counts.iter().zip(reference_counts).filter(|&(&c, &r)| c as f64 / n >= COVERAGE_FRACTION * r as f64 / m).count() as i64
}

/// Features [N, feature_dim] and logits [N, 10] of images in [0, 1], in chunks, on the CPU.
fn features_and_logits(net: &Classifier, x: &Tensor, device: Device) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let (features, logits): (Vec<Tensor>, Vec<Tensor>) = x
            .split(CHUNK, 0)
            .iter()
            .map(|chunk| {
                let f = net.features(&chunk.to_device(device));
                let l = net.head(&f);
                (f.to_device(Device::Cpu), l.to_device(Device::Cpu))
            })
            .unzip();
        (Tensor::cat(&features, 0), Tensor::cat(&logits, 0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::Split;

    #[test]
    fn coverage_counts_classes_with_a_quarter_of_their_share() {
        let balanced = [100; 10];
        assert_eq!(coverage(&[10; 10], &balanced), 10);
        // Shares 0.025 (= a quarter of 0.1) count, 0.02 does not.
        let mut counts = [0i64; 10];
        counts[0] = 1000 - 9 * 25;
        counts[1..].fill(25);
        assert_eq!(coverage(&counts, &balanced), 10);
        counts[1] = 20;
        assert_eq!(coverage(&counts, &balanced), 9);
        assert_eq!(coverage(&[50, 0, 0, 0, 0, 0, 0, 0, 0, 0], &balanced), 1);
    }

    #[test]
    fn real_images_score_far_better_than_pixel_noise() {
        let mnist = Path::new("data/mnist");
        if !mnist.join("t10k-images-idx3-ubyte.gz").exists() && !mnist.join("t10k-images-idx3-ubyte").exists() {
            eprintln!("skipped: no MNIST in {} (run `make data`)", mnist.display());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let run = crate::runner::classifier_run::tests::tiny(&dir.path().join("clf"), 80, None).unwrap();
        let open = |run: &Path| crate::runner::classifier_run::open_run(run, Device::Cpu);
        let clf = open(&run).unwrap();
        // Real images: training images not among the references, dequantized.
        let train = labelled::load(mnist, Split::Train).unwrap();
        tch::manual_seed(3);
        let real = crate::data::dequantize(&train.pixels.narrow(0, 1, 500));
        // Noise with each image's own pixel histogram: its pixels in a random order of their own.
        let order = Tensor::rand([500, 784], (Kind::Float, Device::Cpu)).argsort(1, false);
        let noise = real.reshape([500, 784]).gather(1, &order, false);
        let q_real = image_quality(&real, "mnist", Path::new("data"), &clf).unwrap();
        let q_noise = image_quality(&noise, "mnist", Path::new("data"), &clf).unwrap();
        assert_eq!((q_real.n, q_real.n_reference, q_real.n_nonfinite), (500, 500, 0));
        assert!(q_real.frechet_floor > 0.0 && q_real.frechet_floor == q_noise.frechet_floor);
        assert!(q_real.frechet_distance < 3.0 * q_real.frechet_floor, "real {} vs floor {}", q_real.frechet_distance, q_real.frechet_floor);
        assert!(q_noise.frechet_distance > 10.0 * q_real.frechet_distance, "noise {} vs real {}", q_noise.frechet_distance, q_real.frechet_distance);
        assert_eq!(q_real.class_coverage, 10, "{:?}", q_real.class_counts);
        assert!(q_noise.class_coverage < 10, "{:?}", q_noise.class_counts);
        assert_eq!(q_real.class_counts.iter().sum::<i64>(), 500);
        assert!(q_real.mean_confidence > 0.5 && q_real.mean_confidence <= 1.0);
        assert!(q_real.note.contains("not FID") && q_real.note.contains("mnist classifier (32-d penultimate layer)"));

        // Non-finite values are counted and zeroed; flat [n, 784] samples are accepted.
        let broken = real.reshape([500, 784]).copy();
        let _ = broken.narrow(0, 0, 2).fill_(f64::NAN);
        let q = image_quality(&broken, "mnist", Path::new("data/mnist"), &clf).unwrap();
        assert_eq!(q.n_nonfinite, 2 * 784);
        assert!(q.frechet_distance.is_finite());

        let err = format!("{:#}", image_quality(&real, "fashion-mnist", Path::new("data"), &clf).unwrap_err());
        assert!(err.contains("trained on mnist") && err.contains("fashion-mnist"), "{err}");
        let err = format!("{:#}", open(dir.path()).err().unwrap());
        assert!(err.contains("no summary.json"), "{err}");
        std::fs::remove_file(run.join("checkpoint.pt")).unwrap();
        let err = format!("{:#}", open(&run).err().unwrap());
        assert!(err.contains("no checkpoint"), "{err}");
        let err = image_quality(&Tensor::zeros([4, 100], (Kind::Float, Device::Cpu)), "mnist", Path::new("data"), &clf).unwrap_err();
        assert!(err.to_string().contains("[n, 1, 28, 28] or [n, 784]"), "{err}");
    }
}
