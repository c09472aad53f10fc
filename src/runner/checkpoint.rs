//! Checkpoints: model weights, optimizer moments and the step, in one file written atomically
//! (serialised in memory, then temp file, fsync, rename, fsync of the folder), so a crash or a full disk never leaves
//! a half-written checkpoint. The file is an ordinary PyTorch archive (`torch.load` reads it) holding one more
//! entry, `integrity.sha256`: a digest of every other entry's name, dtype, shape and bytes, checked on load, so a
//! flipped bit is an error rather than silently wrong weights. Loading is strict both ways: every model variable
//! must be in the file with its shape, and every weight in the file must be used.
use super::optim::Adam;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// The entry holding the digest.
const INTEGRITY: &str = "integrity.sha256";

/// SHA-256 over the entries (sorted by name) other than the digest itself.
fn digest(named: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut h = Sha256::new();
    for (name, t) in named.iter().filter(|(k, _)| k.as_str() != INTEGRITY) {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", t.kind(), t.size()).as_bytes());
        let flat = t.to_device(tch::Device::Cpu).contiguous().reshape([-1]);
        let bytes = if flat.kind() == Kind::Uint8 { flat } else { flat.view_dtype(Kind::Uint8) };
        h.update(Vec::<u8>::try_from(&bytes).context("reading tensor bytes")?);
    }
    Ok(h.finalize().to_vec())
}

/// The file name inside a run folder.
pub const FILE: &str = "checkpoint.pt";

/// Entries holding the moving average of each trainable weight (`train.ema_decay`).
pub const EMA_PREFIX: &str = "ema.model.";

/// Which weights eval, sample and the final evaluation use (`--weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Weights {
    /// The averaged weights when the checkpoint has them (a run with train.ema_decay), else the raw ones.
    Default,
    /// The weights as the optimizer left them.
    Raw,
    /// The moving average of the weights (an error for a run trained without train.ema_decay).
    Ema,
}

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
    if adam.ema.is_some() {
        // The averaged weights by name too, so eval and sample load them without the optimizer's layout.
        let averaged = adam.swapped_in_ema(|| {
            vs.variables().into_iter().filter(|(_, v)| v.requires_grad()).map(|(k, v)| (format!("{EMA_PREFIX}{k}"), v.detach().to_device(tch::Device::Cpu).copy())).collect::<Vec<_>>()
        });
        named.extend(averaged);
    }
    named.push(("progress.step".into(), Tensor::from(progress.step)));
    named.push(("progress.elapsed_s".into(), Tensor::from(progress.elapsed_s)));
    let sorted: BTreeMap<String, Tensor> = named.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
    named.push((INTEGRITY.into(), Tensor::from_slice(&digest(&sorted)?)));
    // Serialised in memory first: a full disk then fails in our own write, with a clean error, not inside libtorch.
    let mut bytes = Vec::new();
    Tensor::save_multi_to_stream(&named, &mut bytes).map_err(|e| anyhow!("{}", crate::errors::clean(&e.to_string())))
        .with_context(|| format!("serialising checkpoint {}", path.display()))?;
    super::files::write_atomic(path, &bytes).context("writing the checkpoint")
}

fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        bail!("{}: no checkpoint (the run never reached its first checkpoint)", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read the checkpoint", path.display()))?;
    let named = Tensor::load_multi_from_stream(std::io::Cursor::new(bytes))
        .map_err(|e| anyhow!("{}", crate::errors::clean(&e.to_string())))
        .with_context(|| format!("{}: unreadable checkpoint (corrupted or not a relaxflow checkpoint)", path.display()))?;
    let named: BTreeMap<String, Tensor> = named.into_iter().collect();
    if let Some(stored) = named.get(INTEGRITY) {
        let stored = Vec::<u8>::try_from(&stored.to_kind(Kind::Uint8).reshape([-1])).unwrap_or_default();
        if stored != digest(&named)? {
            bail!("{}: corrupted checkpoint (its contents do not match the digest written with it)", path.display());
        }
    }
    Ok(named.into_iter().collect())
}

/// Loads weights into `vs`; every variable must be present with its shape.
pub fn load_weights(path: &Path, vs: &nn::VarStore) -> Result<Progress> {
    let saved = read(path)?;
    copy_weights(&saved, vs, path)?;
    progress(&saved, path)
}

/// Loads the weights `which` asks for, and says which it loaded ("ema" or "raw").
pub fn load_weights_as(path: &Path, vs: &nn::VarStore, which: Weights) -> Result<(Progress, &'static str)> {
    let saved = read(path)?;
    copy_weights(&saved, vs, path)?;
    let has_ema = saved.keys().any(|k| k.starts_with(EMA_PREFIX));
    let use_ema = match which {
        Weights::Raw => false,
        Weights::Default => has_ema,
        Weights::Ema if has_ema => true,
        Weights::Ema => bail!("{}: --weights ema, but the run keeps no moving average of its weights (it was trained without train.ema_decay)", path.display()),
    };
    if use_ema {
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in vs.variables().into_iter().filter(|(_, v)| v.requires_grad()) {
                let src = saved.get(&format!("{EMA_PREFIX}{name}")).ok_or_else(|| anyhow!("{}: lacks the averaged weight `{name}`", path.display()))?;
                if src.size() != var.size() {
                    bail!("{}: averaged weight `{name}` has shape {:?}, the model expects {:?}", path.display(), src.size(), var.size());
                }
                var.copy_(src);
            }
            Ok(())
        })?;
    }
    Ok((progress(&saved, path)?, if use_ema { "ema" } else { "raw" }))
}

