//! Several processes, one job: PyTorch's distributed engine (c10d) through the C++ shim in `csrc/dist.cpp`.
//!
//! `World::from_env()` reads the launch (torchrun, Slurm, plain variables; see `env`) and joins the process group,
//! or, in a single process, builds nothing: every collective is then a no-op. (Not `dist`: that module holds
//! probability distributions.)
pub mod env;
mod ffi;
pub mod group;
pub mod selftest;

pub use env::{first_host, launch_from, launch_from_env, Launch, Launcher};
pub use group::{Backend, GroupOptions, ProcessGroup, Store};

use anyhow::{Context, Result};
use tch::{Device, Tensor};

/// This process's place in the job, and its group when there is more than one process.
#[derive(Debug)]
pub struct World {
    rank: usize,
    world_size: usize,
    local_rank: usize,
    launcher: Option<Launcher>,
    group: Option<ProcessGroup>,
}

impl World {
    /// One process, no group.
    pub fn single() -> Self {
        World { rank: 0, world_size: 1, local_rank: 0, launcher: None, group: None }
    }

    /// Join the job the environment describes (Gloo unless RELAXFLOW_DIST_BACKEND says otherwise); a single process
    /// when it describes none.
    pub fn from_env() -> Result<Self> {
        Self::from_env_for(Device::Cpu)
    }

    /// As `from_env`, the backend chosen for tensors on `device`: NCCL for CUDA in builds with the `nccl` feature,
    /// else Gloo; RELAXFLOW_DIST_BACKEND overrides.
    pub fn from_env_for(device: Device) -> Result<Self> {
        match launch_from_env()? {
            None => Ok(Self::single()),
            Some(launch) => Self::join(&launch, device),
        }
    }

    /// Join the group of `launch`.
    pub fn join(launch: &Launch, device: Device) -> Result<Self> {
        let backend = launch.backend.unwrap_or(if device.is_cuda() && Backend::Nccl.available() { Backend::Nccl } else { Backend::Gloo });
        let group = ProcessGroup::new(&launch.group_options(backend))
            .with_context(|| format!("starting rank {} of {} ({})", launch.rank, launch.world_size, launch.launcher))?;
        Ok(World {
            rank: launch.rank,
            world_size: launch.world_size,
            local_rank: launch.local_rank,
            launcher: Some(launch.launcher),
            group: Some(group),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Rank 0: the one that writes logs, checkpoints and summaries.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    pub fn launcher(&self) -> Option<Launcher> {
        self.launcher
    }

    /// The backend's name, or none in a single process.
    pub fn backend(&self) -> Option<Backend> {
        self.group.as_ref().map(ProcessGroup::backend)
    }

    pub fn group(&self) -> Option<&ProcessGroup> {
        self.group.as_ref()
    }

    /// In place: the sum over ranks (nothing to do in a single process).
    pub fn allreduce_sum_(&self, t: &mut Tensor) -> Result<()> {
        self.group.as_ref().map_or(Ok(()), |g| g.allreduce_sum_(t))
    }

    /// In place: the mean over ranks (nothing to do in a single process).
    pub fn allreduce_mean_(&self, t: &mut Tensor) -> Result<()> {
        self.group.as_ref().map_or(Ok(()), |g| g.allreduce_mean_(t))
    }

    /// In place: the elementwise minimum over ranks.
    pub fn allreduce_min_(&self, t: &mut Tensor) -> Result<()> {
        self.group.as_ref().map_or(Ok(()), |g| g.allreduce_min_(t))
    }

    /// In place: the elementwise maximum over ranks.
    pub fn allreduce_max_(&self, t: &mut Tensor) -> Result<()> {
        self.group.as_ref().map_or(Ok(()), |g| g.allreduce_max_(t))
    }

    /// This rank's share of a batch of `total` rows.
    pub fn split(&self, total: i64) -> crate::rows::Split {
        crate::rows::Split::of(total, self.rank, self.world_size)
    }

    /// In place: rank `root`'s tensor on every rank.
    pub fn broadcast_(&self, t: &mut Tensor, root: usize) -> Result<()> {
        self.group.as_ref().map_or(Ok(()), |g| g.broadcast_(t, root))
    }

    pub fn barrier(&self) -> Result<()> {
        self.group.as_ref().map_or(Ok(()), ProcessGroup::barrier)
    }
}
