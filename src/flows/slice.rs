//! Slice, the multi-scale factor-out (Dinh et al. 2017, §3.6) as a SurVAE inference surjection (Nielsen et al. 2020,
//! §3.2): x = (z1, z2) along dimension 1, the layer passes z1 on and sends z2 to its own distribution p(z2 | z1).
//! Its likelihood contribution is V = log p(z2 | z1), exact. Glow's split (Kingma & Dhariwal 2018) learns
//! p(z2 | z1) = N(μ(z1), σ(z1)²) with a zero-initialised convolution; the fixed prior is N(0, I).
use crate::dist::normal::{sum_except_batch, LN_2PI};
use crate::layer::{Layer, LayerKind};
use anyhow::{ensure, Result};
use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Debug)]
pub struct Slice {
    /// Channels (features) kept: x[:, ..keep] goes on, x[:, keep..] is factored out.
    keep: i64,
    dropped: i64,
    /// Learned conditional prior: z1 -> (μ, log σ) of z2; None for N(0, I).
    prior: Option<nn::Conv2D>,
}

impl Slice {
    /// Factors out the second half of `channels` (the larger half is kept when odd).
    pub fn new(path: &nn::Path, channels: i64, learned_prior: bool) -> Result<Self> {
        ensure!(channels >= 2, "a slice needs at least 2 channels, got {channels}");
        let keep = channels - channels / 2;
        let dropped = channels - keep;
        let zero = nn::ConvConfig { padding: 1, ws_init: nn::Init::Const(0.0), bs_init: nn::Init::Const(0.0), ..Default::default() };
        let prior = learned_prior.then(|| nn::conv2d(path.sub("prior"), keep, 2 * dropped, 3, zero));
        Ok(Slice { keep, dropped, prior })
    }

    /// (μ, log σ) of z2 given z1.
    fn prior_params(&self, z1: &Tensor) -> (Tensor, Tensor) {
        match &self.prior {
            Some(conv) => {
                let h = conv.forward(z1);
                (h.narrow(1, 0, self.dropped), h.narrow(1, self.dropped, self.dropped))
            }
            None => {
                let mut shape = z1.size();
                shape[1] = self.dropped;
                let zeros = Tensor::zeros(shape.as_slice(), (z1.kind(), z1.device()));
                (zeros.shallow_clone(), zeros)
            }
        }
    }

    /// log N(z2; μ, σ²) summed per example.
    fn log_prob(&self, z1: &Tensor, z2: &Tensor) -> Tensor {
        let (mu, log_std) = self.prior_params(z1);
        let u = (z2 - mu) * (-&log_std).exp();
        sum_except_batch(&(u.square() * -0.5 - log_std - 0.5 * LN_2PI))
    }
}

impl Layer for Slice {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (z1, z2) = (x.narrow(1, 0, self.keep), x.narrow(1, self.keep, self.dropped));
        let v = self.log_prob(&z1, &z2);
        (z1, v)
    }

    fn inverse(&self, z1: &Tensor) -> (Tensor, Tensor) {
        self.inverse_tempered(z1, 1.0)
    }

    /// z2 = μ + t σ ε; the contribution is -log p(z2 | z1), so log q(x) = log q(z1) - contribution as for bijections.
    fn inverse_tempered(&self, z1: &Tensor, t: f64) -> (Tensor, Tensor) {
        let (mu, log_std) = self.prior_params(z1);
        let z2 = mu + log_std.exp() * crate::rows::randn_like(&log_std) * t;
        let v = -self.log_prob(z1, &z2);
        (Tensor::cat(&[z1, &z2], 1), v)
    }

    fn kind(&self) -> LayerKind {
        LayerKind::InferenceSurjection
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn standard_slice_contributes_the_dropped_part_s_normal_density() {
        let vs = nn::VarStore::new(Device::Cpu);
        let s = Slice::new(&vs.root(), 3, false).unwrap();
        let x = Tensor::randn([4, 3, 2, 2], (Kind::Double, Device::Cpu));
        let (z, v) = s.forward(&x);
        assert_eq!(z.size(), vec![4, 2, 2, 2], "keeps the larger half");
        let z2 = x.narrow(1, 2, 1);
        let by_hand = sum_except_batch(&(z2.square() * -0.5)) - 4.0 * 0.5 * LN_2PI;
        assert!((v - by_hand).abs().max().double_value(&[]) < 1e-12);
        let (x_back, _) = s.inverse(&z);
        assert!(x_back.narrow(1, 0, 2).equal(&z) && x_back.size() == vec![4, 3, 2, 2]);
    }

    #[test]
    fn learned_prior_samples_have_its_moments_and_temperature_scales_them() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let s = Slice::new(&vs.root(), 2, true).unwrap();
        tch::no_grad(|| {
            let mut b = vs.variables()["prior.bias"].shallow_clone();
            let _ = b.copy_(&Tensor::from_slice(&[1.5f32, 0.7f32.ln()]));
        });
        let z1 = Tensor::zeros([20_000, 1, 1, 1], (Kind::Float, Device::Cpu));
        for t in [1.0, 0.5] {
            let (x, contrib) = s.inverse_tempered(&z1, t);
            let z2 = x.narrow(1, 1, 1).flatten(0, -1);
            let (mean, std) = (z2.mean(None).double_value(&[]), z2.std(true).double_value(&[]));
            assert!((mean - 1.5).abs() < 0.02 && (std - 0.7 * t).abs() < 0.02, "t = {t}: {mean} {std}");
            let (_, v) = s.forward(&x);
            assert!((v + contrib).abs().max().double_value(&[]) < 1e-5, "generative contribution is -V");
        }
    }
}
