//! Networks: plain structs built from a `tch::nn::Path`.
pub mod fourier;
pub mod mlp;
pub mod spec;
pub mod time;
pub mod unet;

pub use fourier::FourierMlp;
pub use mlp::{Activation, Mlp};
pub use time::{sinusoidal, TimeMlp};
pub use unet::UNet;

/// A network of (x, t) with output shaped like x: time-conditioned MLPs for vectors, U-Nets for images.
pub trait TimeNet: std::fmt::Debug {
    /// `t` of shape [batch], in [0, 1].
    fn forward_t(&self, x: &tch::Tensor, t: &tch::Tensor) -> tch::Tensor;
}

impl TimeNet for TimeMlp {
    fn forward_t(&self, x: &tch::Tensor, t: &tch::Tensor) -> tch::Tensor {
        self.forward(x, t)
    }
}

impl TimeNet for UNet {
    fn forward_t(&self, x: &tch::Tensor, t: &tch::Tensor) -> tch::Tensor {
        self.forward(x, t)
    }
}
