//! Adam (Kingma & Ba 2015, Algorithm 1) over one flat buffer that every trainable parameter is a view of.
//!
//! At construction each parameter's storage is moved into a slice of `flat`, and each gradient into a slice of
//! `grad`; autograd then accumulates gradients in place, so the update is a handful of kernels on two flat tensors
//! whatever the number of parameters, with no host sync. The moments are ours, so they are checkpointed.
use anyhow::{bail, Result};
use tch::{nn, Kind, Tensor};

/// Adam's constants.
#[derive(Clone, Copy, Debug)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (AdamW, Loshchilov & Hutter 2019).
    pub weight_decay: f64,
}

/// Adam with flat parameter, gradient and moment buffers.
pub struct Adam {
    cfg: AdamConfig,
    flat: Tensor,
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    /// Number of updates taken (for bias correction).
    pub t: i64,
}

impl Adam {
    /// Moves every trainable variable of `vs` (in name order) into one flat buffer, and its gradient likewise.
    pub fn new(vs: &nn::VarStore, cfg: AdamConfig) -> Result<Self> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        if vars.is_empty() {
            bail!("the model has no trainable parameters");
        }
        if let Some((name, _)) = vars.iter().find(|(_, t)| t.kind() != Kind::Float) {
            bail!("parameter {name} is not f32; the flat optimizer expects f32 parameters");
        }
        let total: i64 = vars.iter().map(|(_, t)| t.numel() as i64).sum();
        let opts = (Kind::Float, vs.device());
        let (flat, grad) = (Tensor::zeros([total], opts), Tensor::zeros([total], opts));
        // Give every parameter a gradient tensor, then re-seat parameters and gradients as views of the buffers.
        let touch: Tensor = vars.iter().map(|(_, t)| (t * 0.0).sum(None)).sum();
        touch.backward();
        let mut offset = 0;
        for (_, var) in vars.iter_mut() {
            let n = var.numel() as i64;
            let size = var.size();
            let view = flat.narrow(0, offset, n).view(size.as_slice());
            tch::no_grad(|| view.shallow_clone().copy_(var));
            var.set_data(&view);
            let mut g = var.grad();
            g.set_data(&grad.narrow(0, offset, n).view(size.as_slice()));
            offset += n;
        }
        Ok(Adam { cfg, m: flat.zeros_like(), v: flat.zeros_like(), flat, grad, t: 0 })
    }

    /// Number of trainable scalars.
    pub fn numel(&self) -> i64 {
        self.flat.size()[0]
    }

    /// The flat gradient buffer (every parameter's `.grad` is a view of it), e.g. to allreduce it across ranks.
    pub fn grad_mut(&mut self) -> &mut Tensor {
        &mut self.grad
    }

    /// The first and second moment buffers, e.g. to broadcast them from rank 0.
    pub fn moments_mut(&mut self) -> [&mut Tensor; 2] {
        [&mut self.m, &mut self.v]
    }

    pub fn zero_grad(&mut self) {
        let _ = self.grad.zero_();
    }

    /// ||g||₂ over all parameters (a device tensor; no sync).
    pub fn grad_norm(&self) -> Tensor {
        self.grad.norm()
    }

    /// Scales the gradient so that its global norm is at most `max_norm`; returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Tensor {
        let norm = self.grad_norm();
        let factor = (max_norm / (&norm + 1e-6)).clamp_max(1.0);
        let _ = self.grad.g_mul_(&factor);
        norm
    }

    /// One update with learning rate `lr`:
    /// m ← β₁m + (1-β₁)g; v ← β₂v + (1-β₂)g²; θ ← θ - lr·(m/(1-β₁ᵗ)) / (√(v/(1-β₂ᵗ)) + ε).
    pub fn step(&mut self, lr: f64) {
        let c = self.cfg;
        self.t += 1;
        tch::no_grad(|| {
            if c.weight_decay > 0.0 {
                let _ = self.flat.g_mul_scalar_(1.0 - lr * c.weight_decay);
            }
            let _ = self.m.lerp_(&self.grad, 1.0 - c.beta1);
            let _ = self.v.lerp_(&self.grad.square(), 1.0 - c.beta2);
            let bias1 = 1.0 - c.beta1.powi(self.t as i32);
            let bias2 = 1.0 - c.beta2.powi(self.t as i32);
            let mut denom = self.v.sqrt();
            let _ = denom.g_div_scalar_(bias2.sqrt()).g_add_scalar_(c.eps);
            let mut update = &self.m / denom;
            let _ = update.g_mul_scalar_(lr / bias1);
            let _ = self.flat.g_sub_(&update);
        });
    }

    /// The optimizer's state for a checkpoint: moments and step count.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        vec![
            ("adam.m".into(), self.m.shallow_clone()),
            ("adam.v".into(), self.v.shallow_clone()),
            ("adam.t".into(), Tensor::from(self.t)),
        ]
    }

    /// Restores moments and step count saved by `state`.
    pub fn load_state(&mut self, m: &Tensor, v: &Tensor, t: i64) -> Result<()> {
        if m.size() != self.m.size() || v.size() != self.v.size() {
            bail!("optimizer state has {:?} entries, the model has {:?} parameters", m.size(), self.m.size());
        }
        tch::no_grad(|| {
            self.m.copy_(m);
            self.v.copy_(v);
        });
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nets::{Activation, Mlp};
    use tch::nn::OptimizerConfig;
    use tch::Device;

    fn model(vs: &nn::VarStore) -> Mlp {
        Mlp::new(&vs.root(), 3, &[5, 4], 2, Activation::Tanh, false).unwrap()
    }

    fn loss(net: &Mlp, x: &Tensor) -> Tensor {
        net.forward(x).square().mean(None)
    }

    #[test]
    fn flat_adam_matches_torch_adam() {
        let x = Tensor::randn([16, 3], (Kind::Float, Device::Cpu));
        tch::manual_seed(1);
        let vs_a = nn::VarStore::new(Device::Cpu);
        let net_a = model(&vs_a);
        tch::manual_seed(1);
        let vs_b = nn::VarStore::new(Device::Cpu);
        let net_b = model(&vs_b);

        let cfg = AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let mut ours = Adam::new(&vs_a, cfg).unwrap();
        let mut theirs = nn::Adam::default().build(&vs_b, 1e-2).unwrap();
        for _ in 0..5 {
            ours.zero_grad();
            loss(&net_a, &x).backward();
            ours.step(1e-2);
            theirs.backward_step(&loss(&net_b, &x));
        }
        let (a, b) = (vs_a.variables(), vs_b.variables());
        for (name, ta) in &a {
            let diff = (ta - &b[name]).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{name} differs by {diff}");
        }
        assert!(ours.grad_norm().double_value(&[]) > 0.0);
    }

    #[test]
    fn clipping_bounds_the_gradient_norm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = model(&vs);
        let cfg = AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let mut adam = Adam::new(&vs, cfg).unwrap();
        adam.zero_grad();
        (loss(&net, &(Tensor::ones([4, 3], (Kind::Float, Device::Cpu)) * 100.0)) * 1e3).backward();
        let before = adam.clip_grad_norm(0.5).double_value(&[]);
        assert!(before > 0.5);
        assert!((adam.grad_norm().double_value(&[]) - 0.5).abs() < 1e-3);
    }
}
