//! Continuous normalizing flows trained through the ODE (FFJORD, Grathwohl et al. 2019; RNODE, Finlay et al. 2020).
//! `dynamics.rs`: the augmented state [z, Δlog p, kinetic energy, Jacobian norm] and its differentiable right-hand
//! side, solved by the crate's one RK45 (`score::ode`) with gradients by backpropagation through the steps or by
//! the adjoint method (`score::adjoint`). The `cnf` model family built on it is issue 28's remaining work.
pub mod dynamics;

pub use dynamics::{Dynamics, Terms};
