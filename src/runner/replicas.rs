//! Data parallelism in the run lifecycle: what the training loop does differently on N ranks.
//!
//! Every rank builds the same model from the same config, then takes rank 0's weights, optimizer moments and
//! progress ([`sync_state`]); each step every rank draws the same global batch indices from the step's seed and
//! computes the loss of its slice ([`crate::rows::Split`]), with per-example noise drawn as the whole batch's rows
//! (`crate::rows`), and one allreduce of the flat gradient ([`reduce_grads`]) gives every rank the gradient of the
//! whole batch's mean loss before clipping. So a run on N ranks follows one process on the union batch, up to the
//! order of float sums. Rank 0 alone writes the run folder. With one process every function here is a no-op.
use super::optim::Adam;
use crate::parallel::World;
use crate::rows::Split;
use anyhow::{bail, Context, Result};
use sha2::Digest;
use tch::{nn, Device, Kind, Tensor};

/// This process's place in a data-parallel job and the device its small collectives (flags, tallies) use: the
/// training device under NCCL, else the CPU.
pub struct Replicas {
    pub world: World,
    comm: Device,
}

/// A 63-bit digest of `bytes` (the top bit cleared, so it survives as a non-negative i64).
fn digest63(bytes: &[u8]) -> i64 {
    let d = sha2::Sha256::digest(bytes);
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes")) & i64::MAX
}

/// The SHA-256 of this executable (a digest of the code every rank runs), or 0 when it cannot be read.
fn executable_digest() -> i64 {
    std::env::current_exe().and_then(std::fs::read).map(|b| digest63(&b)).unwrap_or(0)
}

impl Replicas {
    /// Joins the job the environment describes (one process when it describes none), for training on `device`
    /// (`cuda` with several ranks on a machine means the local rank's GPU); returns it with the rank's device.
    pub fn from_env(device: Device) -> Result<(Self, Device)> {
        let world = World::from_env_for(device)?;
        // `cuda` with several ranks: one GPU per local rank (ranks beyond the GPU count share them, which Gloo
        // allows; NCCL refuses two ranks on one GPU with its own error).
        let device = match device {
            Device::Cuda(0) if world.world_size() > 1 => Device::Cuda(world.local_rank() % tch::Cuda::device_count().max(1) as usize),
            d => d,
        };
        Ok((Self::new(world, device), device))
    }

    /// `world`, its small collectives on `device` under NCCL, else on the CPU.
    pub fn new(world: World, device: Device) -> Self {
        let comm = if world.backend() == Some(crate::parallel::Backend::Nccl) { device } else { Device::Cpu };
        Replicas { world, comm }
    }

    /// One process.
    pub fn single() -> Self {
        Replicas { world: World::single(), comm: Device::Cpu }
    }

    pub fn is_main(&self) -> bool {
        self.world.is_main()
    }

    pub fn size(&self) -> usize {
        self.world.world_size()
    }

    /// This rank's share of a batch of `total` rows.
    pub fn split(&self, total: i64) -> Split {
        self.world.split(total)
    }

