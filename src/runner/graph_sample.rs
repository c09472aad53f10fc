//! `relaxflow sample` in blocks of one size, replayed from a CUDA graph when the run asks for `train.cuda_graph`:
//! a DDPM's 1000 steps, DDIM's or DiffFlow's N steps become one launch per block. The first full block runs eagerly
//! (warm-up), the second is captured and replayed, later ones replay; a last, smaller block runs eagerly. Random draws
//! use the CUDA generator's graph-safe state, so a replay draws what the eager block would have. Samplers that
//! synchronise with the host (adaptive ODE solvers) fail to capture and stay eager, saying why.
use crate::model::Model;
use crate::native::graph::Graphed;
use anyhow::{Context, Result};
use tch::{Device, Tensor};

/// Draws blocks of samples from a model, through a CUDA graph where it can.
pub struct BlockSampler<'a> {
    model: &'a dyn Model,
    block: i64,
    /// None when the run does not ask for graphs.
    graph: Option<Graphed>,
    /// The buffer a captured block writes (shaped like the warm-up block), once a full block has been drawn.
    out: Option<Tensor>,
    /// Blocks drawn by replaying the graph.
    pub replays: usize,
}

impl<'a> BlockSampler<'a> {
    /// `graphs`: whether the run asks for CUDA graphs (`train.cuda_graph`).
    pub fn new(model: &'a dyn Model, device: Device, block: i64, graphs: bool) -> Self {
        let why_not = (!device.is_cuda()).then(|| format!("CUDA graphs need a CUDA device, and sampling runs on {device:?}"));
        // The warm-up is the first full block, drawn eagerly to shape the buffer; the next one is captured.
        let graph = graphs.then(|| Graphed::new(device, 0, why_not));
        BlockSampler { model, block, graph, out: None, replays: 0 }
    }

    /// Why blocks are sampled eagerly, if the run asked for graphs and they are.
    pub fn note(&self) -> Option<String> {
        let why = self.graph.as_ref()?.fallback()?;
        Some(format!("train.cuda_graph: {why}; every block is sampled eagerly"))
    }

    /// `m` samples (no gradients): through the graph when `m` is the block size, else eagerly.
    pub fn draw(&mut self, m: i64) -> Result<Tensor> {
        let model = self.model;
        let eager = || tch::no_grad(|| model.sample(m));
        let graph = match self.graph.as_mut() {
            Some(g) if m == self.block && g.fallback().is_none() => g,
            _ => return Ok(eager()),
        };
        let Some(out) = &self.out else {
            let x = eager();
            self.out = Some(x.zeros_like());
            return Ok(x);
        };
        graph.run(|| {
            tch::no_grad(|| out.shallow_clone().copy_(&model.sample(m)));
            Ok(())
        })
        .context("sampling a block through the CUDA graph")?;
        if graph.is_captured() {
            self.replays += 1;
        }
        Ok(out.copy())
    }
}
