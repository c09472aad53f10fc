//! Score-based models (Song & Ermon 2019; Song et al. 2021): denoising score matching over noise levels, VE / VP /
//! sub-VP SDEs, reverse-SDE, predictor-corrector, annealed-Langevin and probability-flow ODE samplers, ODE solvers,
//! and likelihoods by the instantaneous change of variables (exact divergence or Hutchinson's estimator).
//! `adjoint.rs`: gradients through an ODE solve by the adjoint method (Chen et al. 2018), for trained CNFs.
pub mod adjoint;
pub mod likelihood;
pub mod model;
pub mod ode;
pub mod sde;
pub mod space;

pub use model::{ScoreModel, ScoreParams};
pub use sde::{Sde, SdeKind};
