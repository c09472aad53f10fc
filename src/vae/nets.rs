//! Encoder q(z|x) and decoder networks of a VAE: MLPs on flattened data, or a small convolutional pair for images
//! (two stride-2 4x4 convolutions down, two transposed ones up, as in the DCGAN-style VAEs of pythae).
use crate::nets::{Activation, Mlp};
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Mlp,
    Conv,
}

/// Channels of the two convolutional stages.
const CONV: [i64; 2] = [32, 64];

fn down(p: nn::Path, c_in: i64, c_out: i64) -> nn::Conv2D {
    nn::conv2d(p, c_in, c_out, 4, nn::ConvConfig { stride: 2, padding: 1, ..Default::default() })
}

fn up(p: nn::Path, c_in: i64, c_out: i64) -> nn::ConvTranspose2D {
    nn::conv_transpose2d(p, c_in, c_out, 4, nn::ConvTransposeConfig { stride: 2, padding: 1, ..Default::default() })
}

/// x [batch, event...] -> (μ, log σ) of q(z|x), each [batch, latent].
#[derive(Debug)]
pub struct Encoder {
    convs: Vec<nn::Conv2D>,
    mlp: Mlp,
    latent: i64,
    /// Width of the context features h(c) the MLP reads beside the (convolved) data (0: unconditional).
    cond: i64,
}

/// z [batch, latent] -> raw decoder output [batch, per_dim, event...].
#[derive(Debug)]
pub struct Decoder {
    mlp: Mlp,
    ups: Vec<nn::ConvTranspose2D>,
    shape: Vec<i64>,
    per_dim: i64,
    /// Width of the context features h(c) the MLP reads beside z (0: unconditional).
    cond: i64,
}

/// [a, h] for a conditional network, `a` itself otherwise.
fn with_features(a: Tensor, h: Option<&Tensor>, cond: i64) -> Tensor {
    match h {
        Some(h) => {
            assert_eq!(h.size(), vec![a.size()[0], cond], "context features [batch, width] of a conditional VAE network");
            Tensor::cat(&[a.shallow_clone(), h.to_kind(a.kind())], 1)
        }
        None => {
            assert_eq!(cond, 0, "a conditional VAE network needs its context features");
            a
        }
    }
}

fn check_conv(shape: &[i64]) -> Result<(i64, i64, i64)> {
    ensure!(shape.len() == 3, "model.arch = \"conv\" needs [C, H, W] images, got shape {shape:?} (use arch = \"mlp\")");
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    ensure!(h % 4 == 0 && w % 4 == 0, "model.arch = \"conv\" needs H and W divisible by 4, got {h}x{w}");
    Ok((c, h, w))
}

impl Encoder {
    /// `cond`: the width of context features read beside x (0 for an unconditional VAE).
    pub fn new(path: &nn::Path, shape: &[i64], arch: Arch, hidden: &[i64], latent: i64, act: Activation, cond: i64) -> Result<Self> {
        ensure!(latent >= 1, "model.latent must be at least 1, got {latent}");
        let (convs, d_in) = match arch {
            Arch::Mlp => (Vec::new(), shape.iter().product()),
            Arch::Conv => {
                let (c, h, w) = check_conv(shape)?;
                let convs = vec![down(path.sub("conv0"), c, CONV[0]), down(path.sub("conv1"), CONV[0], CONV[1])];
                (convs, CONV[1] * (h / 4) * (w / 4))
            }
        };
        let mlp = Mlp::new(&path.sub("mlp"), d_in + cond, hidden, 2 * latent, act, false)?;
        Ok(Encoder { convs, mlp, latent, cond })
    }

    pub fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.forward_given(x, None)
    }

    /// (μ, log σ) of q(z | x, c) with the context features `h` [batch, cond] read beside x (None: q(z | x)).
    pub fn forward_given(&self, x: &Tensor, c: Option<&Tensor>) -> (Tensor, Tensor) {
        let mut h = x.shallow_clone();
        for conv in &self.convs {
            h = conv.forward(&h).relu();
        }
        let out = self.mlp.forward(&with_features(h.flatten(1, -1), c, self.cond));
        (out.narrow(1, 0, self.latent), out.narrow(1, self.latent, self.latent))
    }
}

impl Decoder {
    /// `cond`: the width of context features read beside z (0 for an unconditional VAE).
    pub fn new(path: &nn::Path, shape: &[i64], arch: Arch, hidden: &[i64], latent: i64, per_dim: i64, act: Activation, cond: i64) -> Result<Self> {
        let hidden: Vec<i64> = hidden.iter().rev().copied().collect();
        let d_z = latent + cond;
        let (mlp, ups) = match arch {
            Arch::Mlp => {
                let d: i64 = shape.iter().product();
                (Mlp::new(&path.sub("mlp"), d_z, &hidden, per_dim * d, act, false)?, Vec::new())
            }
            Arch::Conv => {
                let (c, h, w) = check_conv(shape)?;
                let mlp = Mlp::new(&path.sub("mlp"), d_z, &hidden, CONV[1] * (h / 4) * (w / 4), act, false)?;
                (mlp, vec![up(path.sub("up0"), CONV[1], CONV[0]), up(path.sub("up1"), CONV[0], per_dim * c)])
            }
        };
        Ok(Decoder { mlp, ups, shape: shape.to_vec(), per_dim, cond })
    }

    pub fn forward(&self, z: &Tensor) -> Tensor {
        self.forward_given(z, None)
    }

    /// The raw decoder output of p(x | z, c), reading context features `c` [batch, cond] beside z (None: p(x | z)).
    pub fn forward_given(&self, z: &Tensor, c: Option<&Tensor>) -> Tensor {
        let b = z.size()[0];
        let mut h = self.mlp.forward(&with_features(z.shallow_clone(), c, self.cond));
        if !self.ups.is_empty() {
            let (h4, w4) = (self.shape[1] / 4, self.shape[2] / 4);
            h = h.relu().view([b, CONV[1], h4, w4]);
            h = self.ups[0].forward(&h).relu();
            h = self.ups[1].forward(&h);
        }
        let mut out = vec![b, self.per_dim];
        out.extend(&self.shape);
        // Conv output is [b, per_dim · C, H, W] with the parameter index outermost in the channel.
        h.reshape(out.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shapes_round_trip_for_both_architectures() {
        let vs = nn::VarStore::new(Device::Cpu);
        for (arch, shape) in [(Arch::Mlp, vec![2i64]), (Arch::Mlp, vec![1, 28, 28]), (Arch::Conv, vec![1, 28, 28])] {
            let p = vs.root().sub(format!("{arch:?}{}", shape.len()));
            let enc = Encoder::new(&p.sub("enc"), &shape, arch, &[16], 3, Activation::Relu, 0).unwrap();
            let dec = Decoder::new(&p.sub("dec"), &shape, arch, &[16], 3, 2, Activation::Relu, 0).unwrap();
            let mut xs = vec![5i64];
            xs.extend(&shape);
            let (mu, log_s) = enc.forward(&Tensor::rand(xs.as_slice(), (Kind::Float, Device::Cpu)));
            assert_eq!((mu.size(), log_s.size()), (vec![5, 3], vec![5, 3]));
            let mut out = vec![5i64, 2];
            out.extend(&shape);
            assert_eq!(dec.forward(&mu).size(), out);
        }
        let e = Encoder::new(&vs.root().sub("bad"), &[784], Arch::Conv, &[16], 3, Activation::Relu, 0).err().unwrap().to_string();
        assert!(e.contains("arch = \"mlp\""), "{e}");
    }
}
