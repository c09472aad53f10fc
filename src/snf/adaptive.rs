//! Metropolis-Hastings with learned step sizes, as in the SNF paper's "adaptive MC" row (Wu, Köhler & Noé 2020,
//! experiment 1): one step size per MC step, σ_i = clamp(|s_i| + 0.01, 0.01, 0.3), trained end to end with the flow.
//! The proposal y + σ_i η is reparameterised, so gradients reach s_i through accepted moves and through the energy
//! differences ΔS = u(y') - u(y) the layer contributes; the accept/reject decision itself carries no gradient.
use super::metropolis::random_walk;
use super::{Interpolated, Kernel};
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct AdaptiveMetropolis {
    pub u: Interpolated,
    /// Raw step parameters s_i, one per MC step.
    pub raw: Tensor,
}

/// Bounds of the effective step, as in the paper's code.
const MIN_STEP: f64 = 0.01;
const MAX_STEP: f64 = 0.3;

impl AdaptiveMetropolis {
    /// `steps` MC steps with every step size starting at `init`.
    pub fn new(path: &nn::Path, u: Interpolated, init: f64, steps: usize) -> Self {
        let raw = path.var("step_size", &[steps as i64], nn::Init::Const(init));
        AdaptiveMetropolis { u, raw }
    }

    /// σ_i = clamp(|s_i| + 0.01, 0.01, 0.3).
    pub fn step_sizes(&self) -> Tensor {
        (self.raw.abs() + MIN_STEP).clamp(MIN_STEP, MAX_STEP)
    }
}

impl Kernel for AdaptiveMetropolis {
    fn run(&self, y: &Tensor) -> (Tensor, Tensor) {
        let sigma = self.step_sizes().to_kind(y.kind());
        random_walk(&self.u, y, sigma.size()[0] as usize, |i, eta| eta * sigma.get(i as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::energy::{DoubleWell, Energy};
    use std::rc::Rc;
    use tch::Device;

    #[test]
    fn leaves_the_double_well_invariant_and_learns_its_steps() {
        tch::manual_seed(4);
        let dw = Rc::new(DoubleWell::new(2));
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = AdaptiveMetropolis::new(&vs.root(), Interpolated { target: dw.clone(), lambda: 1.0, tilt: None }, 0.25, 20);
        crate::snf::testing::assert_invariant(&layer, &*dw, 40_000, "adaptive MH on the double well");
        let sizes: Vec<f64> = Vec::try_from(layer.step_sizes().to_kind(tch::Kind::Double)).unwrap();
        assert!(sizes.iter().all(|s| (s - 0.26).abs() < 1e-6), "{sizes:?}");
        // A loss on the output reaches the step parameters.
        let (out, du) = crate::layer::Layer::forward(&layer, &dw.sample(512));
        (out.square().sum(None) + du.sum(None)).backward();
        assert!(layer.raw.grad().abs().sum(None).double_value(&[]) > 0.0);
    }
}
