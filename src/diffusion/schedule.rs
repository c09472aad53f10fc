//! Noise schedules as pure functions of the step index, and the closed forms they imply:
//! q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I) (Ho et al., eq. 4) and the posterior q(x_{t-1} | x_t, x_0) (eq. 6-7).
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// β linear from 1e-4 to 0.02 (scaled by 1000/T, clipped at 0.999 for very short chains).
    Linear,
    /// ᾱ_t = cos²(((t/T + s)/(1 + s)) π/2) / cos²(s π/2), s = 0.008 (Nichol & Dhariwal 2021), β clipped at 0.999.
    Cosine,
}

/// β_t, α_t, ᾱ_t and ᾱ_{t-1} for t = 0..T-1 (index 0 is the first noising step), in f64.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub betas: Vec<f64>,
    pub alphas: Vec<f64>,
    pub alpha_bar: Vec<f64>,
    pub alpha_bar_prev: Vec<f64>,
}

impl Schedule {
    pub fn new(kind: ScheduleKind, steps: usize) -> Self {
        let t = steps as f64;
        let betas: Vec<f64> = match kind {
            ScheduleKind::Linear => {
                let scale = 1000.0 / t;
                let (lo, hi) = (1e-4 * scale, 0.02 * scale);
                (0..steps).map(|i| (lo + (hi - lo) * i as f64 / (t - 1.0).max(1.0)).min(0.999)).collect()
            }
            ScheduleKind::Cosine => {
                let s = 0.008;
                let f = |i: f64| (((i / t + s) / (1.0 + s)) * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..steps).map(|i| (1.0 - f(i as f64 + 1.0) / f(i as f64)).min(0.999)).collect()
            }
        };
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alpha_bar = Vec::with_capacity(steps);
        let mut acc = 1.0;
        for a in &alphas {
            acc *= a;
            alpha_bar.push(acc);
        }
        let alpha_bar_prev = std::iter::once(1.0).chain(alpha_bar.iter().copied().take(steps - 1)).collect();
        Schedule { betas, alphas, alpha_bar, alpha_bar_prev }
    }

    pub fn steps(&self) -> usize {
        self.betas.len()
    }

    /// Posterior variance β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) β_t.
    pub fn posterior_variance(&self, t: usize) -> f64 {
        (1.0 - self.alpha_bar_prev[t]) / (1.0 - self.alpha_bar[t]) * self.betas[t]
    }

    /// Coefficients (c_0, c_t) of the posterior mean μ̃ = c_0 x_0 + c_t x_t.
    pub fn posterior_mean_coefs(&self, t: usize) -> (f64, f64) {
        let c0 = self.alpha_bar_prev[t].sqrt() * self.betas[t] / (1.0 - self.alpha_bar[t]);
        let ct = self.alphas[t].sqrt() * (1.0 - self.alpha_bar_prev[t]) / (1.0 - self.alpha_bar[t]);
        (c0, ct)
    }

    /// A per-example table value gathered at step indices `t` (\[B] int64), as f32 on `device`.
    pub fn gather(&self, table: &[f64], t: &Tensor, device: Device) -> Tensor {
        Tensor::from_slice(table).to_kind(Kind::Float).to_device(device).index_select(0, t)
    }

    /// x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε.
    pub fn q_sample(&self, x0: &Tensor, t: &Tensor, eps: &Tensor) -> Tensor {
        let ab = self.gather(&self.alpha_bar, t, x0.device());
        let b = crate::score::sde::bcast;
        x0 * b(&ab.sqrt(), x0) + eps * b(&(-&ab + 1.0).sqrt(), x0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterating_single_steps_reproduces_the_closed_form() {
        // Mean and variance of x_t | x_0 by iterating x_t = √α_t x_{t-1} + √β_t ε, in closed form (m, v) and by
        // simulation, against √ᾱ_t x_0 and 1 - ᾱ_t.
        for kind in [ScheduleKind::Linear, ScheduleKind::Cosine] {
            let s = Schedule::new(kind, 200);
            let (mut m, mut v) = (1.0f64, 0.0f64);
            tch::manual_seed(0);
            let mut x = Tensor::full([100_000], 1.0, (Kind::Double, Device::Cpu));
            for t in 0..s.steps() {
                m *= s.alphas[t].sqrt();
                v = s.alphas[t] * v + s.betas[t];
                x = &x * s.alphas[t].sqrt() + x.randn_like() * s.betas[t].sqrt();
                assert!((m - s.alpha_bar[t].sqrt()).abs() < 1e-12 && (v - (1.0 - s.alpha_bar[t])).abs() < 1e-12);
            }
            let last = s.steps() - 1;
            let mean = x.mean(None).double_value(&[]);
            let var = x.var(true).double_value(&[]);
            assert!((mean - s.alpha_bar[last].sqrt()).abs() < 0.01, "{kind:?}: simulated mean {mean}");
            assert!((var - (1.0 - s.alpha_bar[last])).abs() < 0.02, "{kind:?}: simulated variance {var}");
        }
    }

    #[test]
    fn posterior_matches_bayes_rule() {
        // q(x_{t-1}|x_t, x_0) ∝ N(x_t; √α_t x_{t-1}, β_t) N(x_{t-1}; √ᾱ_{t-1} x_0, 1 - ᾱ_{t-1}): precision-weighted.
        let s = Schedule::new(ScheduleKind::Linear, 1000);
        for t in [1usize, 10, 500, 999] {
            let prec = s.alphas[t] / s.betas[t] + 1.0 / (1.0 - s.alpha_bar_prev[t]);
            assert!((1.0 / prec - s.posterior_variance(t)).abs() < 1e-12);
            let (c0, ct) = s.posterior_mean_coefs(t);
            assert!((c0 - s.alpha_bar_prev[t].sqrt() / (1.0 - s.alpha_bar_prev[t]) / prec).abs() < 1e-9);
            assert!((ct - s.alphas[t].sqrt() / s.betas[t] / prec).abs() < 1e-9);
        }
        assert!(s.alpha_bar[999] < 1e-4);
    }
}
