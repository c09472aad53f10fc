//! Adam (Kingma & Ba 2015, Algorithm 1) over one flat buffer that every trainable parameter is a view of.
//!
//! At construction each parameter's storage is moved into a slice of `flat`, and each gradient into a slice of
//! `grad`; autograd then accumulates gradients in place, so the update is a handful of kernels on two flat tensors
//! whatever the number of parameters, with no host sync. The moments are ours, so they are checkpointed.
//!
//! The update itself runs one of two ways (`train.optimizer_impl`): `flat`, tensor operations on the buffers, or
//! `fused`, ATen's fused AdamW kernel on the same buffers through the C++ shim (`crate::native::fused_adam`).
//! Both keep the same moments, so a checkpoint written by one resumes with the other.
use crate::experiment::config::OptimizerImpl;
use crate::native::{self, AdamOptions};
use anyhow::{bail, Context, Result};
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
    /// How `step` runs.
    imp: OptimizerImpl,
    /// The fused kernel's step count: a float32 scalar on the parameters' device, set to `t` before each fused update.
    step_t: Option<Tensor>,
    /// The moving average of the weights, updated after every step (`train.ema_decay`).
    pub ema: Option<super::ema::Ema>,
}

impl Adam {
    /// Moves every trainable variable of `vs` (in name order) into one flat buffer, and its gradient likewise.
    pub fn new(vs: &nn::VarStore, cfg: AdamConfig) -> Result<Self> {
        Self::with_layout(vs, cfg, false)
    }

