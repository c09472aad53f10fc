//! Base distributions and, later, energy targets.
pub mod energy;
pub mod mixture;
pub mod normal;

pub use mixture::GaussianMixture as MixtureBase;
pub use normal::{DiagNormal, StandardNormal};
use tch::Tensor;

/// A base distribution over latents of a fixed event shape.
pub trait Distribution: std::fmt::Debug {
    /// log p(z) per example, summed over every non-batch dimension: shape [batch].
    fn log_prob(&self, z: &Tensor) -> Tensor;
    /// `n` samples of shape [n, event shape...].
    fn sample(&self, n: i64) -> Tensor;
}
