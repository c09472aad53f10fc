//! Random-walk Metropolis-Hastings layer: proposal y* = y + σ η, accepted with probability min(1, e^{u(y) - u(y*)}).
//! In detailed balance with exp(-u), so each step contributes u(y') - u(y) (zero when rejected).
use super::{metropolis_step, Interpolated, Kernel};
use tch::Tensor;

#[derive(Debug)]
pub struct Metropolis {
    pub u: Interpolated,
    /// Proposal standard deviation σ.
    pub sigma: f64,
    pub steps: usize,
}

/// `steps` random-walk Metropolis steps on u from y, step i proposing y + σ_i η with `scale(i, η)` = σ_i η; returns
/// the final state and Σ of the accepted steps' u(y') - u(y).
pub fn random_walk(u: &Interpolated, y: &Tensor, steps: usize, scale: impl Fn(usize, Tensor) -> Tensor) -> (Tensor, Tensor) {
    let mut y = y.shallow_clone();
    let mut u_y = u.energy(&y);
    let mut total = u_y.zeros_like();
    for i in 0..steps {
        let proposal = &y + scale(i, crate::rows::randn_like(&y));
        let u_p = u.energy(&proposal);
        let (y_new, du, u_new) = metropolis_step(&y, &u_y, &proposal, &u_p, &(&u_y - &u_p));
        (y, u_y) = (y_new, u_new);
        total = total + du;
    }
    (y, total)
}

impl Kernel for Metropolis {
    fn run(&self, y: &Tensor) -> (Tensor, Tensor) {
        random_walk(&self.u, y, self.steps, |_, eta| eta * self.sigma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::energy::{DoubleWell, Energy};
    use crate::layer::Layer;
    use std::rc::Rc;

    #[test]
    fn leaves_the_double_well_invariant() {
        tch::manual_seed(2);
        let dw = Rc::new(DoubleWell::new(2));
        let layer = Metropolis { u: Interpolated { target: dw.clone(), lambda: 1.0, tilt: None }, sigma: 0.25, steps: 20 };
        crate::snf::testing::assert_invariant(&layer, &*dw, 40_000, "MH on the double well");
    }

    #[test]
    fn contribution_is_the_energy_difference() {
        tch::manual_seed(3);
        let dw = Rc::new(DoubleWell::new(2));
        let u = Interpolated { target: dw, lambda: 0.5, tilt: None };
        let layer = Metropolis { u: u.clone(), sigma: 0.5, steps: 7 };
        let y = dw_samples(256);
        let (out, v) = layer.forward(&y);
        let expected = u.energy(&out) - u.energy(&y);
        assert!((v - expected).abs().max().double_value(&[]) < 1e-4);
    }

    fn dw_samples(n: i64) -> Tensor {
        DoubleWell::new(2).sample(n)
    }
}
