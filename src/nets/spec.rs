//! Which time-conditioned network a diffusion / score / DiffFlow model gets: an MLP on vectors, a U-Net on images.
use super::{Activation, FourierMlp, TimeMlp, TimeNet, UNet};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Network hyper-parameters shared by the time-conditioned families: these keys of a `[model]` section are taken
/// out (`split`) and parsed here, the rest by the family's own parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    /// Vector data: `mlp` (sinusoidal time features concatenated to x) or `fourier` (DiffFlow's Fourier-feature MLP,
    /// width `hidden[0]`, `hidden.len()` GELU layers, all widths equal).
    #[serde(default = "default_arch")]
    pub arch: Arch,
    /// Hidden widths of the MLP (vector data).
    #[serde(default = "default_hidden")]
    pub hidden: Vec<i64>,
    /// Size of the sinusoidal time features of the MLP.
    #[serde(default = "default_emb_dim")]
    pub emb_dim: i64,
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// U-Net base width, per-resolution multipliers and GroupNorm groups (image data).
    #[serde(default = "default_unet_ch")]
    pub unet_ch: i64,
    #[serde(default = "default_unet_mults")]
    pub unet_mults: Vec<i64>,
    #[serde(default = "default_unet_groups")]
    pub unet_groups: i64,
}

/// Which network reads vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Mlp,
    Fourier,
}

/// The `[model]` keys that belong to `NetSpec`.
pub const KEYS: [&str; 7] = ["arch", "hidden", "emb_dim", "activation", "unet_ch", "unet_mults", "unet_groups"];

/// Splits a `[model]` table into (network keys, the family's keys).
pub fn split(table: &toml::Table) -> (toml::Table, toml::Table) {
    table.clone().into_iter().partition(|(k, _)| KEYS.contains(&k.as_str()))
}

pub fn default_arch() -> Arch {
    Arch::Mlp
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

/// A TimeMlp for event shape \[D], a U-Net for [C, H, W].
pub fn time_net(path: &nn::Path, shape: &[i64], spec: &NetSpec) -> Result<Box<dyn TimeNet>> {
    match shape {
        [d] if spec.arch == Arch::Fourier => {
            let width = spec.hidden.first().copied().unwrap_or(0);
            if spec.hidden.iter().any(|&h| h != width) {
                bail!("arch = \"fourier\" needs equal hidden widths (width, depth = hidden[0], len), got {:?}", spec.hidden);
            }
            Ok(Box::new(FourierMlp::new(path, *d, width, spec.hidden.len())?))
        }
        [d] => Ok(Box::new(TimeMlp::new(path, *d, &spec.hidden, *d, spec.emb_dim, spec.activation)?)),
        [c, _, _] => Ok(Box::new(UNet::new(path, *c, spec.unet_ch, &spec.unet_mults, spec.unet_groups)?)),
        _ => bail!("no time-conditioned network for data of shape {shape:?} (vectors [D] or images [C, H, W])"),
    }
}
