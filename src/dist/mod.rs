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
    /// `n` samples at temperature `t` (Kingma & Dhariwal 2018, §5): the Gaussian noise of the sampler is scaled by `t`,
    /// so t = 1 samples the distribution itself and t < 1 concentrates samples near its modes.
    fn sample_tempered(&self, n: i64, t: f64) -> Tensor;
    /// `n` samples of shape [n, event shape...].
    fn sample(&self, n: i64) -> Tensor {
        self.sample_tempered(n, 1.0)
    }
}
