//! Which time-conditioned network a diffusion / score / DiffFlow model gets: an MLP on vectors, a U-Net on images.
use super::{Activation, FourierMlp, TimeMlp, TimeNet, UNet};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::nn;

/// `[model.net]`: the network of the time-conditioned families (DDPM, score, DiffFlow).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetSpec {
    /// Vector data: `mlp` (sinusoidal time features concatenated to x) or `fourier` (DiffFlow's Fourier-feature MLP,
    /// width `hidden[0]`, `hidden.len()` GELU layers, all widths equal).
    pub arch: Arch,
    /// Hidden widths of the MLP (vector data).
    pub hidden: Vec<i64>,
    /// Size of the sinusoidal time features of the MLP.
    pub emb_dim: i64,
    pub activation: Activation,
    /// U-Net base width, per-resolution multipliers and GroupNorm groups (image data).
    pub unet_ch: i64,
    pub unet_mults: Vec<i64>,
    pub unet_groups: i64,
    /// Feature-map sides with self-attention (e.g. [16]: DDPM's 16x16 on CIFAR-10; also the middle then). Empty:
    /// none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unet_attn: Vec<i64>,
    /// Highest frequency of the sinusoidal time features, t in [0, 1] (unset: 1000, which resolves 1000 discrete
    /// steps; a CNF, whose adaptive solver pays for every wiggle of v in t, uses a small one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_max_freq: Option<f64>,
}

impl Default for NetSpec {
    fn default() -> Self {
        NetSpec {
            arch: Arch::Mlp,
            hidden: vec![128, 128, 128],
            emb_dim: 32,
            activation: Activation::Silu,
            unet_ch: 32,
            unet_mults: vec![1, 2, 2],
            unet_groups: 8,
            unet_attn: Vec::new(),
            time_max_freq: None,
        }
    }
}

/// Which network reads vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Mlp,
    Fourier,
}

/// A TimeMlp for event shape \[D], a U-Net for [C, H, W].
pub fn time_net(path: &nn::Path, shape: &[i64], spec: &NetSpec) -> Result<Box<dyn TimeNet>> {
    time_net_given(path, shape, spec, None)
}

/// `time_net`, reading conditioning features of width `cond` through `TimeNet::forward_tc` when given (None builds
/// exactly `time_net`'s network, variable for variable).
pub fn time_net_given(path: &nn::Path, shape: &[i64], spec: &NetSpec, cond: Option<i64>) -> Result<Box<dyn TimeNet>> {
    if shape.len() == 1 && !spec.unet_attn.is_empty() {
        bail!("model.net.unet_attn = {:?} is for images (U-Net attention); this data is vectors of shape {shape:?}", spec.unet_attn);
    }
    let max_freq = spec.time_max_freq.unwrap_or(super::time::MAX_FREQ);
    if !(max_freq > 0.0 && max_freq.is_finite()) {
        bail!("model.net.time_max_freq must be a positive number, got {max_freq}");
    }
    if spec.arch == Arch::Fourier && spec.time_max_freq.is_some() && shape.len() == 1 {
        bail!("model.net.time_max_freq is for the sinusoidal time features of arch = \"mlp\" and the U-Net; arch = \"fourier\" has its own");
    }
    match shape {
        [d] if spec.arch == Arch::Fourier => {
            let width = spec.hidden.first().copied().unwrap_or(0);
            if spec.hidden.iter().any(|&h| h != width) {
                bail!("arch = \"fourier\" needs equal hidden widths (width, depth = hidden[0], len), got {:?}", spec.hidden);
            }
            Ok(match cond {
                Some(e) => Box::new(FourierMlp::conditional(path, *d, width, spec.hidden.len(), e)?),
                None => Box::new(FourierMlp::new(path, *d, width, spec.hidden.len())?),
            })
        }
        [d] => Ok(Box::new(TimeMlp::conditional(path, *d, &spec.hidden, *d, spec.emb_dim, spec.activation, cond.unwrap_or(0))?.with_max_freq(max_freq))),
        [c, side, _] => Ok(match cond {
            Some(e) => Box::new(UNet::conditional(path, *c, spec.unet_ch, &spec.unet_mults, spec.unet_groups, e)?.with_attention(path, *side, &spec.unet_attn)?.with_max_freq(max_freq)),
            None => Box::new(UNet::new(path, *c, spec.unet_ch, &spec.unet_mults, spec.unet_groups)?.with_attention(path, *side, &spec.unet_attn)?.with_max_freq(max_freq)),
        }),
        _ => bail!("no time-conditioned network for data of shape {shape:?} (vectors [D] or images [C, H, W])"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_is_for_images_and_builds_a_unet_there() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let spec = NetSpec { unet_ch: 8, unet_groups: 4, unet_attn: vec![16], ..Default::default() };
        let err = time_net(&vs.root(), &[2], &spec).unwrap_err().to_string();
        assert!(err.contains("unet_attn") && err.contains("[2]"), "{err}");
        time_net(&(vs.root() / "img"), &[3, 32, 32], &spec).unwrap();
        assert!(vs.variables().keys().any(|k| k.starts_with("img.down1.attn")), "attention at 16x16 is level 1 of 32x32");
        let err = time_net(&(vs.root() / "bad"), &[3, 28, 28], &spec).unwrap_err().to_string();
        assert!(err.contains("16x16") && err.contains("[28, 14, 7]"), "{err}");
    }
}
