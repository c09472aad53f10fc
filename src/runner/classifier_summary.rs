//! A classifier run's `summary.json`. It has its own struct: `runner::summary::Summary` describes generative models
//! (test NLL of the data, sampler cost) and does not fit a classifier.
use super::summary::Versions;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A finished classifier run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassifierSummary {
    pub experiment: String,
    /// Always "classifier".
    pub family: String,
    /// `mnist`, `fashion-mnist` or `cifar10`.
    pub dataset: String,
    /// The image shape [C, H, W] it classifies ([1, 28, 28] for runs written before the field existed).
    #[serde(default = "mnist_shape")]
    pub shape: Vec<i64>,
    /// Fraction of test images whose argmax class is the label.
    #[serde(deserialize_with = "super::summary::f64_or_nan")]
    pub test_accuracy: f64,
    /// Mean cross-entropy -log p(label | x) on the test images, in nats.
    #[serde(deserialize_with = "super::summary::f64_or_nan")]
    pub test_nll_nats: f64,
    /// Test images used (the whole 10k test set unless `eval.n_final` caps it).
    pub test_n: i64,
    pub steps: i64,
    #[serde(deserialize_with = "super::summary::f64_or_nan")]
    pub train_time_s: f64,
    #[serde(deserialize_with = "super::summary::f64_or_nan")]
    pub steps_per_s: f64,
    pub params: i64,
    /// Width of the penultimate layer, the feature space of the Fréchet distance.
    pub feature_dim: i64,
    pub device: String,
    pub threads: i32,
    pub seed: i64,
    pub versions: Versions,
    pub git_commit: String,
    pub finished_at: String,
}

fn mnist_shape() -> Vec<i64> {
    crate::classifier::net::MNIST_SHAPE.to_vec()
}

/// Reads a classifier run's summary; errors name the folder and say what is wrong.
pub fn read(run: &Path) -> Result<ClassifierSummary> {
    let path = run.join("summary.json");
    if !path.exists() {
        bail!("{}: no summary.json (not a finished classifier run; train one with `relaxflow train mnist-classifier`)", run.display());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    if value.get("family").and_then(|f| f.as_str()) != Some("classifier") {
        bail!("{}: not a classifier run (family {})", run.display(), value.get("family").unwrap_or(&serde_json::Value::Null));
    }
    serde_json::from_value(value).with_context(|| format!("{}: malformed classifier summary", path.display()))
}
