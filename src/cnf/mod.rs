//! Continuous normalizing flows trained through the ODE (FFJORD, Grathwohl et al. 2019; RNODE, Finlay et al. 2020).
//! `dynamics.rs`: the augmented state [z, Δlog p, kinetic energy, Jacobian norm] and its differentiable right-hand
//! side, solved by the crate's one RK45 (`score::ode`) with gradients by backpropagation through the steps or by
//! the adjoint method (`score::adjoint`). `model.rs`: the `cnf` family (FFJORD's maximum likelihood with RNODE's
//! regularisers), its likelihood by the crate's one ODE-likelihood routine, its sampler, its NFE accounting.
pub mod dynamics;
pub mod model;

pub use dynamics::{Dynamics, Terms};
pub use model::{CnfModel, CnfParams, Gradient};