    /// [`Adam::new`], with 4-D parameters (convolution weights) laid out channels-last in the flat buffer when
    /// `channels_last`: each is a permuted view with NHWC strides (`train.channels_last`), so convolutions may run in
    /// that memory format (cuDNN's tensor-core kernels prefer it) while the update still sees one flat buffer.
    pub fn with_layout(vs: &nn::VarStore, cfg: AdamConfig, channels_last: bool) -> Result<Self> {
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
            let shaped = |buffer: &Tensor| match size.as_slice() {
                &[o, i, h, w] if channels_last => buffer.narrow(0, offset, n).view([o, h, w, i]).permute([0, 3, 1, 2]),
                _ => buffer.narrow(0, offset, n).view(size.as_slice()),
            };
            let view = shaped(&flat);
            tch::no_grad(|| view.shallow_clone().copy_(var));
            var.set_data(&view);
            let mut g = var.grad();
            g.set_data(&shaped(&grad));
            offset += n;
        }
        Ok(Adam { cfg, m: flat.zeros_like(), v: flat.zeros_like(), flat, grad, t: 0, imp: OptimizerImpl::Flat, step_t: None, ema: None })
    }

    /// The same optimizer with its update run by `imp` (builder form of [`Adam::set_impl`]).
    pub fn with_impl(mut self, imp: OptimizerImpl) -> Result<Self> {
        self.set_impl(imp)?;
        Ok(self)
    }

    /// Chooses how `step` runs from now on; the moments and step count carry over unchanged.
    pub fn set_impl(&mut self, imp: OptimizerImpl) -> Result<()> {
        self.step_t = match imp {
            OptimizerImpl::Flat => None,
            OptimizerImpl::Fused => Some(Tensor::zeros([], (Kind::Float, self.flat.device()))),
        };
        self.imp = imp;
        Ok(())
    }

    /// How `step` runs.
    pub fn implementation(&self) -> OptimizerImpl {
        self.imp
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

    /// Zeroes the flat gradient buffer (every parameter's gradient is a view of it). Device work only (a captured
    /// step may call it).
    pub fn zero_grad(&self) {
        let _ = self.grad.shallow_clone().zero_();
    }

    /// ||g||₂ over all parameters (a device tensor; no sync).
    pub fn grad_norm(&self) -> Tensor {
        self.grad.norm()
    }

    /// Scales the gradient so that its global norm is at most `max_norm`; returns the norm before clipping. Device
    /// work only (a captured step may call it).
    pub fn clip_grad_norm(&self, max_norm: f64) -> Tensor {
        let norm = self.grad_norm();
        let factor = (max_norm / (&norm + 1e-6)).clamp_max(1.0);
        let _ = self.grad.shallow_clone().g_mul_(&factor);
        norm
    }

    /// One update with learning rate `lr`:
    /// m ← β₁m + (1-β₁)g; v ← β₂v + (1-β₂)g²; θ ← θ - lr·(m/(1-β₁ᵗ)) / (√(v/(1-β₂ᵗ)) + ε), after θ ← θ(1 - lr·wd)
    /// with weight decay. Panics if the fused kernel fails (see [`Adam::try_step`]); the flat update cannot fail.
    pub fn step(&mut self, lr: f64) {
        if let Err(e) = self.try_step(lr) {
            panic!("{e:#}");
        }
    }

    /// [`Adam::step`], with a failure of the fused kernel returned as an error (the step count is then unchanged).
    pub fn try_step(&mut self, lr: f64) -> Result<()> {
        self.try_step_raw(lr)?;
        if let Some(ema) = &mut self.ema {
            ema.update(&self.flat);
        }
        Ok(())
    }

    /// Keeps a moving average of the weights with target decay `decay` (see `ema`).
    pub fn with_ema(mut self, decay: Option<f64>) -> Self {
        self.ema = decay.map(|d| super::ema::Ema::new(&self.flat, d));
        self
    }

    /// Runs `f` with the averaged weights in place of the raw ones (every parameter of the model shows θ̄), then puts
    /// the raw weights back; without an average, `f` sees the raw weights.
    pub fn swapped_in_ema<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(ema) = &self.ema else { return f() };
        let raw = tch::no_grad(|| self.flat.copy());
        tch::no_grad(|| self.flat.shallow_clone().copy_(&ema.shadow));
        let out = f();
        tch::no_grad(|| self.flat.shallow_clone().copy_(&raw));
        out
    }

    /// Replaces the raw weights by their average for good (the end of training); nothing without an average.
    pub fn adopt_ema(&self) {
        if let Some(ema) = &self.ema {
            tch::no_grad(|| self.flat.shallow_clone().copy_(&ema.shadow));
        }
    }

    fn try_step_raw(&mut self, lr: f64) -> Result<()> {
        match &self.step_t {
            None => {
                self.step_flat(lr);
                Ok(())
            }
            Some(step_t) => {
                let c = self.cfg;
                let t = self.t + 1;
                let opts = AdamOptions { lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weight_decay: c.weight_decay, decoupled: true };
                tch::no_grad(|| {
                    let _ = step_t.shallow_clone().fill_(t as f64);
                    native::fused_adam(&self.flat, &self.grad, &self.m, &self.v, step_t, None, &opts)
                })
                .with_context(|| format!("Adam update {t} (train.optimizer_impl = \"fused\")"))?;
                self.t = t;
                Ok(())
            }
        }
    }

    /// The update as tensor operations on the flat buffers (`train.optimizer_impl = "flat"`).
    fn step_flat(&mut self, lr: f64) {
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

    /// [`Adam::step`]'s flat update with the learning rate and the step count read from device tensors, so that a
    /// captured CUDA graph replays it with the values of each step (`train.cuda_graph`): increments `t_dev` (a
    /// float64 scalar on the parameters' device holding the update count) and takes update `t_dev` at `lr`
    /// (a float64 scalar there too). Host state is left alone: after the step runs, call [`Adam::count_step`].
    pub fn step_on_device(&self, lr: &Tensor, t_dev: &Tensor) {
        let c = self.cfg;
        tch::no_grad(|| {
            let _ = t_dev.shallow_clone().g_add_scalar_(1.0);
            if c.weight_decay > 0.0 {
                let _ = self.flat.shallow_clone().g_mul_(&(lr * (-c.weight_decay) + 1.0));
            }
            let _ = self.m.shallow_clone().lerp_(&self.grad, 1.0 - c.beta1);
            let _ = self.v.shallow_clone().lerp_(&self.grad.square(), 1.0 - c.beta2);
            // 1 - β^t for both moments, computed where t lives.
            let bias1 = -Tensor::pow_scalar(c.beta1, t_dev) + 1.0;
            let bias2 = -Tensor::pow_scalar(c.beta2, t_dev) + 1.0;
            let mut denom = self.v.sqrt();
            let _ = denom.g_div_(&bias2.sqrt()).g_add_scalar_(c.eps);
            let mut update = &self.m / denom;
            let _ = update.g_mul_(&(lr / bias1));
            let _ = self.flat.shallow_clone().g_sub_(&update);
        });
    }

    /// Counts one update taken by [`Adam::step_on_device`] in the host's step count (checkpoints save it).
    pub fn count_step(&mut self) {
        self.t += 1;
    }

    /// The optimizer's state for a checkpoint: moments and step count.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            ("adam.m".into(), self.m.shallow_clone()),
            ("adam.v".into(), self.v.shallow_clone()),
            ("adam.t".into(), Tensor::from(self.t)),
        ];
        if let Some(ema) = &self.ema {
            out.push(("ema.flat".into(), ema.shadow.shallow_clone()));
            out.push(("ema.updates".into(), Tensor::from(ema.updates)));
        }
        out
    }

    /// Restores the moving average saved by `state`.
    pub fn load_ema(&mut self, shadow: &Tensor, updates: i64) -> Result<()> {
        let Some(ema) = &mut self.ema else { return Ok(()) };
        if shadow.size() != ema.shadow.size() {
            bail!("the weight average has {:?} entries, the model has {:?} parameters", shadow.size(), ema.shadow.size());
        }
        tch::no_grad(|| ema.shadow.copy_(shadow));
        ema.updates = updates;
        Ok(())
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

    /// Trains `net` from step `from` to `to` with a varying learning rate and clipping at 1 (which acts: the loss is
    /// scaled up); returns how many steps were clipped.
    fn train_steps(net: &Mlp, adam: &mut Adam, x: &Tensor, from: usize, to: usize) -> usize {
        let mut clipped = 0;
        for k in from..to {
            adam.zero_grad();
            (loss(net, x) * 20.0).backward();
            if adam.clip_grad_norm(1.0).double_value(&[]) > 1.0 {
                clipped += 1;
            }
            adam.step(1e-2 * (1 + k % 7) as f64 / 7.0);
        }
        clipped
    }

    fn max_diff(a: &nn::VarStore, b: &nn::VarStore) -> f64 {
        let (va, vb) = (a.variables(), b.variables());
        assert_eq!(va.len(), vb.len());
        va.iter().map(|(name, t)| (t - &vb[name]).abs().max().double_value(&[])).fold(0.0, f64::max)
    }

    #[test]
    fn channels_last_weights_train_like_contiguous_ones_and_stay_views_of_the_flat_buffer() {
        use tch::nn::Module;
        let x = Tensor::randn([4, 3, 8, 8], (Kind::Float, Device::Cpu));
        let run = |channels_last: bool| {
            tch::manual_seed(11);
            let vs = nn::VarStore::new(Device::Cpu);
            let c1 = nn::conv2d(vs.root() / "c1", 3, 8, 3, nn::ConvConfig { padding: 1, ..Default::default() });
            let c2 = nn::conv2d(vs.root() / "c2", 8, 2, 3, nn::ConvConfig { padding: 1, ..Default::default() });
            let cfg = AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
            let mut adam = Adam::with_layout(&vs, cfg, channels_last).unwrap();
            for _ in 0..20 {
                adam.zero_grad();
                c2.forward(&c1.forward(&x).relu()).square().mean(None).backward();
                adam.step(1e-2);
            }
            let w = vs.variables()["c1.weight"].shallow_clone();
            (vs, w, adam)
        };
        let (vs_a, w_a, _) = run(false);
        let (vs_b, w_b, adam_b) = run(true);
        assert_eq!(w_a.stride(), vec![27, 9, 3, 1]);
        assert_eq!(w_b.stride(), vec![27, 1, 9, 3], "NHWC strides: the input channel is innermost");
        assert_eq!(w_b.grad().stride(), w_b.stride(), "the gradient has the weight's layout");
        let d = max_diff(&vs_a, &vs_b);
        assert!(d < 1e-5, "channels-last and contiguous training differ by {d}");
        assert!((&w_a - &w_b).abs().max().double_value(&[]) < 1e-5 && (&w_a - w_a.zeros_like()).abs().max().double_value(&[]) > 0.0);
        // The weight is still the flat buffer's memory: an update of the buffer shows in the parameter.
        let before = w_b.sum(Kind::Double).double_value(&[]);
        tch::no_grad(|| {
            let _ = adam_b.flat.shallow_clone().g_add_scalar_(1.0);
        });
        assert!((w_b.sum(Kind::Double).double_value(&[]) - before - w_b.numel() as f64).abs() < 1e-3);
    }

    #[test]
    fn the_device_resident_update_equals_the_flat_one_over_100_steps() {
        let x = Tensor::randn([32, 3], (Kind::Float, Device::Cpu));
        let cfg = AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 };
        let fresh = || {
            tch::manual_seed(3);
            let vs = nn::VarStore::new(Device::Cpu);
            let net = model(&vs);
            (vs, net)
        };
        let (vs_a, net_a) = fresh();
        let mut flat = Adam::new(&vs_a, cfg).unwrap();
        train_steps(&net_a, &mut flat, &x, 0, 100);
        let (vs_b, net_b) = fresh();
        let mut dev = Adam::new(&vs_b, cfg).unwrap();
        let (lr, t_dev) = (Tensor::zeros([], (Kind::Double, Device::Cpu)), Tensor::zeros([], (Kind::Double, Device::Cpu)));
        for k in 0..100 {
            dev.zero_grad();
            (loss(&net_b, &x) * 20.0).backward();
            let _ = dev.clip_grad_norm(1.0);
            let _ = lr.shallow_clone().fill_(1e-2 * (1 + k % 7) as f64 / 7.0);
            dev.step_on_device(&lr, &t_dev);
            dev.count_step();
        }
        assert_eq!((dev.t, t_dev.int64_value(&[])), (100, 100));
        let diff = max_diff(&vs_a, &vs_b);
        eprintln!("device-resident vs flat Adam after 100 steps: max |Δθ| = {diff:.2e}");
        assert!(diff < 1e-6, "device-resident and flat parameters differ by {diff}");
        for ((name, a), (_, b)) in flat.state().iter().zip(dev.state().iter()) {
            let d = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[]);
            assert!(d < 1e-6, "{name} differs by {d}");
        }
    }

    #[test]
    fn fused_equals_flat_over_100_steps_with_weight_decay_clipping_and_a_resume() {
        let x = Tensor::randn([32, 3], (Kind::Float, Device::Cpu));
        let cfg = AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 };
        let fresh = |seed: i64| {
            tch::manual_seed(seed);
            let vs = nn::VarStore::new(Device::Cpu);
            let net = model(&vs);
            (vs, net)
        };
        // Flat, uninterrupted.
        let (vs_a, net_a) = fresh(7);
        let mut flat = Adam::new(&vs_a, cfg).unwrap();
        let clipped = train_steps(&net_a, &mut flat, &x, 0, 100);
        assert!(clipped > 10, "clipping must act for the test to cover it ({clipped} of 100 steps clipped)");
        // Fused: 50 steps, a checkpoint, then a fresh model (other initial weights) resumed from it for 50 more.
        let (vs_b, net_b) = fresh(7);
        let mut fused = Adam::new(&vs_b, cfg).unwrap().with_impl(OptimizerImpl::Fused).unwrap();
        train_steps(&net_b, &mut fused, &x, 0, 50);
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("checkpoint.pt");
        crate::runner::checkpoint::save(&ckpt, &vs_b, &fused, crate::runner::checkpoint::Progress { step: 50, elapsed_s: 0.0 }).unwrap();
        let (vs_c, net_c) = fresh(8);
        assert!(max_diff(&vs_b, &vs_c) > 1e-3, "the resumed model must start from other weights");
        let mut resumed = Adam::new(&vs_c, cfg).unwrap().with_impl(OptimizerImpl::Fused).unwrap();
        crate::runner::checkpoint::load_all(&ckpt, &vs_c, &mut resumed).unwrap();
        assert_eq!(resumed.t, 50);
        train_steps(&net_c, &mut resumed, &x, 50, 100);
        assert_eq!((resumed.t, resumed.implementation()), (100, OptimizerImpl::Fused));
        let diff = max_diff(&vs_a, &vs_c);
        eprintln!("fused (resumed at 50) vs flat after 100 steps: max |Δθ| = {diff:.2e}");
        assert!(diff < 1e-6, "fused (resumed) and flat parameters differ by {diff}");
        for ((name, a), (_, b)) in flat.state().iter().zip(resumed.state().iter()) {
            let d = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[]);
            assert!(d < 1e-6, "{name} differs by {d}");
        }
        // The comparison can see a difference of this kind: without weight decay the same run ends elsewhere.
        let (vs_d, net_d) = fresh(7);
        let mut no_decay = Adam::new(&vs_d, AdamConfig { weight_decay: 0.0, ..cfg }).unwrap().with_impl(OptimizerImpl::Fused).unwrap();
        train_steps(&net_d, &mut no_decay, &x, 0, 100);
        assert!(max_diff(&vs_a, &vs_d) > 1e-5, "weight decay must matter over 100 steps: {}", max_diff(&vs_a, &vs_d));
    }

    #[test]
    fn the_implementation_can_change_between_steps() {
        let x = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        let cfg = AdamConfig { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0 };
        tch::manual_seed(2);
        let vs_a = nn::VarStore::new(Device::Cpu);
        let net_a = model(&vs_a);
        tch::manual_seed(2);
        let vs_b = nn::VarStore::new(Device::Cpu);
        let net_b = model(&vs_b);
        let mut a = Adam::new(&vs_a, cfg).unwrap();
        let mut b = Adam::new(&vs_b, cfg).unwrap();
        for (k, imp) in [OptimizerImpl::Fused, OptimizerImpl::Flat, OptimizerImpl::Fused].into_iter().enumerate() {
            b.set_impl(imp).unwrap();
            train_steps(&net_a, &mut a, &x, k * 3, k * 3 + 3);
            train_steps(&net_b, &mut b, &x, k * 3, k * 3 + 3);
        }
        assert!(max_diff(&vs_a, &vs_b) < 1e-6);
    }

    #[test]
    fn clipping_bounds_the_gradient_norm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = model(&vs);
        let cfg = AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
        let adam = Adam::new(&vs, cfg).unwrap();
        adam.zero_grad();
        (loss(&net, &(Tensor::ones([4, 3], (Kind::Float, Device::Cpu)) * 100.0)) * 1e3).backward();
        let before = adam.clip_grad_norm(0.5).double_value(&[]);
        assert!(before > 0.5);
        assert!((adam.grad_norm().double_value(&[]) - 0.5).abs() < 1e-3);
    }
}
