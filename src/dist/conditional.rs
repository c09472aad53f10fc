//! The conditional diagonal Gaussian base p(z | c) = N(z; μ(h), diag σ(h)²), with (μ, log σ) from an MLP of the
//! context features h = h(c). Its output layer starts at zero, so it starts as N(0, I) for every c.
use super::normal::{sum_except_batch, LN_2PI};
use super::Distribution;
use crate::nets::{Activation, Mlp};
use anyhow::Result;
use tch::{nn, Kind, Tensor};

#[derive(Debug)]
pub struct ConditionalNormal {
    net: Mlp,
    dim: i64,
}

impl ConditionalNormal {
    pub fn new(path: &nn::Path, context_width: i64, dim: i64, hidden: &[i64]) -> Result<Self> {
        Ok(ConditionalNormal { net: Mlp::new(&path.sub("net"), context_width, hidden, 2 * dim, Activation::Relu, true)?, dim })
    }

    /// (μ, log σ), each [batch, D].
    fn params(&self, h: &Tensor) -> (Tensor, Tensor) {
        let out = self.net.forward(h);
        (out.narrow(1, 0, self.dim), out.narrow(1, self.dim, self.dim))
    }
}

impl Distribution for ConditionalNormal {
    fn log_prob(&self, _z: &Tensor) -> Tensor {
        panic!("a conditional base needs its context: call log_prob_given")
    }

    fn sample_tempered(&self, _n: i64, _t: f64) -> Tensor {
        panic!("a conditional base needs its context: call sample_given")
    }

    /// log N(z; μ(h), σ(h)²) = Σ [-½ ((z-μ)/σ)² - log σ] - (D/2) log 2π.
    fn log_prob_given(&self, z: &Tensor, h: &Tensor) -> Tensor {
        let (mean, log_std) = self.params(h);
        let u = (z - mean) * (-&log_std).exp();
        sum_except_batch(&(u.square() * -0.5 - log_std)) - 0.5 * self.dim as f64 * LN_2PI
    }

    fn sample_given(&self, h: &Tensor, t: f64) -> Tensor {
        let (mean, log_std) = self.params(h);
        let eps = crate::rows::randn(&[h.size()[0], self.dim], (Kind::Float, h.device())) * t;
        eps * log_std.exp() + mean
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"base": "conditional diagonal Gaussian"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn matches_the_closed_form_at_moved_parameters() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let d = ConditionalNormal::new(&vs.root(), 3, 2, &[8]).unwrap();
        tch::no_grad(|| {
            for v in vs.trainable_variables() {
                let _ = v.shallow_clone().g_add_(&(v.randn_like() * 0.5));
            }
        });
        let h = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        let z = Tensor::randn([4, 2], (Kind::Float, Device::Cpu));
        let (m, ls) = d.params(&h);
        let by_hand = (-((&z - &m) / ls.exp()).square() * 0.5 - &ls - 0.5 * LN_2PI).sum_dim_intlist(1, false, None);
        assert!((d.log_prob_given(&z, &h) - by_hand).abs().max().double_value(&[]) < 1e-5);
        // Samples at one context have the context's mean and scale.
        let h1 = h.narrow(0, 0, 1).expand([20000, 3], false);
        let s = d.sample_given(&h1, 1.0);
        let err = (s.mean_dim(0, false, None) - m.get(0)).abs().max().double_value(&[]);
        assert!(err < 0.05 * ls.exp().max().double_value(&[]).max(1.0), "sample mean off by {err}");
    }
}