/// Loads weights and optimizer state, to resume training.
pub fn load_all(path: &Path, vs: &nn::VarStore, adam: &mut Adam) -> Result<Progress> {
    let saved = read(path)?;
    copy_weights(&saved, vs, path)?;
    let get = |k: &str| saved.get(k).ok_or_else(|| anyhow!("{}: lacks `{k}`", path.display()));
    adam.load_state(get("adam.m")?, get("adam.v")?, get("adam.t")?.int64_value(&[]))
        .with_context(|| format!("{}: optimizer state does not fit the model", path.display()))?;
    if adam.ema.is_some() {
        let missing = || anyhow!("{}: lacks the moving average of the weights (was it trained without train.ema_decay?)", path.display());
        let shadow = saved.get("ema.flat").ok_or_else(missing)?;
        let updates = saved.get("ema.updates").ok_or_else(missing)?.int64_value(&[]);
        adam.load_ema(shadow, updates).with_context(|| format!("{}: the weight average does not fit the model", path.display()))?;
    }
    progress(&saved, path)
}

fn copy_weights(saved: &HashMap<String, Tensor>, vs: &nn::VarStore, path: &Path) -> Result<()> {
    let vars = vs.variables();
    let mut unused: Vec<&str> =
        saved.keys().filter_map(|k| k.strip_prefix("model.")).filter(|k| !vars.contains_key(*k)).collect();
    if !unused.is_empty() {
        unused.sort();
        let more = if unused.len() > 3 { format!(" and {} more", unused.len() - 3) } else { String::new() };
        bail!(
            "{}: holds weights this model does not have ({}{more}): the model config differs from the one that was trained",
            path.display(),
            unused.iter().take(3).map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        );
    }
    tch::no_grad(|| {
        for (name, mut var) in vars {
            let src = saved
                .get(&format!("model.{name}"))
                .ok_or_else(|| anyhow!("{}: lacks weight `{name}` (was it written by another model config?)", path.display()))?;
            if src.size() != var.size() || src.kind() != var.kind() {
                bail!("{}: weight `{name}` has shape {:?} ({:?}), the model expects {:?} ({:?})", path.display(), src.size(), src.kind(), var.size(), var.kind());
            }
            var.copy_(src);
        }
        Ok(())
    })
}

fn progress(saved: &HashMap<String, Tensor>, path: &Path) -> Result<Progress> {
    let step = saved.get("progress.step").ok_or_else(|| anyhow!("{}: lacks progress.step", path.display()))?;
    if step.numel() != 1 {
        bail!("{}: progress.step is not a number", path.display());
    }
    let elapsed = saved.get("progress.elapsed_s").filter(|t| t.numel() == 1).map(|t| t.double_value(&[])).unwrap_or(0.0);
    let step = step.int64_value(&[]);
    if step < 0 || !elapsed.is_finite() {
        bail!("{}: progress out of range (step {step}, elapsed {elapsed} s)", path.display());
    }
    Ok(Progress { step, elapsed_s: elapsed })
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
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");

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
        // A model with a subset of the saved weights (fewer layers) is refused, naming what would be dropped.
        let big = nn::VarStore::new(Device::Cpu);
        let _ = big.root().zeros("w", &[3, 2]);
        let _ = big.root().zeros("layer9", &[1]);
        save(&path, &big, &Adam::new(&big, cfg).unwrap(), Progress { step: 1, elapsed_s: 0.0 }).unwrap();
        let small = nn::VarStore::new(Device::Cpu);
        let _ = small.root().zeros("w", &[3, 2]);
        let err = load_weights(&path, &small).unwrap_err().to_string();
        assert!(err.contains("does not have (`layer9`)"), "{err}");
        let other = nn::VarStore::new(Device::Cpu);
        let _ = other.root().zeros("v", &[3, 2]);
        let err = load_weights(&path, &other).unwrap_err().to_string();
        assert!(err.contains("does not have") && err.contains("`w`"), "{err}");
        // One flipped bit in the weights' bytes: the digest catches it.
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = vs.root().ones("w", &[64, 64]);
        save(&path, &vs, &Adam::new(&vs, cfg).unwrap(), Progress { step: 1, elapsed_s: 0.0 }).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(4).position(|w| w == 1.0f32.to_le_bytes()).expect("the weights are in the file");
        bytes[at + 2] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = load_weights(&path, &vs).unwrap_err().to_string();
        assert!(err.contains("corrupted checkpoint") || err.contains("unreadable checkpoint"), "{err}");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(load_weights(&path, &other).unwrap_err().to_string().contains("unreadable checkpoint"));
    }
}
