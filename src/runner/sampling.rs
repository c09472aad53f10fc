//! Sampling efficiency at each sampler setting: the run's own sampler and the `eval.sampler_settings` alternatives
//! (overrides of keys that keep the weights, e.g. fewer diffusion steps), each timed and scored on fresh samples.
use super::evaluate::timed_samples;
use super::quality;
use super::session::{self, Session};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Tensor};

/// One sampler setting, measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SamplerResult {
    /// "as trained", or the overrides joined by spaces.
    pub setting: String,
    pub nfe_per_sample: usize,
    pub sampler_steps: usize,
    #[serde(deserialize_with = "crate::runner::summary::f64_or_nan")]
    pub ms_per_1000: f64,
    pub n: i64,
    #[serde(default)]
    pub sample_mmd: Option<f64>,
    #[serde(default)]
    pub outside_support: Option<f64>,
    /// Images: sample quality in the feature space of relaxflow's own classifier (not FID).
    #[serde(default)]
    pub image_quality: Option<serde_json::Value>,
}

/// The measures of `samples` drawn from `s` at `setting`.
pub fn measure(s: &Session, setting: &str, samples: &Tensor, ms_per_1000: f64, image_quality: Option<serde_json::Value>) -> SamplerResult {
    let cost = s.model.sampling_cost();
    SamplerResult {
        setting: setting.to_string(),
        nfe_per_sample: cost.nfe_per_sample,
        sampler_steps: cost.steps,
        ms_per_1000,
        n: samples.size()[0],
        sample_mmd: quality::sample_mmd(s, samples),
        outside_support: quality::outside_support(s, samples).map(|o| o.0),
        image_quality,
    }
}

/// Re-opens the finished run with each of `eval.sampler_settings` and measures `eval.n_samples` fresh samples.
pub fn alternatives(s: &Session, run: &Path, device: Device) -> Result<Vec<SamplerResult>> {
    let mut out = Vec::new();
    for overrides in &s.exp.eval.sampler_settings {
        let mut alt = session::open_run_with(run, device, overrides)
            .with_context(|| format!("eval.sampler_settings: {overrides:?} does not re-open the run"))?;
        alt.runs = s.runs.clone(); // the same workspace: image quality finds the same classifier
        tch::manual_seed(s.exp.train.seed);
        let (x, ms) = tch::no_grad(|| timed_samples(&*alt.model, s.exp.eval.n_samples.max(2), device));
        let iq = quality::image_quality(&alt, &x);
        out.push(measure(&alt, &overrides.join(" "), &x, ms, iq));
    }
    Ok(out)
}
