//! A model built from an experiment, with its data, on a device: what train, eval and sample share.
use crate::data::{self, Dataset};
use crate::experiment::{registry, Experiment};
use crate::model::Model;
use anyhow::{Context, Result};
use std::path::Path;
use tch::{nn, Device};

pub struct Session {
    pub exp: Experiment,
    pub data: Dataset,
    pub vs: nn::VarStore,
    pub model: Box<dyn Model>,
    pub device: Device,
    /// The workspace's runs folder, where a finished image run looks for its classifier.
    pub runs: std::path::PathBuf,
}

impl Session {
    /// Loads the data, seeds torch with `train.seed` and builds the model; `exp.model` becomes the resolved table.
    pub fn open(mut exp: Experiment, origin: &str, device: Device) -> Result<Session> {
        let data = data::load(&exp.data, Path::new(".")).with_context(|| format!("{origin}: loading [data]"))?;
        crate::native::amp::set_precision(exp.train.precision).with_context(|| format!("{origin}: train.precision"))?;
        tch::manual_seed(exp.train.seed);
        let vs = nn::VarStore::new(device);
        let spec = data.context_spec();
        let (model, resolved) = registry::build_given(&exp.model, &vs.root(), &data.shape, spec.as_ref(), origin)?;
        model.bind_parameters(&vs.trainable_variables());
        anyhow::ensure!(model.context_spec() == spec, "{origin}: the model's context {:?} does not match the data's {:?}", model.context_spec(), spec);
        // A conditional model samples at the test set's contexts wherever the runner asks for plain samples.
        let model: Box<dyn Model> = match &data.context {
            Some(c) => Box::new(super::marginal::Marginal { inner: model, contexts: c.test.to_device(device) }),
            None => model,
        };
        exp.model = resolved;
        Ok(Session { exp, data, vs, model, device, runs: "runs".into() })
    }

    /// Number of trainable scalars.
    pub fn n_params(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}

/// Re-opens a finished or interrupted run folder with its weights loaded.
pub fn open_run(run: &Path, device: Device) -> Result<Session> {
    open_run_with(run, device, &[])
}

/// A finished run with some settings changed (`--set model.sample_steps=10`): the weights must still fit. The
/// weights are the moving average where the run kept one (`train.ema_decay`).
pub fn open_run_with(run: &Path, device: Device, overrides: &[String]) -> Result<Session> {
    Ok(open_run_as(run, device, overrides, super::checkpoint::Weights::Default)?.0)
}

/// `open_run_with` with the weights `which` names; returns which it loaded ("ema" or "raw").
pub fn open_run_as(run: &Path, device: Device, overrides: &[String], which: super::checkpoint::Weights) -> Result<(Session, &'static str)> {
    let config = run.join("config.toml");
    if !config.exists() {
        anyhow::bail!("{}: not a run folder (no config.toml)", run.display());
    }
    let trained = crate::experiment::config::load(&config, &[])?;
    // Loaded once when nothing changes (an old flat-layout config then says so once, not twice).
    let exp = if overrides.is_empty() { trained.clone() } else { crate::experiment::config::load(&config, overrides)? };
    check_keeps_model(&trained.model, &exp.model)?;
    let s = Session::open(exp, &config.display().to_string(), device)?;
    let (_, used) = super::checkpoint::load_weights_as(&run.join(super::checkpoint::FILE), &s.vs, which)?;
    Ok((s, used))
}

/// Refuses `--set model.KEY=...` on a trained run unless KEY only chooses how the model is sampled or evaluated
/// (`registry::inference_keys`): a different architecture or activation would run the saved weights in another
/// model and report its numbers as the run's. It compares the `[model]` tables as read (`trained`) and with the
/// settings applied (`changed`), both already moved to the current layout, so an older spelling of an allowed key
/// (`model.ode_rtol` for `model.ode.rtol`) is judged by what it changes.
pub fn check_keeps_model(trained: &toml::Table, changed: &toml::Table) -> Result<()> {
    let kind = trained.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
    let allowed = crate::experiment::registry::inference_keys(kind);
    let keys: std::collections::BTreeSet<&String> = trained.keys().chain(changed.keys()).collect();
    for key in keys {
        if trained.get(key) == changed.get(key) || allowed.contains(&key.as_str()) {
            continue;
        }
        let keep = if allowed.is_empty() { "none for this kind".to_string() } else { allowed.iter().map(|k| format!("model.{k}")).collect::<Vec<_>>().join(", ") };
        anyhow::bail!(
            "--set model.{key}: changes the trained `{kind}` model, whose weights would no longer mean what they did; settings that keep it: {keep}"
        );
    }
    Ok(())
}
