//! Stochastic normalizing flows (Wu, Köhler, Noé 2020): flow layers interleaved with Langevin, Metropolis-Hastings
//! and HMC layers on interpolated energies, trained by maximum likelihood, reverse KL, or a mixture.
//!
//! A stochastic layer with kernel K contributes, in either direction, log K(out → in) - log K(in → out):
//! data -> latent this is SurVAE's V = log p(x|z) - log q(z|x); latent -> data it is the path weight's ΔS_t.
//! For kernels in detailed balance with exp(-u_λ) (MH, HMC) it equals u_λ(out) - u_λ(in).
pub mod hmc;
pub mod interp;
pub mod langevin;
pub mod metrics;
pub mod metropolis;
pub mod model;

pub use hmc::Hmc;
pub use interp::Interpolated;
pub use langevin::Langevin;
pub use metropolis::Metropolis;
pub use model::{Snf, SnfParams, Stochastic};

#[cfg(test)]
pub mod testing;
