//! The resampled base distribution of Stimper et al. 2022 ("Resampling base distributions of normalizing flows",
//! §3): a Gaussian proposal π reweighted by a learned acceptance a(z) = σ(MLP(z)) in [0, 1] through rejection sampling
//! truncated after T proposals, so its density is known up to Z = E_π\[a]:
//!   p(z) = [(1 - α_T) a(z) / Z + α_T] π(z),  α_T = (1 - Z)^{T-1}   (eq. 4).
//! It lets a flow put (almost) no mass between separated modes without stretching its bijection (the survey's
//! Figure 1). Z is a Monte Carlo estimate: fresh from `z_samples` proposals per training batch (with gradient), and
//! from `eval_samples` proposals once per evaluation (cached until training resumes), so the log-likelihood is
//! reported as an estimate with the standard error of log Z.
use super::normal::{sum_except_batch, LN_2PI};
use super::Distribution;
use crate::nets::{Activation, Mlp};
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use tch::{nn, Kind, Tensor};

/// `[model.base.resampled]`: settings of the `resampled` base (`[model.base] kind = "resampled"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResampledParams {
    /// Hidden widths of the acceptance network.
    pub hidden: Vec<i64>,
    /// T: proposals before the last one is accepted whatever a(z).
    pub truncation: i64,
    /// Proposals estimating Z per training batch.
    pub z_samples: i64,
    /// Proposals estimating Z for evaluation.
    pub eval_samples: i64,
}

impl Default for ResampledParams {
    fn default() -> Self {
        ResampledParams {
            hidden: vec![64, 64],
            truncation: 100,
            z_samples: 1024,
            eval_samples: 1 << 20,
        }
    }
}

#[derive(Debug)]
pub struct ResampledGaussian {
    net: Mlp,
    dim: i64,
    p: ResampledParams,
    training: Cell<bool>,
    /// (log Z, its standard error) for evaluation, until training resumes.
    eval_log_z: RefCell<Option<(f64, f64)>>,
    device: tch::Device,
}

impl ResampledGaussian {
    pub fn new(path: &nn::Path, dim: i64, p: &ResampledParams) -> Result<Self> {
        ensure!(p.truncation >= 1, "model.base.resampled.truncation must be at least 1, got {}", p.truncation);
        ensure!(p.z_samples >= 2 && p.eval_samples >= 2, "model.base.resampled.z_samples and eval_samples must be at least 2");
        let net = Mlp::new(&path.sub("acceptance"), dim, &p.hidden, 1, Activation::Tanh, false)?;
        Ok(ResampledGaussian { net, dim, p: p.clone(), training: Cell::new(false), eval_log_z: RefCell::new(None), device: path.device() })
    }

    /// a(z) in (0, 1), shape \[batch].
    pub fn acceptance(&self, z: &Tensor) -> Tensor {
        self.net.forward(z).sigmoid().squeeze_dim(-1)
    }

    fn proposal(&self, n: i64, t: f64) -> Tensor {
        Tensor::randn([n, self.dim], (Kind::Float, self.device)) * t
    }

    /// (log Z, standard error of log Z) from `n` proposals, without gradients, in chunks.
    pub fn log_z_estimate(&self, n: i64) -> (f64, f64) {
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        tch::no_grad(|| {
            for start in (0..n).step_by(65_536) {
                let a = self.acceptance(&self.proposal((n - start).min(65_536), 1.0)).to_kind(Kind::Double);
                sum += a.sum(None).double_value(&[]);
                sum_sq += a.square().sum(None).double_value(&[]);
            }
        });
        let z = sum / n as f64;
        let var = (sum_sq / n as f64 - z * z).max(0.0);
        (z.ln(), (var / n as f64).sqrt() / z)
    }

    /// log Z for this call: a fresh estimate with gradient in training, the cached large one in evaluation.
    fn log_z(&self) -> Tensor {
        if self.training.get() {
            return self.acceptance(&self.proposal(self.p.z_samples, 1.0)).mean(None).log();
        }
        let (log_z, _) = *self.eval_log_z.borrow_mut().get_or_insert_with(|| self.log_z_estimate(self.p.eval_samples));
        Tensor::from(log_z).to_kind(Kind::Float).to_device(self.device)
    }

    /// How Z is estimated, for summary.json.
    pub fn describe(&self) -> serde_json::Value {
        let cached = *self.eval_log_z.borrow_mut().get_or_insert_with(|| self.log_z_estimate(self.p.eval_samples));
        serde_json::json!({
            "base": "resampled", "truncation": self.p.truncation, "z_samples_train": self.p.z_samples,
            "z_samples_eval": self.p.eval_samples, "log_z": cached.0, "log_z_stderr": cached.1,
        })
    }
}

