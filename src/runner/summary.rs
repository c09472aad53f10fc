//! `summary.json`: what comparisons need from a finished run; and the versions and commit it was made with.
use super::evaluate::Evaluation;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Library versions a run was made with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Versions {
    pub relaxflow: String,
    pub tch: String,
    pub libtorch: String,
}

pub fn versions() -> Versions {
    Versions {
        relaxflow: env!("CARGO_PKG_VERSION").into(),
        tch: "0.24".into(),
        libtorch: env!("RELAXFLOW_LIBTORCH_VERSION").into(),
    }
}

/// The commit of the working tree the command runs in, if it is a git checkout.
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn one_process() -> usize {
    1
}

/// A finished run, as `compare` and `report` read it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub experiment: String,
    pub family: String,
    pub model_kind: String,
    pub dataset: String,
    pub dim: i64,
    /// Test NLL (nats per example), its standard error, its kind and how many test examples.
    #[serde(deserialize_with = "f64_or_nan")]
    pub test_nll_nats: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub test_nll_stderr: f64,
    /// "exact", "bound" (an upper bound on NLL) or "estimate".
    pub nll_kind: String,
    pub test_n: i64,
    pub test_nonfinite: i64,
    /// 8-bit images only: bits/dim = nll / (D ln 2) + 8 with uniform dequantization.
    pub bits_per_dim: Option<f64>,
    pub likelihood_note: String,
    /// Flows with a logit preprocessing: bits/dim recomputed from the logit-space density and the logit's Jacobian.
    #[serde(default)]
    pub bits_per_dim_check: Option<super::evaluate::BitsPerDimCheck>,
    /// How the likelihood was computed (solver, divergence estimator, bound terms...).
    #[serde(default)]
    pub estimator: serde_json::Value,
    /// Where the data's differential entropy is known: it, and NLL minus it (≥ 0 up to noise: the KL to the truth).
    pub true_entropy_nats: Option<f64>,
    pub nll_gap_nats: Option<f64>,
    pub steps: i64,
    /// The configured `train.steps` when training ended earlier, at `train.time_limit_min` (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_steps: Option<i64>,
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_time_s: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub steps_per_s: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub sample_ms_per_1000: f64,
    /// Milliseconds per 1000 evaluations of the reported log-likelihood (up to 1000 test points).
    #[serde(default)]
    pub log_prob_ms_per_1000: Option<f64>,
    /// Low-dimensional data: unbiased MMD² (Gaussian kernels at 0.05, 0.1, 0.3, 1 data std) between the final
    /// samples and as many test points (at most 5000).
    #[serde(default)]
    pub sample_mmd: Option<f64>,
    /// Fraction of the final samples outside the data's support where it is sharp (checkerboard: 0 for the data),
    /// else outside the true law's 99% highest-density region (0.01 for the data); `support_region` says which.
    #[serde(default)]
    pub sample_outside_support: Option<f64>,
    #[serde(default)]
    pub support_region: Option<String>,
    /// Multimodal sets with known modes: which modes the final samples reach.
    #[serde(default)]
    pub mode_coverage: Option<super::quality::ModeCoverage>,
    /// Training speed: first evaluated step (and wall time) within a tolerance of the run's best test NLL.
    #[serde(default)]
    pub convergence: Option<super::convergence::Convergence>,
    /// Sampling efficiency at each sampler setting: the run's own first, then `eval.sampler_settings`.
    #[serde(default)]
    pub sampling: Vec<super::sampling::SamplerResult>,
    /// Images: sample quality of the run's own sampler in a self-trained classifier's feature space (not FID).
    #[serde(default)]
    pub image_quality: Option<serde_json::Value>,
    pub nfe_per_sample: usize,
    pub sampler_steps: usize,
    pub params: i64,
    pub device: String,
    /// Processes the run trained on (data parallel when more than one; each had `device`), and their c10d backend.
    #[serde(default = "one_process")]
    pub world_size: usize,
    #[serde(default)]
    pub backend: Option<String>,
    pub threads: i32,
    pub seed: i64,
    pub versions: Versions,
    pub git_commit: String,
    pub finished_at: String,
    /// Family-specific evaluation (e.g. log Z, ESS, free-energy profile against an energy target).
    #[serde(default)]
    pub diagnostics: Option<serde_json::Value>,
    /// A conditional model p(x | c): what its context is (the NLL is then of x given each test point's own c).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::context::ContextSpec>,
    /// A run that keeps a moving average of its weights (train.ema_decay): which weights the evaluation used ("ema").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// A simulation-based-inference task: C2ST against reference posteriors and the NLL of the true parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbi: Option<super::sbi::SbiResult>,
}

/// What the NLL number means, in words, for the summary and the tables.
pub fn likelihood_note(eval: &Evaluation) -> String {
    let what = match eval.kind {
        crate::model::Kind::Exact => "exact test NLL (change of variables)",
        crate::model::Kind::LowerBound => "upper bound on test NLL (negative of a lower bound on log p)",
        crate::model::Kind::Estimate => "stochastic estimate of test NLL",
    };
    match eval.bits_per_dim {
        Some(_) => format!(
            "{what}; 8-bit pixels dequantized as x = (pixel + u)/256, u ~ U(0,1), on [0,1]^D; nll is -log p(x) in that space (any logit preprocessing's Jacobian included); bits/dim = (nll + D ln 256)/(D ln 2) = nll/(D ln 2) + 8"
        ),
        None => format!("{what}; density of the data as given, in nats per example"),
    }
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    super::files::write_atomic(path, (serde_json::to_string_pretty(value)? + "\n").as_bytes())
}

/// JSON has no NaN: serde_json writes a non-finite f64 as `null`, and this reads `null` back as NaN, so a summary
/// relaxflow wrote (e.g. a standard error of one test point) is always readable.
pub fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Reads a run's summary.
pub fn read(run: &Path) -> Result<Summary> {
    let path = run.join("summary.json");
    if !path.exists() {
        anyhow::bail!("{}: no summary.json (unfinished run? continue it with `relaxflow train --resume {}`)", run.display(), run.display());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: malformed summary", path.display()))
}
