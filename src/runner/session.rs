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
}

impl Session {
    /// Loads the data, seeds torch with `train.seed` and builds the model; `exp.model` becomes the resolved table.
    pub fn open(mut exp: Experiment, origin: &str, device: Device) -> Result<Session> {
        let data = data::load(&exp.data, Path::new(".")).with_context(|| format!("{origin}: loading [data]"))?;
        tch::manual_seed(exp.train.seed);
        let vs = nn::VarStore::new(device);
        let (model, resolved) = registry::build(&exp.model, &vs.root(), &data.shape, origin)?;
        exp.model = resolved;
        Ok(Session { exp, data, vs, model, device })
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

/// A finished run with some settings changed (`--set model.sample_steps=10`): the weights must still fit.
pub fn open_run_with(run: &Path, device: Device, overrides: &[String]) -> Result<Session> {
    let config = run.join("config.toml");
    if !config.exists() {
        anyhow::bail!("{}: not a run folder (no config.toml)", run.display());
    }
    let exp = crate::experiment::config::load(&config, overrides)?;
    let s = Session::open(exp, &config.display().to_string(), device)?;
    super::checkpoint::load_weights(&run.join(super::checkpoint::FILE), &s.vs)?;
    Ok(s)
}
