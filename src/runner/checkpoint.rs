//! Checkpoints: model weights, optimizer moments and the step, in one file written atomically
//! (temp file, fsync, rename, fsync of the folder), so a crash never leaves a half-written checkpoint.
use super::optim::Adam;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Tensor};

/// The file name inside a run folder.
pub const FILE: &str = "checkpoint.pt";

/// Where training stood when the checkpoint was written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Steps completed.
    pub step: i64,
    /// Training wall time so far (seconds), across resumes.
    pub elapsed_s: f64,
}

/// Writes weights (`model.<name>`), optimizer state and progress to `path` atomically.
pub fn save(path: &Path, vs: &nn::VarStore, adam: &Adam, progress: Progress) -> Result<()> {
    let mut named: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(k, v)| (format!("model.{k}"), v.detach().to_device(tch::Device::Cpu))).collect();
    named.extend(adam.state().into_iter().map(|(k, v)| (k, v.to_device(tch::Device::Cpu))));
    named.push(("progress.step".into(), Tensor::from(progress.step)));
    named.push(("progress.elapsed_s".into(), Tensor::from(progress.elapsed_s)));
    let tmp = path.with_extension("pt.tmp");
    Tensor::save_multi(&named, &tmp).with_context(|| format!("writing checkpoint {}", tmp.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        bail!("{}: no checkpoint (the run never reached its first checkpoint)", path.display());
    }
    let named = Tensor::load_multi(path).with_context(|| format!("{}: unreadable checkpoint", path.display()))?;
    Ok(named.into_iter().collect())
}

/// Loads weights into `vs`; every variable must be present with its shape.
pub fn load_weights(path: &Path, vs: &nn::VarStore) -> Result<Progress> {
    let saved = read(path)?;
    copy_weights(&saved, vs, path)?;
    progress(&saved, path)
}

/// Loads weights and optimizer state, to resume training.
pub fn load_all(path: &Path, vs: &nn::VarStore, adam: &mut Adam) -> Result<Progress> {
    let saved = read(path)?;
    copy_weights(&saved, vs, path)?;
    let get = |k: &str| saved.get(k).ok_or_else(|| anyhow!("{}: lacks `{k}`", path.display()));
    adam.load_state(get("adam.m")?, get("adam.v")?, get("adam.t")?.int64_value(&[]))
        .with_context(|| format!("{}: optimizer state does not fit the model", path.display()))?;
    progress(&saved, path)
}

fn copy_weights(saved: &HashMap<String, Tensor>, vs: &nn::VarStore, path: &Path) -> Result<()> {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let src = saved
                .get(&format!("model.{name}"))
                .ok_or_else(|| anyhow!("{}: lacks weight `{name}` (was it written by another model config?)", path.display()))?;
            if src.size() != var.size() {
                bail!("{}: weight `{name}` has shape {:?}, the model expects {:?}", path.display(), src.size(), var.size());
            }
            var.copy_(src);
        }
        Ok(())
    })
}

fn progress(saved: &HashMap<String, Tensor>, path: &Path) -> Result<Progress> {
    let step = saved.get("progress.step").ok_or_else(|| anyhow!("{}: lacks progress.step", path.display()))?;
    let elapsed = saved.get("progress.elapsed_s").map(|t| t.double_value(&[])).unwrap_or(0.0);
    Ok(Progress { step: step.int64_value(&[]), elapsed_s: elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::optim::AdamConfig;
    use tch::Device;

    #[test]
    fn round_trip_restores_weights_moments_and_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let cfg = AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().randn_standard("w", &[3, 2]);
        let mut adam = Adam::new(&vs, cfg).unwrap();
        adam.zero_grad();
        w.square().sum(None).backward();
        adam.step(0.1);
        save(&path, &vs, &adam, Progress { step: 7, elapsed_s: 1.5 }).unwrap();
        assert!(!dir.path().join("checkpoint.pt.tmp").exists());

        let vs2 = nn::VarStore::new(Device::Cpu);
        let w2 = vs2.root().zeros("w", &[3, 2]);
        let mut adam2 = Adam::new(&vs2, cfg).unwrap();
        let p = load_all(&path, &vs2, &mut adam2).unwrap();
        assert_eq!(p, Progress { step: 7, elapsed_s: 1.5 });
        assert!(w2.equal(&w));
        assert_eq!(adam2.t, 1);
        let (s1, s2) = (adam.state(), adam2.state());
        assert!(s1[1].1.equal(&s2[1].1));
    }

    #[test]
    fn mismatched_model_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let cfg = AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = vs.root().zeros("w", &[3, 2]);
        save(&path, &vs, &Adam::new(&vs, cfg).unwrap(), Progress { step: 1, elapsed_s: 0.0 }).unwrap();
        let other = nn::VarStore::new(Device::Cpu);
        let _ = other.root().zeros("w", &[4, 2]);
        let err = load_weights(&path, &other).unwrap_err().to_string();
        assert!(err.contains("weight `w` has shape [3, 2]"), "{err}");
        let other = nn::VarStore::new(Device::Cpu);
        let _ = other.root().zeros("v", &[3, 2]);
        assert!(load_weights(&path, &other).unwrap_err().to_string().contains("lacks weight `v`"));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(load_weights(&path, &other).unwrap_err().to_string().contains("unreadable checkpoint"));
    }
}
