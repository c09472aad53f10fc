//! Networks: plain structs built from a `tch::nn::Path`.
pub mod mlp;

pub use mlp::{Activation, Mlp};