impl Distribution for ResampledGaussian {
    /// log π(z) + log[(1 - α_T) a(z)/Z + α_T], α_T = (1 - Z)^{T-1}.
    fn log_prob(&self, z: &Tensor) -> Tensor {
        let log_pi = sum_except_batch(&z.square()) * -0.5 - 0.5 * self.dim as f64 * LN_2PI;
        let log_z = self.log_z();
        let z_norm = log_z.exp();
        let alpha_t = (-&z_norm + 1.0).clamp_min(0.0).pow_tensor_scalar((self.p.truncation - 1) as f64);
        let weight = self.acceptance(z) * (-&alpha_t + 1.0) / z_norm + alpha_t;
        log_pi + weight.log()
    }

    /// Rejection sampling: proposals at temperature `t`, each accepted with probability a(z); the T-th is kept.
    fn sample_tempered(&self, n: i64, t: f64) -> Tensor {
        tch::no_grad(|| {
            let big_t = self.p.truncation;
            let prop = self.proposal(big_t * n, t).view([big_t, n, self.dim]);
            let a = self.acceptance(&prop.view([big_t * n, self.dim])).view([big_t, n]);
            let accept = a.rand_like().lt_tensor(&a).to_kind(Kind::Int64);
            let _ = accept.narrow(0, big_t - 1, 1).fill_(1);
            let first = accept.argmax(0, false);
            prop.gather(0, &first.view([1, n, 1]).expand([1, n, self.dim], false), false).squeeze_dim(0)
        })
    }

    fn set_training(&self, on: bool) {
        self.training.set(on);
        if on {
            self.eval_log_z.borrow_mut().take();
        }
    }

    fn kind(&self) -> crate::model::Kind {
        crate::model::Kind::Estimate
    }

    fn describe(&self) -> serde_json::Value {
        ResampledGaussian::describe(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn base(truncation: i64) -> (nn::VarStore, ResampledGaussian) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let p = ResampledParams { truncation, eval_samples: 1 << 18, ..Default::default() };
        let b = ResampledGaussian::new(&vs.root(), 2, &p).unwrap();
        tch::no_grad(|| {
            for mut v in vs.trainable_variables() {
                let _ = v.g_mul_scalar_(4.0);
            }
        });
        (vs, b)
    }

    /// Σ p(z) · area on a grid over [-6, 6]².
    fn grid_mass(b: &ResampledGaussian) -> f64 {
        let n = 300;
        let xs = Tensor::linspace(-6.0, 6.0, n, (Kind::Float, Device::Cpu));
        let pts = Tensor::stack(&[xs.repeat_interleave_self_int(n, 0, None), xs.repeat([n])], 1);
        let area = (12.0 / (n - 1) as f64).powi(2);
        tch::no_grad(|| b.log_prob(&pts).exp().sum(Kind::Double).double_value(&[]) * area)
    }

    #[test]
    fn density_integrates_to_one_for_any_truncation() {
        for t in [1, 3, 100] {
            let (_, b) = base(t);
            let mass = grid_mass(&b);
            assert!((mass - 1.0).abs() < 0.01, "T = {t}: mass {mass}");
        }
    }

    #[test]
    fn samples_follow_the_density() {
        // P(z_1 > 0) from samples vs from the density on a grid, for a non-symmetric acceptance.
        let (_, b) = base(5);
        let s = b.sample(100_000);
        let frac = s.select(1, 0).gt(0.0).to_kind(Kind::Double).mean(None).double_value(&[]);
        let n = 300;
        let xs = Tensor::linspace(-6.0, 6.0, n, (Kind::Float, Device::Cpu));
        let pts = Tensor::stack(&[xs.repeat_interleave_self_int(n, 0, None), xs.repeat([n])], 1);
        let p = tch::no_grad(|| b.log_prob(&pts).exp());
        let right = p.where_self(&pts.select(1, 0).gt(0.0), &p.zeros_like()).sum(Kind::Double).double_value(&[]);
        let expected = right / p.sum(Kind::Double).double_value(&[]);
        assert!((frac - expected).abs() < 0.01, "samples {frac} vs density {expected}");
    }

    #[test]
    fn truncation_one_is_the_proposal() {
        let (_, b) = base(1);
        let z = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let gauss = sum_except_batch(&z.square()) * -0.5 - LN_2PI;
        assert!((b.log_prob(&z) - gauss).abs().max().double_value(&[]) < 1e-5);
    }
}
