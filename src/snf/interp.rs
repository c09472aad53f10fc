//! The interpolated energy u_λ(x) = (1 - λ) u_prior(x) + λ u_target(x), with u_prior = ½|x|² (the standard normal
//! prior's energy), on which each stochastic layer samples.
use crate::dist::energy::Energy;
use std::rc::Rc;
use tch::Tensor;

#[derive(Debug, Clone)]
pub struct Interpolated {
    pub target: Rc<dyn Energy>,
    pub lambda: f64,
}

impl Interpolated {
    /// u_λ(x) per example.
    pub fn energy(&self, x: &Tensor) -> Tensor {
        if self.lambda == 1.0 {
            return self.target.energy(x);
        }
        let prior = x.square().sum_dim_intlist(1, false, None) * 0.5;
        if self.lambda == 0.0 {
            return prior;
        }
        prior * (1.0 - self.lambda) + self.target.energy(x) * self.lambda
    }

    /// ∇u_λ(x) = (1 - λ) x + λ ∇u_target(x).
    pub fn grad(&self, x: &Tensor) -> Tensor {
        if self.lambda == 0.0 {
            return x.shallow_clone();
        }
        if self.lambda == 1.0 {
            return self.target.grad(x);
        }
        x * (1.0 - self.lambda) + self.target.grad(x) * self.lambda
    }
}
