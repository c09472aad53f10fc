//! Stochastic normalizing flows (Wu, Köhler, Noé 2020): flow layers interleaved with Langevin, Metropolis-Hastings
//! and HMC layers on interpolated energies, trained by maximum likelihood, reverse KL, or a mixture.
//!
//! A stochastic layer with kernel K contributes, in either direction, log K(out → in) - log K(in → out):
//! data -> latent this is SurVAE's V = log p(x|z) - log q(z|x); latent -> data it is the path weight's ΔS_t.
//! For kernels in detailed balance with exp(-u_λ) (MH, HMC) it equals u_λ(out) - u_λ(in).
pub mod adaptive;
pub mod hmc;
pub mod interp;
pub mod langevin;
pub mod metrics;
pub mod metropolis;
pub mod model;

pub use adaptive::AdaptiveMetropolis;
pub use hmc::Hmc;
pub use interp::Interpolated;
pub use langevin::Langevin;
pub use metropolis::Metropolis;
pub use model::{Snf, SnfParams, Stochastic};

#[cfg(test)]
pub mod testing;

use crate::layer::{Layer, LayerKind};
use tch::Tensor;

/// A Markov kernel used as a layer: the same kernel runs in both directions and returns the output with
/// Σ log K(out → in) - log K(in → out).
pub trait Kernel: std::fmt::Debug {
    fn run(&self, y: &Tensor) -> (Tensor, Tensor);
}

impl<K: Kernel> Layer for K {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.run(x)
    }
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        self.run(z)
    }
    fn kind(&self) -> LayerKind {
        LayerKind::Stochastic
    }
}

/// The Metropolis test shared by MH and HMC: accept where log U < log_ratio; returns the new state, the
/// contribution u(y') - u(y) of this step (0 where rejected), and u(y').
pub fn metropolis_step(y: &Tensor, u_y: &Tensor, proposal: &Tensor, u_p: &Tensor, log_ratio: &Tensor) -> (Tensor, Tensor, Tensor) {
    let accept = crate::rows::rand_like(u_y).log().lt_tensor(log_ratio);
    let du = u_p - u_y;
    let y_new = proposal.where_self(&accept.unsqueeze(1), y);
    (y_new, du.where_self(&accept, &du.zeros_like()), u_p.where_self(&accept, u_y))
}
