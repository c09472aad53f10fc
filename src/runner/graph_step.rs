//! `train.cuda_graph`: the whole training step -- batch draw, loss, backward, clipping, Adam's update -- captured once
//! as a CUDA graph and replayed, one launch instead of the ~700 kernel launches of a small 2D flow's step.
//!
//! A replay reads and writes the memory the capture saw, so everything that changes from step to step lives in device
//! tensors filled before each replay: the learning rate, and Adam's update count (incremented inside the graph).
//! Random draws use the CUDA generator's graph-safe state: seeding it before a replay (`manual_seed(step seed)`, as
//! every step does) makes the replay draw what the eager step would. The step's loss and gradient norm are copied into
//! tensors that stay put. Host state is not touched inside the step: the host's update count is advanced after it.
//!
//! The same step runs eagerly where it cannot be captured (the CPU, a build without the feature `cuda-graphs`, a
//! model whose step is not capturable, several processes, a failed capture), so CPU tests check the step itself.
use super::optim::Adam;
use super::train::Trainable;
use crate::native::graph::Graphed;
use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

/// Eager steps before the capture (allocator pools, cuBLAS handles and lazy initialisation settle in them).
const WARMUP: usize = 3;

/// What the step reads and writes besides the model and Adam: device tensors that stay put across replays.
struct Buffers {
    /// The learning rate (float64 scalar on the device), filled before each step.
    lr: Tensor,
    /// Adam's update count on the device, incremented by the step.
    t: Tensor,
    /// The step's loss and gradient norm (before clipping), written by the step.
    loss: Tensor,
    norm: Tensor,
    n_train: i64,
    batch: i64,
    clip: Option<f64>,
    device: Device,
}

impl Buffers {
    /// The step's device work; the same whether it runs now or is being captured.
    fn work(&self, job: &dyn Trainable, adam: &Adam, step: i64) -> Result<()> {
        let idx = Tensor::randint(self.n_train, [self.batch], (Kind::Int64, self.device));
        adam.zero_grad();
        let loss = job.loss_backward(&idx, step);
        let norm = match self.clip {
            Some(c) => adam.clip_grad_norm(c),
            None => adam.grad_norm(),
        };
        adam.step_on_device(&self.lr, &self.t);
        tch::no_grad(|| {
            self.loss.shallow_clone().copy_(&loss.detach().to_kind(Kind::Float));
            self.norm.shallow_clone().copy_(&norm);
        });
        Ok(())
    }
}

/// The training step of `train.cuda_graph`.
pub(crate) struct GraphStep {
    buffers: Buffers,
    graph: Graphed,
}

impl GraphStep {
    /// The step of a run with `train.cuda_graph` (None when the key is off), starting from Adam's update count.
    pub fn new(job: &dyn Trainable, adam: &Adam, ranks: usize) -> Option<GraphStep> {
        let t = &job.exp().train;
        if !t.cuda_graph {
            return None;
        }
        let device = job.device();
        let why_eager = match device {
            Device::Cuda(_) if ranks > 1 => Some(format!("{ranks} processes reduce gradients between backward and update; only one process is captured")),
            Device::Cuda(_) => job.not_capturable(),
            other => Some(format!("CUDA graphs need a CUDA device, and this run is on {other:?}")),
        };
        let scalar = |v: f64, kind: Kind| Tensor::full([], v, (kind, device));
        let buffers = Buffers {
            lr: scalar(t.lr, Kind::Double),
            t: scalar(adam.t as f64, Kind::Double),
            loss: scalar(0.0, Kind::Float),
            norm: scalar(0.0, Kind::Float),
            n_train: job.n_train(),
            batch: t.batch_size,
            clip: t.grad_clip,
            device,
        };
        Some(GraphStep { buffers, graph: Graphed::new(device, WARMUP, why_eager) })
    }

    /// Why the steps run eagerly, if they do.
    pub fn note(&self) -> Option<String> {
        self.graph.fallback().map(|why| format!("train.cuda_graph: {why}; every step runs eagerly"))
    }

    /// Whether steps replay a captured graph.
    pub fn is_captured(&self) -> bool {
        self.graph.is_captured()
    }

    /// Step `step` at learning rate `lr` (the caller has seeded it): eager, a warm-up, the capture then its first
    /// replay, or a replay. Returns the step's loss and gradient norm (device scalars, valid until the next step).
    pub fn step(&mut self, job: &dyn Trainable, adam: &mut Adam, step: i64, lr: f64) -> Result<(Tensor, Tensor)> {
        let b = &self.buffers;
        let _ = b.lr.shallow_clone().fill_(lr);
        self.graph.run(|| b.work(job, adam, step)).with_context(|| format!("training step {}", step + 1))?;
        adam.count_step();
        Ok((b.loss.shallow_clone(), b.norm.shallow_clone()))
    }
}
