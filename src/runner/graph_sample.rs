//! `relaxflow sample` in blocks of one size, replayed from a CUDA graph when the run asks for `train.cuda_graph`:
//! a DDPM's 1000 steps, DDIM's or DiffFlow's N steps become one launch per block. The first full block runs eagerly
//! (warm-up), the second is captured and replayed, later ones replay; a last, smaller block runs eagerly. Random draws
//! use the CUDA generator's graph-safe state, so a replay draws what the eager block would have. Samplers that
//! synchronise with the host (adaptive ODE solvers) fail to capture and stay eager, saying why.
use crate::model::Model;
use crate::native::graph::{self, CudaGraph};
use anyhow::{Context, Result};
use tch::{Device, Tensor};

enum Mode {
    Eager,
    /// The next full block runs eagerly; the one after is captured.
    Warmup,
    /// The next full block is captured, into a buffer like the warm-up block.
    Capture { like: Tensor },
    Captured { graph: CudaGraph, out: Tensor },
}

/// Draws blocks of samples from a model, through a CUDA graph where it can.
pub struct BlockSampler<'a> {
    model: &'a dyn Model,
    device: Device,
    block: i64,
    mode: Mode,
    note: Option<String>,
    /// Blocks drawn by replaying the graph.
    pub replays: usize,
}

impl<'a> BlockSampler<'a> {
    /// `graphs`: whether the run asks for CUDA graphs (`train.cuda_graph`).
    pub fn new(model: &'a dyn Model, device: Device, block: i64, graphs: bool) -> Self {
        let why_eager = match device {
            _ if !graphs => None,
            Device::Cuda(_) if !graph::available() => Some("this build has no CUDA graphs (cargo feature `cuda-graphs`)".to_string()),
            Device::Cuda(_) => None,
            other => Some(format!("CUDA graphs need a CUDA device, and sampling runs on {other:?}")),
        };
        let mode = if graphs && why_eager.is_none() { Mode::Warmup } else { Mode::Eager };
        let note = why_eager.map(|why| format!("train.cuda_graph: {why}; every block is sampled eagerly"));
        BlockSampler { model, device, block, mode, note, replays: 0 }
    }

    /// Why blocks are sampled eagerly, if the run asked for graphs and they are.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// `m` samples (no gradients): a replay when `m` is the block size and a graph is captured, else eagerly.
    pub fn draw(&mut self, m: i64) -> Result<Tensor> {
        let eager = || tch::no_grad(|| self.model.sample(m));
        if m != self.block {
            return Ok(eager());
        }
        match std::mem::replace(&mut self.mode, Mode::Eager) {
            Mode::Eager => Ok(eager()),
            Mode::Warmup => {
                let x = eager();
                self.mode = Mode::Capture { like: x.shallow_clone() };
                Ok(x)
            }
            Mode::Capture { like } => {
                // The output buffer stays put across replays.
                let out = like.zeros_like();
                drop(like);
                let captured = CudaGraph::capture(self.device, || {
                    tch::no_grad(|| out.shallow_clone().copy_(&self.model.sample(m)));
                    Ok(())
                });
                match captured {
                    Ok(graph) => {
                        self.mode = Mode::Captured { graph, out };
                        self.replay()
                    }
                    Err(e) => {
                        self.note = Some(format!("train.cuda_graph: capturing the sampler failed ({e:#}); every block is sampled eagerly"));
                        Ok(eager())
                    }
                }
            }
            captured @ Mode::Captured { .. } => {
                self.mode = captured;
                self.replay()
            }
        }
    }

    fn replay(&mut self) -> Result<Tensor> {
        let Mode::Captured { graph, out } = &self.mode else { unreachable!("replay without a graph") };
        graph.replay().context("replaying the captured sampler")?;
        self.replays += 1;
        Ok(out.copy())
    }
}
