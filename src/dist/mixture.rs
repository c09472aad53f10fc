//! A Gaussian mixture base with learned weights, means and diagonal scales: p(z) = Σ_k π_k N(z; μ_k, diag σ_k²),
//! π = softmax(logits). Means start spread as N(0, I) draws, so components separate from the first step.
use super::normal::LN_2PI;
use super::Distribution;
use anyhow::{ensure, Result};
use tch::{nn, Kind, Tensor};

#[derive(Debug)]
pub struct GaussianMixture {
    logits: Tensor,
    means: Tensor,
    log_std: Tensor,
}

impl GaussianMixture {
    /// `k` components over vectors of size `dim`.
    pub fn new(path: &nn::Path, k: i64, dim: i64) -> Result<Self> {
        ensure!(k >= 1, "model.base.components must be at least 1, got {k}");
        Ok(GaussianMixture {
            logits: path.zeros("logits", &[k]),
            means: path.var("means", &[k, dim], nn::Init::Randn { mean: 0.0, stdev: 1.0 }),
            log_std: path.zeros("log_std", &[k, dim]),
        })
    }
}

impl Distribution for GaussianMixture {
    /// log Σ_k π_k N(z; μ_k, σ_k²), by log-sum-exp over components.
    fn log_prob(&self, z: &Tensor) -> Tensor {
        let d = self.means.size()[1] as f64;
        let u = (z.unsqueeze(1) - &self.means) * (-&self.log_std).exp();
        let comp = (u.square() * -0.5 - &self.log_std).sum_dim_intlist(2, false, None) - 0.5 * d * LN_2PI;
        (comp + self.logits.log_softmax(0, self.logits.kind())).logsumexp(1, false)
    }

    /// A component drawn by its weight, then its Gaussian noise scaled by `t`.
    fn sample_tempered(&self, n: i64, t: f64) -> Tensor {
        let probs = self.logits.softmax(0, Kind::Float);
        let k = crate::rows::draw(n, |m| probs.multinomial(m, true));
        let eps = crate::rows::randn(&[n, self.means.size()[1]], (Kind::Float, self.means.device())) * t;
        eps * self.log_std.index_select(0, &k).exp() + self.means.index_select(0, &k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn mixture_density_matches_the_weighted_sum_and_its_samples() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = GaussianMixture::new(&vs.root(), 3, 2).unwrap();
        assert!(GaussianMixture::new(&vs.root(), 0, 2).is_err());
        tch::no_grad(|| {
            let _ = m.logits.shallow_clone().copy_(&Tensor::from_slice(&[0.0f32, 1.0, -1.0]));
            let _ = m.log_std.shallow_clone().copy_(&(Tensor::randn([3, 2], (Kind::Float, Device::Cpu)) * 0.3));
        });
        let z = Tensor::randn([7, 2], (Kind::Float, Device::Cpu)) * 2.0;
        // By hand: Σ_k π_k Π_d N(z_d; μ_kd, σ_kd).
        let pi = m.logits.softmax(0, Kind::Double);
        let mut want = Tensor::zeros([7], (Kind::Double, Device::Cpu));
        for k in 0..3 {
            let (mu, sd) = (m.means.get(k).to_kind(Kind::Double), m.log_std.get(k).exp().to_kind(Kind::Double));
            let dens = ((z.to_kind(Kind::Double) - &mu) / &sd).square().neg().g_mul_scalar(0.5).exp() / (&sd * (2.0 * std::f64::consts::PI).sqrt());
            want = want + dens.prod_dim_int(1, false, Kind::Double) * pi.get(k);
        }
        let err = (m.log_prob(&z).to_kind(Kind::Double) - want.log()).abs().max().double_value(&[]);
        assert!(err < 1e-4, "log p off by {err}");
        // Sample means per dimension match Σ π_k μ_k.
        let s = tch::no_grad(|| m.sample(200_000));
        let expected = (pi.unsqueeze(1) * m.means.to_kind(Kind::Double)).sum_dim_intlist(0, false, None);
        let got = s.to_kind(Kind::Double).mean_dim(0, false, None);
        assert!((got - expected).abs().max().double_value(&[]) < 0.02);
    }
}
