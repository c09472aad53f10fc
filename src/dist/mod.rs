//! Base distributions, energy targets and the known laws of data sets.
pub mod energy;
pub mod law;
pub mod mixture;
pub mod normal;
pub mod conditional;
pub mod resampled;

pub use mixture::GaussianMixture as MixtureBase;
pub use conditional::ConditionalNormal;
pub use normal::{DiagNormal, StandardNormal};
pub use resampled::{ResampledGaussian, ResampledParams};
use tch::Tensor;

/// A base distribution over latents of a fixed event shape.
pub trait Distribution: std::fmt::Debug {
    /// log p(z) per example, summed over every non-batch dimension: shape \[batch].
    fn log_prob(&self, z: &Tensor) -> Tensor;
    /// `n` samples at temperature `t` (Kingma & Dhariwal 2018, §5): the Gaussian noise of the sampler is scaled by `t`,
    /// so t = 1 samples the distribution itself and t < 1 concentrates samples near its modes.
    fn sample_tempered(&self, n: i64, t: f64) -> Tensor;
    /// `n` samples of shape [n, event shape...].
    fn sample(&self, n: i64) -> Tensor {
        self.sample_tempered(n, 1.0)
    }
    /// Training or evaluation mode (a resampled base re-estimates its normaliser per batch in training).
    fn set_training(&self, _on: bool) {}
    /// Exact, or an estimate when the density needs a Monte Carlo normaliser (the resampled base).
    fn kind(&self) -> crate::model::Kind {
        crate::model::Kind::Exact
    }
    /// log p(z | c) given the context features h(c) \[batch, E]; an unconditional base ignores `h`.
    fn log_prob_given(&self, z: &Tensor, _h: &Tensor) -> Tensor {
        self.log_prob(z)
    }
    /// One sample per row of h(c) at temperature `t`; an unconditional base ignores `h`.
    fn sample_given(&self, h: &Tensor, t: f64) -> Tensor {
        self.sample_tempered(h.size()[0], t)
    }
    /// How the density is computed, when there is something to say (summary.json's `estimator`).
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}
