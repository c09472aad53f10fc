//! The forward SDEs of Song et al. 2021 (score_sde `sde_lib.py`): dx = f(x,t) dt + g(t) dw on t ∈ [0, 1], with
//! their Gaussian perturbation kernels x_t | x_0 ~ N(m(t) x_0, s(t)² I) and priors.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which SDE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdeKind {
    /// Variance preserving: f = -½β(t)x, g = √β(t), β(t) = β_min + t(β_max - β_min).
    Vp,
    /// Sub-VP: f as VP, g = √(β(t)(1 - e^{-2∫β})).
    SubVp,
    /// Variance exploding: f = 0, σ(t) = σ_min(σ_max/σ_min)^t, g = σ(t)√(2 ln(σ_max/σ_min)).
    Ve,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Sde {
    pub kind: SdeKind,
    pub beta_min: f64,
    pub beta_max: f64,
    pub sigma_min: f64,
    pub sigma_max: f64,
}

/// Reshapes a per-example coefficient \[B] to broadcast against x [B, ...].
pub fn bcast(c: &Tensor, x: &Tensor) -> Tensor {
    let mut shape = vec![1i64; x.dim()];
    shape[0] = -1;
    c.to_kind(x.kind()).view(shape.as_slice())
}

impl Sde {
    /// ∫_0^t β(s) ds.
    fn int_beta(&self, t: &Tensor) -> Tensor {
        t * self.beta_min + t.square() * (0.5 * (self.beta_max - self.beta_min))
    }

    fn beta(&self, t: &Tensor) -> Tensor {
        t * (self.beta_max - self.beta_min) + self.beta_min
    }

    /// σ(t) of the VE SDE.
    pub fn ve_sigma(&self, t: &Tensor) -> Tensor {
        (t * (self.sigma_max / self.sigma_min).ln()).exp() * self.sigma_min
    }

    /// (m(t), s(t)) of the perturbation kernel, each \[B].
    pub fn mean_std(&self, t: &Tensor) -> (Tensor, Tensor) {
        match self.kind {
            SdeKind::Vp => {
                let m = (self.int_beta(t) * -0.5).exp();
                let s = (-m.square() + 1.0).clamp_min(1e-12).sqrt();
                (m, s)
            }
            SdeKind::SubVp => {
                let m = (self.int_beta(t) * -0.5).exp();
                let s = (-m.square() + 1.0).clamp_min(1e-12);
                (m, s)
            }
            SdeKind::Ve => (t.ones_like(), self.ve_sigma(t)),
        }
    }

    /// Drift f(x, t).
    pub fn drift(&self, x: &Tensor, t: &Tensor) -> Tensor {
        match self.kind {
            SdeKind::Vp | SdeKind::SubVp => x * bcast(&(self.beta(t) * -0.5), x),
            SdeKind::Ve => x.zeros_like(),
        }
    }

    /// Diffusion g(t), \[B].
    pub fn diffusion(&self, t: &Tensor) -> Tensor {
        match self.kind {
            SdeKind::Vp => self.beta(t).sqrt(),
            SdeKind::SubVp => (self.beta(t) * (-(self.int_beta(t) * -2.0).exp() + 1.0)).clamp_min(0.0).sqrt(),
            SdeKind::Ve => self.ve_sigma(t) * (2.0 * (self.sigma_max / self.sigma_min).ln()).sqrt(),
        }
    }

    /// Standard deviation of the prior p_1: 1 for VP / sub-VP, σ_max for VE.
    pub fn prior_std(&self) -> f64 {
        match self.kind {
            SdeKind::Ve => self.sigma_max,
            _ => 1.0,
        }
    }

    pub fn prior_sample(&self, shape: &[i64], device: tch::Device) -> Tensor {
        crate::rows::randn(shape, (Kind::Float, device)) * self.prior_std()
    }

    /// log N(x; 0, prior_std² I) per example.
    pub fn prior_log_prob(&self, x: &Tensor) -> Tensor {
        let s = self.prior_std();
        let d = x.numel() as f64 / x.size()[0] as f64;
        x.flatten(1, -1).square().sum_dim_intlist(1, false, Kind::Double) * (-0.5 / (s * s))
            - d * (0.5 * (2.0 * std::f64::consts::PI).ln() + s.ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sde(kind: SdeKind) -> Sde {
        Sde { kind, beta_min: 0.1, beta_max: 20.0, sigma_min: 0.01, sigma_max: 50.0 }
    }

    #[test]
    fn kernel_variance_solves_the_moment_ode() {
        // For dx = f dt + g dw with linear f = a(t)x, the variance v of x_t | x_0 obeys v' = 2a v + g²;
        // the mean coefficient obeys m' = a m. Check by finite differences at several t.
        for kind in [SdeKind::Vp, SdeKind::SubVp, SdeKind::Ve] {
            let s = sde(kind);
            for t in [0.1, 0.4, 0.8] {
                let h = 1e-5;
                let tt = |v: f64| Tensor::from_slice(&[v]).to_kind(Kind::Double);
                let (m0, s0) = s.mean_std(&tt(t - h));
                let (m1, s1) = s.mean_std(&tt(t + h));
                let (m, sd) = s.mean_std(&tt(t));
                let a = s.drift(&tt(1.0).view([1, 1]), &tt(t)).double_value(&[0, 0]);
                let g2 = s.diffusion(&tt(t)).square().double_value(&[0]);
                let dm = (m1.double_value(&[0]) - m0.double_value(&[0])) / (2.0 * h);
                let dv = (s1.square().double_value(&[0]) - s0.square().double_value(&[0])) / (2.0 * h);
                let v = sd.square().double_value(&[0]);
                assert!((dm - a * m.double_value(&[0])).abs() < 1e-4 * (1.0 + dm.abs()), "{kind:?} t={t}: mean");
                assert!((dv - (2.0 * a * v + g2)).abs() < 1e-4 * (1.0 + dv.abs()), "{kind:?} t={t}: dv {dv} vs {}", 2.0 * a * v + g2);
            }
        }
    }

    #[test]
    fn prior_log_prob_is_a_normal_density() {
        let s = sde(SdeKind::Ve);
        let x = Tensor::from_slice(&[3.0f64, -4.0]).view([1, 2]);
        let expected = -25.0 / (2.0 * 2500.0) - 2.0 * (0.5 * (2.0 * std::f64::consts::PI).ln() + 50f64.ln());
        assert!((s.prior_log_prob(&x).double_value(&[0]) - expected).abs() < 1e-9);
    }
}
