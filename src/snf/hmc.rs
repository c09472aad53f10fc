//! Hamiltonian Monte Carlo layer: momentum v ~ N(0, I), L leapfrog steps of size ε = exp(log ε) (learnable), then a
//! Metropolis test on H = u + ½|v|². Reversible with respect to exp(-u), so each step contributes u(y') - u(y).
//! Gradients reach log ε through the leapfrog path of accepted moves.
use super::{metropolis_step, Interpolated, Kernel};
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct Hmc {
    pub u: Interpolated,
    pub log_eps: Tensor,
    pub leapfrog: usize,
    pub steps: usize,
}

impl Hmc {
    pub fn new(path: &nn::Path, u: Interpolated, eps: f64, leapfrog: usize, steps: usize) -> Self {
        let log_eps = path.f_var_copy("log_eps", &Tensor::from(eps.ln() as f32)).expect("a fresh variable");
        Hmc { u, log_eps, leapfrog: leapfrog.max(1), steps }
    }

    fn leapfrog(&self, x: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let eps = self.log_eps.exp();
        let mut v = v - self.u.grad(x) * (&eps * 0.5);
        let mut x = x.shallow_clone();
        for l in 0..self.leapfrog {
            x = &x + &v * &eps;
            let scale = if l + 1 < self.leapfrog { eps.shallow_clone() } else { &eps * 0.5 };
            v = &v - self.u.grad(&x) * scale;
        }
        (x, v)
    }
}

impl Kernel for Hmc {
    fn run(&self, y: &Tensor) -> (Tensor, Tensor) {
        let mut y = y.shallow_clone();
        let mut u_y = self.u.energy(&y);
        let mut total = u_y.zeros_like();
        for _ in 0..self.steps {
            let v = crate::rows::randn_like(&y);
            let (x, v_new) = self.leapfrog(&y, &v);
            let u_x = self.u.energy(&x);
            let h0 = &u_y + v.square().sum_dim_intlist(1, false, None) * 0.5;
            let h1 = &u_x + v_new.square().sum_dim_intlist(1, false, None) * 0.5;
            let (y_new, du, u_new) = metropolis_step(&y, &u_y, &x, &u_x, &(h0 - h1));
            (y, u_y) = (y_new, u_new);
            total = total + du;
        }
        (y, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::energy::{DoubleWell, GaussianMixture};
    use crate::layer::Layer;
    use std::rc::Rc;
    use tch::Device;

    #[test]
    fn leaves_double_well_and_mixture_invariant() {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let dw = Rc::new(DoubleWell::new(2));
        let layer = Hmc::new(&vs.root().sub("a"), Interpolated { target: dw.clone(), lambda: 1.0, tilt: None }, 0.1, 5, 10);
        tch::no_grad(|| crate::snf::testing::assert_invariant(&layer, &*dw, 20_000, "HMC on the double well"));
        let gmm = Rc::new(GaussianMixture::four_modes());
        let layer = Hmc::new(&vs.root().sub("b"), Interpolated { target: gmm.clone(), lambda: 1.0, tilt: None }, 0.2, 5, 10);
        tch::no_grad(|| crate::snf::testing::assert_invariant(&layer, &*gmm, 20_000, "HMC on the mixture"));
    }

    #[test]
    fn step_size_receives_a_gradient() {
        let vs = nn::VarStore::new(Device::Cpu);
        let dw = Rc::new(DoubleWell::new(2));
        let layer = Hmc::new(&vs.root(), Interpolated { target: dw, lambda: 0.5, tilt: None }, 0.1, 3, 2);
        let (x, v) = layer.inverse(&Tensor::randn([128, 2], (tch::Kind::Float, Device::Cpu)));
        (x.square().sum(None) + v.sum(None)).backward();
        assert!(layer.log_eps.grad().abs().double_value(&[]) > 0.0);
    }
}
