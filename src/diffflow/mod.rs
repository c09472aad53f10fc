//! Diffusion normalizing flows (Zhang & Chen 2021): a trainable forward SDE and its learned reversal, trained
//! jointly by the KL between their path measures; the time grids and the progressive-N schedule.
pub mod grid;
pub mod model;

pub use model::{Backprop, DiffFlow, DiffFlowParams};
