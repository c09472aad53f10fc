//! Training, evaluation, sampling, checkpoints, metrics and pictures: everything that turns an experiment into a
//! run folder.
pub mod c2st;
pub mod checkpoint;
pub mod classifier_run;
pub mod classifier_summary;
pub mod convergence;
pub use crate::files;
pub mod generative;
pub mod graph_sample;
pub(crate) mod graph_step;
pub mod ema;
pub mod evaluate;
pub mod metrics;
pub mod optim;
pub mod pictures;
pub mod quality;
pub mod replicas;
pub mod rundir;
pub mod interrupt;
pub mod marginal;
pub mod sampling;
pub mod sbi;
pub mod pool;
pub mod session;
pub mod summary;
pub mod sweep;
pub mod train;

use anyhow::{bail, Result};
use tch::Device;

/// `cpu`, `cuda` or `cuda:N`; by default CUDA when there is one.
pub fn parse_device(name: Option<&str>) -> Result<Device> {
    match name {
        None => Ok(Device::cuda_if_available()),
        Some("cpu") => Ok(Device::Cpu),
        Some(s) if s == "cuda" || s.starts_with("cuda:") => {
            let index = match s.strip_prefix("cuda:") {
                Some(i) => i.parse::<usize>().map_err(|_| anyhow::anyhow!("bad device `{s}` (expected cuda:N)"))?,
                None => 0,
            };
            if !tch::Cuda::is_available() || index >= tch::Cuda::device_count() as usize {
                bail!("device `{s}` requested, but no such CUDA device is available (CUDA devices: {})", tch::Cuda::device_count());
            }
            Ok(Device::Cuda(index))
        }
        Some(other) => bail!("unknown device `{other}` (expected cpu, cuda or cuda:N)"),
    }
}

/// Waits for queued kernels, so wall-clock timings mean something on CUDA.
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