    /// Refuses to start unless every rank has the same config (`config_toml`, as the run will save it) and runs the same
    /// executable: the digests' minimum and maximum over ranks must agree.
    pub fn check_same_job(&self, config_toml: &str) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let mine = [digest63(config_toml.as_bytes()), executable_digest()];
        let mut lo = Tensor::from_slice(&mine).to_device(self.comm);
        let mut hi = lo.copy();
        self.world.allreduce_min_(&mut lo).context("comparing configs across ranks")?;
        self.world.allreduce_max_(&mut hi).context("comparing configs across ranks")?;
        let (lo, hi) = (Vec::<i64>::try_from(&lo)?, Vec::<i64>::try_from(&hi)?);
        if lo[0] != hi[0] {
            bail!(
                "rank {}: the ranks were given different configs (experiment file, --set, --steps, --seed, or data paths \
                 relative to different working folders); start every rank with the same command from the same folder",
                self.world.rank()
            );
        }
        if lo[1] != hi[1] {
            bail!(
                "rank {}: the ranks run different relaxflow executables; build once and start every rank from the same \
                 binary (on a shared file system)",
                self.world.rank()
            );
        }
        Ok(())
    }

    /// Rank 0's weights (every variable, buffers included), optimizer moments and progress on every rank, so a fresh
    /// start and a resume begin identically everywhere. Returns (step, elapsed seconds) as rank 0 has them.
    pub fn sync_state(&self, vs: &nn::VarStore, adam: &mut Adam, step: i64, elapsed_s: f64) -> Result<(i64, f64)> {
        if self.size() == 1 {
            return Ok((step, elapsed_s));
        }
        let what = || format!("rank {}: receiving rank 0's weights", self.world.rank());
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| -> Result<()> {
            for (_, var) in &vars {
                if var.is_contiguous() {
                    self.world.broadcast_(&mut var.detach(), 0).with_context(what)?;
                } else {
                    // A channels-last weight (train.channels_last): collectives take contiguous tensors.
                    let mut dense = var.contiguous();
                    self.world.broadcast_(&mut dense, 0).with_context(what)?;
                    var.detach().copy_(&dense);
                }
            }
            for t in adam.moments_mut() {
                self.world.broadcast_(t, 0).with_context(what)?;
            }
            if let Some(ema) = &mut adam.ema {
                // The weight average (train.ema_decay): every rank folds the same weights into it from here on.
                self.world.broadcast_(&mut ema.shadow, 0).with_context(what)?;
            }
            Ok(())
        })?;
        let updates = adam.ema.as_ref().map_or(0, |e| e.updates);
        let mut ints = Tensor::from_slice(&[step, adam.t, updates]).to_device(self.comm);
        let mut secs = Tensor::from_slice(&[elapsed_s]).to_device(self.comm);
        self.world.broadcast_(&mut ints, 0).with_context(what)?;
        self.world.broadcast_(&mut secs, 0).with_context(what)?;
        let ints = Vec::<i64>::try_from(&ints)?;
        adam.t = ints[1];
        if let Some(ema) = &mut adam.ema {
            ema.updates = ints[2];
        }
        Ok((ints[0], secs.double_value(&[0])))
    }

    /// The whole batch's gradient on every rank: each rank's gradient of its slice's mean loss, weighted by the slice's
    /// share of the batch, summed over ranks.
    pub fn reduce_grads(&self, adam: &mut Adam, split: Split) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let grad = adam.grad_mut();
        let _ = grad.g_mul_scalar_(split.weight());
        self.world.allreduce_sum_(grad).with_context(|| format!("rank {}: gradient allreduce", self.world.rank()))
    }

    /// Whether any rank wants to stop (a signal seen by one rank stops all of them at the same step).
    pub fn any(&self, flag: bool) -> Result<bool> {
        if self.size() == 1 {
            return Ok(flag);
        }
        let mut t = Tensor::from_slice(&[flag as i64]).to_device(self.comm);
        self.world.allreduce_max_(&mut t).with_context(|| format!("rank {}: agreeing on a stop", self.world.rank()))?;
        Ok(t.int64_value(&[0]) > 0)
    }

    /// Non-trainable floating-point variables (batch normalization's running statistics) averaged over ranks, so the
    /// checkpoint rank 0 writes holds every rank's statistics; variables that are equal everywhere stay as they are.
    pub fn average_buffers(&self, vs: &nn::VarStore) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| !t.requires_grad() && t.is_floating_point()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, var) in vars {
            let mut d = var.detach();
            self.world.allreduce_mean_(&mut d).with_context(|| format!("averaging {name} over ranks"))?;
        }
        Ok(())
    }

    /// Rows computed by their ranks, assembled on every rank: `mine` holds this rank's `split` of a tensor of
    /// `split.total` rows; the others' rows arrive by one allreduce (zeros elsewhere, so NaN and ±inf survive).
    pub fn gather_rows(&self, mine: &Tensor, split: Split) -> Result<Tensor> {
        if self.size() == 1 {
            return Ok(mine.shallow_clone());
        }
        let mut shape = mine.size();
        shape[0] = split.total;
        let mut all = Tensor::zeros(shape.as_slice(), (mine.kind(), self.comm));
        all.narrow(0, split.offset, split.len).copy_(mine);
        self.world.allreduce_sum_(&mut all).with_context(|| format!("rank {}: gathering results", self.world.rank()))?;
        Ok(all.to_device(mine.device()))
    }


    /// A device tensor summed over ranks (a logged loss, a count); in one process the tensor itself.
    pub fn sum_over_ranks(&self, t: &Tensor) -> Result<Tensor> {
        if self.size() == 1 {
            return Ok(t.shallow_clone());
        }
        let mut host = t.to_device(self.comm).to_kind(Kind::Double);
        self.world.allreduce_sum_(&mut host).with_context(|| format!("rank {}: summing a tally", self.world.rank()))?;
        Ok(host)
    }

    /// The minimum over ranks of a one-element integer tensor (a first bad step), read on the host.
    pub fn min_over_ranks(&self, t: &Tensor) -> Result<i64> {
        if self.size() == 1 {
            return Ok(t.int64_value(&[]));
        }
        let mut v = t.reshape([1]).to_device(self.comm).to_kind(Kind::Int64);
        self.world.allreduce_min_(&mut v).with_context(|| format!("rank {}: comparing a tally", self.world.rank()))?;
        Ok(v.int64_value(&[0]))
    }

    /// Checks that every rank holds bit-identical weights (the digest of the sorted variables' bytes agrees over
    /// ranks) and returns that digest; an error names the divergence. One process: its own digest.
    pub fn check_same_weights(&self, vs: &nn::VarStore) -> Result<i64> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = sha2::Sha256::new();
        for (name, var) in &vars {
            let host = var.detach().to_device(Device::Cpu).contiguous();
            let bytes: Vec<u8> = Vec::<u8>::try_from(host.flatten(0, -1).view_dtype(Kind::Uint8))?;
            hasher.update(name.as_bytes());
            hasher.update(&bytes);
        }
        let digest = i64::from_be_bytes(hasher.finalize()[..8].try_into().expect("8 bytes")) & i64::MAX;
        if self.size() == 1 {
            return Ok(digest);
        }
        let mut lo = Tensor::from_slice(&[digest]).to_device(self.comm);
        let mut hi = lo.copy();
        self.world.allreduce_min_(&mut lo).context("comparing weights across ranks")?;
        self.world.allreduce_max_(&mut hi).context("comparing weights across ranks")?;
        if lo.int64_value(&[0]) != hi.int64_value(&[0]) {
            bail!("rank {}: the ranks' weights differ after the same updates (a non-deterministic kernel?); the run stops", self.world.rank());
        }
        Ok(digest)
    }
}
