//! The context encoder h(c): the one place a raw context becomes the features every conditioner reads.
//!
//! A vector context is z-scored per column with the training contexts' mean and std (set once by `data_init`, as
//! sbi's NPE does by default; saved with the weights, not trained), then passes through unchanged or through an MLP
//! when the model asks for an embedding width; a class index looks up a learned table row (N(0, 1) initialised, as
//! torch.nn.Embedding).
use super::{Activation, Mlp};
use crate::context::{Context, ContextSpec};
use anyhow::{ensure, Result};
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct ContextEncoder {
    pub spec: ContextSpec,
    table: Option<Tensor>,
    mlp: Option<Mlp>,
    width: i64,
    /// Per-column shift and scale of a vector context (0 and 1 until `data_init`).
    shift: Option<Tensor>,
    scale: Option<Tensor>,
}

impl ContextEncoder {
    /// `embed`: the feature width E (a class table's width, or an MLP's output for vectors); None keeps a vector as
    /// it is and gives classes 16 features.
    pub fn new(path: &nn::Path, spec: ContextSpec, embed: Option<i64>) -> Result<Self> {
        if let Some(e) = embed {
            ensure!(e > 0, "model.context_embed must be positive, got {e}");
        }
        Ok(match spec {
            ContextSpec::Class { classes } => {
                ensure!(classes >= 1, "a class context needs at least one class, got {classes}");
                let width = embed.unwrap_or(16);
                let table = path.var("embedding", &[classes, width], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
                ContextEncoder { spec, table: Some(table), mlp: None, width, shift: None, scale: None }
            }
            ContextSpec::Vector { width: k } => {
                ensure!(k >= 1, "a vector context needs at least one column, got {k}");
                let shift = Some(path.zeros_no_train("shift", &[k]));
                let scale = Some(path.ones_no_train("scale", &[k]));
                let (mlp, width) = match embed {
                    Some(e) => (Some(Mlp::new(&path.sub("mlp"), k, &[e.max(32)], e, Activation::Relu, false)?), e),
                    None => (None, k),
                };
                ContextEncoder { spec, table: None, mlp, width, shift, scale }
            }
        })
    }

    /// E, the width of h(c).
    pub fn width(&self) -> i64 {
        self.width
    }

    /// Sets a vector context's shift and scale to the mean and std of the contexts `c` (a first training batch);
    /// a constant column keeps scale 1.
    pub fn data_init(&self, c: &Context) {
        if let (Context::Vector(v), Some(shift), Some(scale)) = (c, &self.shift, &self.scale) {
            tch::no_grad(|| {
                let v = v.to_kind(shift.kind()).to_device(shift.device());
                let std = v.std_dim(0, true, false);
                let std = std.where_self(&std.gt(1e-8), &std.ones_like());
                shift.shallow_clone().copy_(&v.mean_dim(0, false, None));
                scale.shallow_clone().copy_(&std);
            });
        }
    }

    /// h(c) [B, E] (f32). Panics on a context of the wrong kind: the runner and the CLI check contexts against the
    /// spec first (`ContextSpec::check`), so reaching this is a bug.
    pub fn forward(&self, c: &Context) -> Tensor {
        match (c, &self.table, &self.mlp) {
            (Context::Class(idx), Some(table), _) => table.index_select(0, &idx.to_device(table.device())),
            (Context::Vector(v), None, Some(mlp)) => mlp.forward(&self.standardize(v)),
            (Context::Vector(v), None, None) => self.standardize(v),
            _ => panic!("a context of the wrong kind for {} (the caller checks contexts first)", self.spec.describe()),
        }
    }
}

impl ContextEncoder {
    fn standardize(&self, v: &Tensor) -> Tensor {
        match (&self.shift, &self.scale) {
            (Some(shift), Some(scale)) => (v.to_kind(shift.kind()) - shift) / scale,
            _ => v.shallow_clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn classes_look_up_rows_and_vectors_pass_through() {
        let vs = nn::VarStore::new(Device::Cpu);
        let e = ContextEncoder::new(&vs.root(), ContextSpec::Class { classes: 3 }, Some(4)).unwrap();
        let h = e.forward(&Context::Class(Tensor::from_slice(&[2i64, 0, 2])));
        assert_eq!(h.size(), vec![3, 4]);
        assert!(h.get(0).equal(&h.get(2)) && !h.get(0).equal(&h.get(1)));
        let v = ContextEncoder::new(&vs.root().sub("v"), ContextSpec::Vector { width: 2 }, None).unwrap();
        let c = Tensor::randn([5, 2], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        assert!(v.forward(&Context::Vector(c.shallow_clone())).equal(&c), "identity before data_init");
        v.data_init(&Context::Vector(c.shallow_clone()));
        let h = v.forward(&Context::Vector(c.shallow_clone()));
        assert!(h.mean_dim(0, false, None).abs().max().double_value(&[]) < 1e-5);
        assert!((h.std_dim(0, true, false) - 1.0).abs().max().double_value(&[]) < 1e-5);
        assert!(ContextEncoder::new(&vs.root().sub("w"), ContextSpec::Vector { width: 2 }, Some(0)).is_err());
    }
}
