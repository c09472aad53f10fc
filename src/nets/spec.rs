//! Which time-conditioned network a diffusion / score / DiffFlow model gets: an MLP on vectors, a U-Net on images.
use super::{Activation, TimeMlp, TimeNet, UNet};
use anyhow::{bail, Result};
use tch::nn;

/// Network hyper-parameters shared by the time-conditioned families (fields of their `[model]` sections).
#[derive(Clone, Debug)]
pub struct NetSpec {
    pub hidden: Vec<i64>,
    pub emb_dim: i64,
    pub activation: Activation,
    pub unet_ch: i64,
    pub unet_mults: Vec<i64>,
    pub unet_groups: i64,
}

pub fn default_hidden() -> Vec<i64> {
    vec![128, 128, 128]
}
pub fn default_emb_dim() -> i64 {
    32
}
pub fn default_activation() -> Activation {
    Activation::Silu
}
pub fn default_unet_ch() -> i64 {
    32
}
pub fn default_unet_mults() -> Vec<i64> {
    vec![1, 2, 2]
}
pub fn default_unet_groups() -> i64 {
    8
}

/// A TimeMlp for event shape [D], a U-Net for [C, H, W].
pub fn time_net(path: &nn::Path, shape: &[i64], spec: &NetSpec) -> Result<Box<dyn TimeNet>> {
    match shape {
        [d] => Ok(Box::new(TimeMlp::new(path, *d, &spec.hidden, *d, spec.emb_dim, spec.activation)?)),
        [c, _, _] => Ok(Box::new(UNet::new(path, *c, spec.unet_ch, &spec.unet_mults, spec.unet_groups)?)),
        _ => bail!("no time-conditioned network for data of shape {shape:?} (vectors [D] or images [C, H, W])"),
    }
}
