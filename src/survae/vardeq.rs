//! Variational dequantization (Ho et al. 2019, Flow++ §3.1; a generative surjection in Nielsen et al. 2020, §3.3):
//! the 8-bit pixels p = ⌊256x⌋ of a (uniformly dequantized) input are re-dequantized with noise u ~ q(u | p) from a
//! conditional flow, y = (p + u)/256. The flow here is one conditional affine step and a sigmoid:
//! u = σ(μ(p) + e^{s(p)} ε), ε ~ N(0, I), with μ, s from a ResNet of p, so
//! log q(u | p) = Σ [log N(ε) - s - log σ'(v)], v = μ + e^s ε. V = -log q(u | p), and
//! E[log p(y) + V] ≤ log P(p) + D ln 256: the bound lives on the same [0, 1]^D scale as uniform dequantization, so
//! bits/dim keep the formula nll/(D ln 2) + 8 (as an upper bound). With q uniform, V = 0.
use crate::dist::normal::{sum_except_batch, LN_2PI};
use crate::layer::{Layer, LayerKind};
use crate::nets::ResNet;
use anyhow::Result;
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct VarDequant {
    net: ResNet,
    channels: i64,
}

impl VarDequant {
    pub fn new(path: &nn::Path, channels: i64, hidden: i64, blocks: usize) -> Result<Self> {
        Ok(VarDequant { net: ResNet::new(&path.sub("q"), channels, hidden, 2 * channels, blocks)?, channels })
    }

    fn pixels(x: &Tensor) -> Tensor {
        (x * 256.0).floor().clamp(0.0, 255.0)
    }

    /// (μ, s) of the pre-sigmoid Gaussian given pixels.
    fn params(&self, p: &Tensor) -> (Tensor, Tensor) {
        let h = self.net.forward(&(p / 255.0 - 0.5));
        (h.narrow(1, 0, self.channels), h.narrow(1, self.channels, self.channels))
    }

    /// log q(u | p) per example at pre-sigmoid v.
    fn log_q(&self, v: &Tensor, mu: &Tensor, s: &Tensor) -> Tensor {
        let eps = (v - mu) * (-s).exp();
        let log_sigmoid_grad = v.log_sigmoid() + (-v).log_sigmoid();
        sum_except_batch(&(eps.square() * -0.5 - 0.5 * LN_2PI - s - log_sigmoid_grad))
    }
}

impl Layer for VarDequant {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let p = Self::pixels(x);
        let (mu, s) = self.params(&p);
        let v = &mu + s.exp() * crate::rows::randn_like(&mu);
        let u = v.sigmoid();
        let y = (&p + u) / 256.0;
        (y, -self.log_q(&v, &mu, &s))
    }

    /// The pixels of y, at their bin centres; contribution log q(u | p) of the u that y carries.
    fn inverse(&self, y: &Tensor) -> (Tensor, Tensor) {
        let p = Self::pixels(y);
        let u = (y * 256.0 - &p).clamp(1e-6, 1.0 - 1e-6);
        let (mu, s) = self.params(&p);
        let v = u.logit(None);
        ((p + 0.5) / 256.0, self.log_q(&v, &mu, &s))
    }

    fn kind(&self) -> LayerKind {
        LayerKind::GenerativeSurjection
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn noise_stays_in_the_pixel_bin_and_q_is_a_density_on_the_unit_cube() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let vd = VarDequant::new(&vs.root(), 1, 8, 1).unwrap();
        crate::survae::testing::perturb(&vs, 0.2);
        let pixels = Tensor::randint(256, [4, 1, 4, 4], (Kind::Float, Device::Cpu));
        let x = (&pixels + 0.5) / 256.0;
        let (y, v) = vd.forward(&x);
        assert!(((&y * 256.0).floor() - &pixels).abs().max().double_value(&[]) == 0.0, "y stays in its pixel's bin");
        // The contribution of the inverse at y is log q(u|p) = -V.
        let (x_back, contrib) = vd.inverse(&y);
        assert!((x_back - &x).abs().max().double_value(&[]) < 1e-6);
        assert!((contrib + v).abs().max().double_value(&[]) < 1e-3);
        // q(u | p) integrates to 1 over u ∈ (0, 1) for one pixel: a 1D check on a fine grid.
        let vd1 = VarDequant::new(&vs.root().sub("one"), 1, 8, 1).unwrap();
        let p = Tensor::full([1, 1, 1, 1], 77.0, (Kind::Float, Device::Cpu));
        let (mu, s) = vd1.params(&p);
        let n = 20_000;
        let u = (Tensor::arange(n, (Kind::Float, Device::Cpu)) + 0.5) / n as f64;
        let v = u.logit(None).view([n, 1, 1, 1]);
        let q = vd1.log_q(&v, &mu.expand([n, 1, 1, 1], false), &s.expand([n, 1, 1, 1], false)).exp();
        let mass = q.sum(Kind::Double).double_value(&[]) / n as f64;
        assert!((mass - 1.0).abs() < 1e-3, "∫ q(u|p) du = {mass}");
    }
}
