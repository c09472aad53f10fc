//! The logit preprocessing of image flows (Dinh et al. 2017, §4.1): data x in [0, 1]^D (dequantized pixels) is mapped
//! to y = logit(s), s = α + (1 - 2α) x, so the flow models an unbounded variable. It is a bijection with
//! log|det ∂y/∂x| = Σ_i [log(1 - 2α) - log s_i - log(1 - s_i)], and it is part of the model: log p(x) in [0, 1] space,
//! hence bits/dim, includes it.
use crate::dist::normal::sum_except_batch;
use crate::layer::{Layer, LayerKind};
use anyhow::{ensure, Result};
use tch::Tensor;

#[derive(Debug)]
pub struct Logit {
    alpha: f64,
}

impl Logit {
    /// α in [0, 0.5): α = 0 is the plain logit; α > 0 keeps y finite at pixel values 0 and 1.
    pub fn new(alpha: f64) -> Result<Self> {
        ensure!((0.0..0.5).contains(&alpha), "model.logit_alpha must be in [0, 0.5), got {alpha}");
        Ok(Logit { alpha })
    }

    /// log s + log(1 - s) written in y, stable for large |y|: -softplus(-y) - softplus(y).
    fn log_s_one_minus_s(y: &Tensor) -> Tensor {
        -(-y).softplus() - y.softplus()
    }
}

impl Layer for Logit {
    /// y = log s - log(1 - s), V = Σ log(1 - 2α) - log s - log(1 - s).
    /// With α = 0, s is kept inside the representable open interval, so x exactly 0 or 1 gives a finite (very low)
    /// log-density rather than NaN: the density's limit there is 0.
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let s = x * (1.0 - 2.0 * self.alpha) + self.alpha;
        let tiny = if s.kind() == tch::Kind::Double { 1e-300 } else { 1e-37 };
        let below_one = if s.kind() == tch::Kind::Double { 1.0 - 1.0 / 9.007_199_254_740_992e15 } else { 1.0 - 1.0 / 16_777_216.0 };
        let y = s.clamp(tiny, below_one).logit(None);
        let per_dim = -Self::log_s_one_minus_s(&y) + (1.0 - 2.0 * self.alpha).ln();
        (y, sum_except_batch(&per_dim))
    }

    /// x = (σ(y) - α) / (1 - 2α), contribution -V.
    fn inverse(&self, y: &Tensor) -> (Tensor, Tensor) {
        let x = (y.sigmoid() - self.alpha) / (1.0 - 2.0 * self.alpha);
        let per_dim = Self::log_s_one_minus_s(y) - (1.0 - 2.0 * self.alpha).ln();
        (x, sum_except_batch(&per_dim))
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }

    fn logit_alpha(&self) -> Option<f64> {
        Some(self.alpha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection_at;
    use tch::{Device, Kind};

    #[test]
    fn logit_is_a_correct_bijection_on_the_unit_cube() {
        for alpha in [0.0, 0.05] {
            let x = Tensor::rand([8, 5], (Kind::Double, Device::Cpu)) * 0.98 + 0.01;
            check_bijection_at(&x, |_| Box::new(Logit::new(alpha).unwrap()));
            let img = Tensor::rand([3, 1, 2, 2], (Kind::Double, Device::Cpu)) * 0.98 + 0.01;
            check_bijection_at(&img, |_| Box::new(Logit::new(alpha).unwrap()));
        }
    }

    #[test]
    fn log_det_matches_the_closed_form_at_one_point() {
        // x = 0.25, α = 0.1: s = 0.1 + 0.8·0.25 = 0.3, dy/dx = 0.8 / (0.3 · 0.7).
        let l = Logit::new(0.1).unwrap();
        let (y, v) = l.forward(&Tensor::from_slice(&[0.25f64]).view([1, 1]));
        assert!((y.double_value(&[0, 0]) - (0.3f64 / 0.7).ln()).abs() < 1e-12);
        assert!((v.double_value(&[0]) - (0.8f64 / 0.21).ln()).abs() < 1e-12);
        assert!(Logit::new(0.5).is_err() && Logit::new(-0.1).is_err());
    }
}
