//! Networks: plain structs built from a `tch::nn::Path`.
pub mod attention;
pub mod embed;
pub mod fourier;
pub mod guidance;
pub mod mlp;
pub mod resnet;
pub mod spec;
pub mod time;
pub mod unet;

pub use fourier::FourierMlp;
pub use mlp::{Activation, Mlp};
pub use resnet::ResNet;
pub use time::{sinusoidal, TimeMlp};
pub use unet::UNet;

/// A network of (x, t) with output shaped like x: time-conditioned MLPs for vectors, U-Nets for images.
pub trait TimeNet: std::fmt::Debug {
    /// `t` of shape \[batch], in [0, 1].
    fn forward_t(&self, x: &tch::Tensor, t: &tch::Tensor) -> tch::Tensor;
    /// The same with one time for the whole batch (samplers and DiffFlow's grids): a network may embed it once.
    fn forward_at(&self, x: &tch::Tensor, t: f64) -> tch::Tensor {
        self.forward_t(x, &tch::Tensor::full([x.size()[0]], t, (x.kind(), x.device())))
    }
    /// The network of (x, t, h) with conditioning features `h` [batch, E] (a context embedding), for a network built
    /// with a conditioning width (`spec::time_net_given`); others panic, as a programming error.
    fn forward_tc(&self, _x: &tch::Tensor, _t: &tch::Tensor, _h: &tch::Tensor) -> tch::Tensor {
        panic!("this time-conditioned network was built without conditioning features")
    }
    /// The classifier-free-guided conditional network this is, if it is one (see `guidance`).
    fn guided(&self) -> Option<&guidance::Guided> {
        None
    }
}

impl TimeNet for TimeMlp {
    fn forward_t(&self, x: &tch::Tensor, t: &tch::Tensor) -> tch::Tensor {
        self.forward(x, t)
    }
    fn forward_tc(&self, x: &tch::Tensor, t: &tch::Tensor, h: &tch::Tensor) -> tch::Tensor {
        self.forward_given(x, t, h)
    }
}

impl TimeNet for UNet {
    fn forward_t(&self, x: &tch::Tensor, t: &tch::Tensor) -> tch::Tensor {
        self.forward(x, t)
    }
    fn forward_tc(&self, x: &tch::Tensor, t: &tch::Tensor, h: &tch::Tensor) -> tch::Tensor {
        self.forward_given(x, t, h)
    }
}
