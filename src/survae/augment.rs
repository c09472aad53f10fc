//! Augmentation (Nielsen et al. 2020, §3.3; Huang et al. 2020): a generative surjection that pads x [B, D] with
//! e ~ q(e | x) = N(μ(x), σ(x)²) to z = (x, e) [B, D + A]; generation drops e. V = -log q(e | x), so the model's
//! log-likelihood is a lower bound (an ELBO over e), tightened by IWBO(k).
use crate::dist::normal::{sum_except_batch, LN_2PI};
use crate::layer::{Layer, LayerKind};
use crate::nets::{Activation, Mlp};
use anyhow::Result;
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct Augment {
    net: Mlp,
    extra: i64,
    /// Width of the context features q(e | x, c) reads beside x (0: unconditional).
    cond: i64,
}

impl Augment {
    pub fn new(path: &nn::Path, dim: i64, extra: i64, hidden: &[i64]) -> Result<Self> {
        Self::conditional(path, dim, extra, hidden, 0)
    }

    /// q(e | x, c) reading `cond` context features beside x (0 gives `new`).
    pub fn conditional(path: &nn::Path, dim: i64, extra: i64, hidden: &[i64], cond: i64) -> Result<Self> {
        anyhow::ensure!(extra >= 1, "model.augment must be at least 1, got {extra}");
        Ok(Augment { net: Mlp::new(&path.sub("q"), dim + cond, hidden, 2 * extra, Activation::Relu, true)?, extra, cond })
    }

    /// (μ, log σ) of q(e | x) (or q(e | x, c) given context features `c`).
    fn q(&self, x: &Tensor, c: Option<&Tensor>) -> (Tensor, Tensor) {
        let input = match c {
            Some(c) => {
                assert_eq!(c.size(), vec![x.size()[0], self.cond], "context features [batch, width] of a conditional augmentation");
                Tensor::cat(&[x.shallow_clone(), c.to_kind(x.kind())], 1)
            }
            None => {
                assert_eq!(self.cond, 0, "a conditional augmentation needs its context features (forward_given)");
                x.shallow_clone()
            }
        };
        let h = self.net.forward(&input);
        (h.narrow(1, 0, self.extra), h.narrow(1, self.extra, self.extra))
    }

    fn forward_with(&self, x: &Tensor, c: Option<&Tensor>) -> (Tensor, Tensor) {
        let (mu, log_s) = self.q(x, c);
        let e = &mu + log_s.exp() * crate::rows::randn_like(&mu);
        let v = -Self::log_q(&e, &mu, &log_s);
        (Tensor::cat(&[x, &e], 1), v)
    }

    fn inverse_with(&self, z: &Tensor, c: Option<&Tensor>) -> (Tensor, Tensor) {
        let d = z.size()[1] - self.extra;
        let (x, e) = (z.narrow(1, 0, d), z.narrow(1, d, self.extra));
        let (mu, log_s) = self.q(&x, c);
        (x, Self::log_q(&e, &mu, &log_s))
    }

    fn log_q(e: &Tensor, mu: &Tensor, log_s: &Tensor) -> Tensor {
        let u = (e - mu) * (-log_s).exp();
        sum_except_batch(&(u.square() * -0.5 - log_s - 0.5 * LN_2PI))
    }
}

impl Layer for Augment {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.forward_with(x, None)
    }

    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        self.inverse_with(z, None)
    }

    fn forward_given(&self, x: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        self.forward_with(x, Some(h))
    }

    fn inverse_given(&self, z: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        self.inverse_with(z, Some(h))
    }

    fn data_init_given(&self, x: &Tensor, h: &Tensor) -> Tensor {
        self.forward_with(x, Some(h)).0
    }

    fn kind(&self) -> LayerKind {
        LayerKind::GenerativeSurjection
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::StandardNormal;
    use crate::layer::LayerModel;
    use crate::model::{Kind as LikKind, Model};
    use tch::{Device, Kind};

    #[test]
    fn augmenting_a_gaussian_with_the_exact_conditional_is_exact_and_otherwise_a_bound() {
        // Base N(0, I) on (x, e): p(x) = N(x; 0, 1) exactly, and q(e|x) = N(0, 1) is the true conditional, so
        // log p(z) + V = log N(x) for every draw. With a worse q the value drops below it (a bound).
        let vs = nn::VarStore::new(Device::Cpu);
        let aug = Augment::new(&vs.root(), 1, 1, &[8]).unwrap();
        let base = Box::new(StandardNormal { shape: vec![2], device: Device::Cpu });
        let model = LayerModel { layers: vec![Box::new(aug)], base, family: crate::model::Family::Survae };
        let x = Tensor::randn([64, 1], (Kind::Float, Device::Cpu));
        let exact = x.square().squeeze_dim(1) * -0.5 - 0.5 * LN_2PI;
        let lp = model.log_prob(&x);
        assert_eq!(lp.kind, LikKind::LowerBound);
        assert!((lp.value - &exact).abs().max().double_value(&[]) < 1e-5);
        crate::survae::testing::perturb(&vs, 0.5);
        let worse = model.iwbo(&x, 1, 100_000).mean(None).double_value(&[]);
        let tighter = model.iwbo(&x, 100, 100_000).mean(None).double_value(&[]);
        let truth = exact.mean(None).double_value(&[]);
        assert!(worse < tighter && tighter <= truth + 1e-3, "ELBO {worse} <= IWBO(100) {tighter} <= {truth}");
    }
}
