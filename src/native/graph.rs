//! CUDA graphs through the shim (`csrc/graph.cpp`, cargo feature `cuda-graphs`): the CUDA work of a fixed-shape step
//! is captured once and replayed with one launch, which is what small launch-bound models need (a 2D flow's training
//! step is ~700 kernel launches). [`Graphed`] is what callers use: on CUDA with the feature it captures after eager
//! warm-up calls; on the CPU, in builds without the feature, or when capture fails, it calls the step eagerly (the
//! plain fallback), so the same code runs everywhere.
//!
//! A captured step reads and writes the same memory at every replay: its inputs must be copied into tensors that
//! stay put (not reallocated), its outputs read from tensors it fills in place, and host-side values (learning rates,
//! step counts) must live in device tensors. Work queued by other threads during capture is not allowed.
use super::{call, ffi};
use anyhow::{anyhow, bail, Context, Result};
use std::ptr::{self, NonNull};
use tch::Device;

/// Whether this build can capture CUDA graphs (the feature `cuda-graphs`).
pub fn available() -> bool {
    unsafe { ffi::rf_graph_available() != 0 }
}

/// One captured CUDA graph.
pub struct CudaGraph {
    raw: NonNull<ffi::RfGraph>,
}

impl CudaGraph {
    /// Captures the CUDA work that `f` queues on this thread (it does not run now; [`CudaGraph::replay`] runs it).
    /// `f` should have run eagerly at least once before (warm-up: allocator pools, cuDNN/cuBLAS handles, lazy init).
    pub fn capture(device: Device, f: impl FnOnce() -> Result<()>) -> Result<CudaGraph> {
        let Device::Cuda(index) = device else { bail!("CUDA graphs need a CUDA device, not {device:?}") };
        let mut raw: *mut ffi::RfGraph = ptr::null_mut();
        call("creating a CUDA graph", |err| unsafe { ffi::rf_graph_new(index as i32, &mut raw, err) })?;
        let graph = CudaGraph { raw: NonNull::new(raw).ok_or_else(|| anyhow!("creating a CUDA graph returned null"))? };
        call("beginning a CUDA graph capture", |err| unsafe { ffi::rf_graph_capture_begin(graph.raw.as_ptr(), err) })?;
        let captured = f();
        // Always close the capture (also when `f` failed), so the thread's stream is restored.
        let ended = call("ending a CUDA graph capture", |err| unsafe { ffi::rf_graph_capture_end(graph.raw.as_ptr(), err) });
        captured.context("the step failed while being captured")?;
        ended?;
        Ok(graph)
    }

    /// Runs the captured work again on the current stream.
    pub fn replay(&self) -> Result<()> {
        call("replaying a CUDA graph", |err| unsafe { ffi::rf_graph_replay(self.raw.as_ptr(), err) })
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        unsafe { ffi::rf_graph_free(self.raw.as_ptr()) }
    }
}

enum Stage {
    /// Every call runs the step (why: [`Graphed::fallback`]).
    Eager,
    /// This many eager calls are left before the capture.
    Warmup(usize),
    Captured(CudaGraph),
}

/// A fixed-shape step run as a replayed CUDA graph where that is possible, else eagerly: `warmup` calls of
/// [`Graphed::run`] run the step (real steps: they count), the next one captures it and replays the capture, later
/// ones replay. On the CPU, in builds without the feature, when the caller gives a reason, or when the capture fails,
/// every call runs the step and [`Graphed::fallback`] says why. The training step (`runner::graph_step`) and
/// `relaxflow sample`'s blocks (`runner::graph_sample`) go through it.
pub struct Graphed {
    stage: Stage,
    device: Device,
    /// Why the step runs eagerly (None when it is, or will be, captured).
    fallback: Option<String>,
}

impl Graphed {
    /// `why_not`: the caller's reason not to capture (its wording is kept); else the device and the build decide.
    pub fn new(device: Device, warmup: usize, why_not: Option<String>) -> Self {
        let fallback = why_not.or_else(|| match device {
            Device::Cuda(_) if !available() => Some("this build has no CUDA graphs (cargo feature `cuda-graphs`)".to_string()),
            Device::Cuda(_) => None,
            other => Some(format!("CUDA graphs need a CUDA device; {other:?} runs the step eagerly")),
        });
        let stage = if fallback.is_some() { Stage::Eager } else { Stage::Warmup(warmup) };
        Graphed { stage, device, fallback }
    }

    /// One step: a call of `step` (eager or warm-up), the capture of `step` then its first replay, or a replay. The
    /// captured work does not run while it is captured, so a failed capture runs `step` instead.
    pub fn run(&mut self, mut step: impl FnMut() -> Result<()>) -> Result<()> {
        if let Stage::Warmup(0) = self.stage {
            match CudaGraph::capture(self.device, &mut step) {
                Ok(g) => self.stage = Stage::Captured(g),
                Err(e) => {
                    self.fallback = Some(format!("capture failed: {e:#}"));
                    self.stage = Stage::Eager;
                }
            }
        }
        match &mut self.stage {
            Stage::Captured(g) => g.replay(),
            Stage::Warmup(left) => {
                *left -= 1;
                step()
            }
            Stage::Eager => step(),
        }
    }

    /// Whether steps replay a captured graph.
    pub fn is_captured(&self) -> bool {
        matches!(self.stage, Stage::Captured(_))
    }

    /// Why the step runs eagerly, if it does.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use tch::{Kind, Tensor};

    #[test]
    fn on_the_cpu_the_step_runs_eagerly_every_time() {
        let calls = Cell::new(0);
        let x = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let mut g = Graphed::new(Device::Cpu, 2, None);
        assert!(!g.is_captured());
        assert!(g.fallback().unwrap().contains("CUDA device"), "{:?}", g.fallback());
        for _ in 0..5 {
            g.run(|| {
                calls.set(calls.get() + 1);
                let _ = x.shallow_clone().g_add_scalar_(1.0);
                Ok(())
            })
            .unwrap();
        }
        assert!(!g.is_captured());
        assert_eq!(calls.get(), 5, "2 warm-up calls and 3 runs, all eager");
        assert_eq!(x.double_value(&[0]), 5.0);
        let told = Graphed::new(Device::Cuda(0), 1, Some("not this model".into()));
        assert_eq!(told.fallback(), Some("not this model"), "the caller's reason wins");
    }

    #[test]
    fn errors_of_the_step_come_through_the_fallback() {
        let mut n = 0;
        let mut g = Graphed::new(Device::Cpu, 0, None);
        let mut step = || {
            n += 1;
            if n == 2 {
                bail!("step 2 failed")
            }
            Ok(())
        };
        g.run(&mut step).unwrap();
        assert!(g.run(&mut step).unwrap_err().to_string().contains("step 2 failed"));
    }

    #[test]
    fn capturing_needs_a_cuda_device_and_says_so() {
        let err = CudaGraph::capture(Device::Cpu, || Ok(())).err().expect("no capture on the CPU").to_string();
        assert!(err.contains("CUDA device"), "{err}");
        if !available() {
            // Without the feature the shim answers "unsupported" rather than crashing, even for a CUDA device.
            let err = CudaGraph::capture(Device::Cuda(0), || Ok(())).err().expect("no graphs in this build").to_string();
            assert!(err.contains("unsupported") && err.contains("cuda-graphs"), "{err}");
        }
    }
}
