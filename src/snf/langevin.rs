//! Overdamped, unadjusted Langevin layer (Wu et al. 2020, §"Stochastic layers"):
//! y' = y - ε∇u(y) + √(2ε) η, η ~ N(0, I). Its contribution is log K(y'→y) - log K(y→y') with the Gaussian
//! transition density K(y→y') = N(y'; y - ε∇u(y), 2ε I):
//! ΔS = ½|η|² - |y - y' + ε∇u(y')|² / (4ε).
use super::{Interpolated, Kernel};
use tch::Tensor;

#[derive(Debug)]
pub struct Langevin {
    pub u: Interpolated,
    /// Step size ε.
    pub eps: f64,
    pub steps: usize,
}

impl Langevin {
    /// One step: (y', ΔS).
    pub fn step(&self, y: &Tensor) -> (Tensor, Tensor) {
        let eta = crate::rows::randn_like(&y);
        let y_new = y - self.u.grad(y) * self.eps + &eta * (2.0 * self.eps).sqrt();
        let back = y - &y_new + self.u.grad(&y_new) * self.eps;
        let log_fwd = eta.square().sum_dim_intlist(1, false, None) * -0.5;
        let log_bwd = back.square().sum_dim_intlist(1, false, None) * (-1.0 / (4.0 * self.eps));
        (y_new, log_bwd - log_fwd)
    }
}

impl Kernel for Langevin {
    fn run(&self, y: &Tensor) -> (Tensor, Tensor) {
        let mut y = y.shallow_clone();
        let mut total = Tensor::zeros([y.size()[0]], (y.kind(), y.device()));
        for _ in 0..self.steps {
            let (y_new, ds) = self.step(&y);
            total = total + ds;
            y = y_new;
        }
        (y, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::energy::{DoubleWell, Gaussian};
    use crate::layer::Layer;
    use std::rc::Rc;
    use tch::{Device, Kind};

    #[test]
    fn delta_s_is_the_log_ratio_of_gaussian_transition_densities() {
        tch::manual_seed(0);
        let u = Interpolated { target: Rc::new(DoubleWell::new(2)), lambda: 0.7, tilt: None };
        let layer = Langevin { u: u.clone(), eps: 0.05, steps: 1 };
        let y = Tensor::randn([64, 2], (Kind::Double, Device::Cpu));
        let (y_new, ds) = layer.step(&y);
        // log N(b; a - ε∇u(a), 2ε I) written out in full, constants included (they cancel in the ratio).
        let log_k = |a: &Tensor, b: &Tensor| {
            let mean = a - u.grad(a) * 0.05;
            (b - mean).square().sum_dim_intlist(1, false, None) * (-1.0 / (4.0 * 0.05)) - (4.0 * std::f64::consts::PI * 0.05).ln()
        };
        let expected = log_k(&y_new, &y) - log_k(&y, &y_new);
        assert!((ds - expected).abs().max().double_value(&[]) < 1e-10);
    }

    #[test]
    fn small_steps_keep_the_double_well() {
        // Unadjusted Langevin is invariant only up to O(ε); at ε = 1e-3 that bias is below this test's resolution.
        tch::manual_seed(6);
        let dw = Rc::new(DoubleWell::new(2));
        let layer = Langevin { u: Interpolated { target: dw.clone(), lambda: 1.0, tilt: None }, eps: 1e-3, steps: 50 };
        crate::snf::testing::assert_invariant(&layer, &*dw, 40_000, "Langevin on the double well");
    }

    #[test]
    fn keeps_a_gaussian_at_its_known_stationary_law() {
        // For u = |x|²/(2s²), unadjusted Langevin's stationary law is N(0, s² / (1 - ε/(2s²))) exactly.
        tch::manual_seed(1);
        let s = 0.8;
        let eps = 0.05;
        let var = s * s / (1.0 - eps / (2.0 * s * s));
        let u = Interpolated { target: Rc::new(Gaussian { mean: vec![0.0, 0.0], std: s }), lambda: 1.0, tilt: None };
        let layer = Langevin { u, eps, steps: 30 };
        let n = 40_000;
        let y = Tensor::randn([n, 2], (Kind::Double, Device::Cpu)) * var.sqrt();
        let (out, _) = layer.forward(&y);
        crate::snf::testing::assert_moments(&out, &[0.0, 0.0], &[var, var], "Langevin on a Gaussian");
    }
}
