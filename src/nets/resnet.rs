//! The convolutional conditioner of image couplings: a small ResNet (He et al. 2016) as in RealNVP (Dinh et al. 2017,
//! §4.1) and Glow's coupling network (Kingma & Dhariwal 2018, §3.3, with residual blocks):
//! conv3x3(c_in -> hidden), then `blocks` residual blocks h + conv3x3(ReLU(conv1x1(ReLU(h)))), then ReLU and
//! conv3x3(hidden -> c_out).
//! The last convolution starts at zero, so a coupling built on it starts as the identity.
use anyhow::{ensure, Result};
use tch::nn::{self, Module};
use tch::Tensor;

fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64) -> nn::Conv2D {
    nn::conv2d(p, c_in, c_out, k, nn::ConvConfig { padding: k / 2, ..Default::default() })
}

/// h + conv3x3(ReLU(conv1x1(ReLU(h)))): Glow's 3x3 / 1x1 pair as a residual block.
#[derive(Debug)]
struct Block {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
}

impl Block {
    fn forward(&self, h: &Tensor) -> Tensor {
        h + self.conv2.forward(&self.conv1.forward(&h.relu()).relu())
    }
}

#[derive(Debug)]
pub struct ResNet {
    input: nn::Conv2D,
    blocks: Vec<Block>,
    output: nn::Conv2D,
}

impl ResNet {
    pub fn new(path: &nn::Path, c_in: i64, hidden: i64, c_out: i64, blocks: usize) -> Result<Self> {
        ensure!(hidden > 0, "model.hidden_channels must be positive, got {hidden}");
        let blocks = (0..blocks)
            .map(|i| {
                let p = path.sub(format!("block{i}"));
                Block { conv1: conv(p.sub("conv1"), hidden, hidden, 1), conv2: conv(p.sub("conv2"), hidden, hidden, 3) }
            })
            .collect();
        let zero = nn::ConvConfig { padding: 1, ws_init: nn::Init::Const(0.0), bs_init: nn::Init::Const(0.0), ..Default::default() };
        Ok(ResNet {
            input: conv(path.sub("input"), c_in, hidden, 3),
            blocks,
            output: nn::conv2d(path.sub("output"), hidden, c_out, 3, zero),
        })
    }

    /// [B, c_in, H, W] -> [B, c_out, H, W], f32 for f32 input (under `train.precision = "bf16"` computed in bf16
    /// autocast; see `native::amp::network`).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        crate::native::amp::network(x, || self.forward_at_precision(x))
    }

    /// The forward pass in whatever precision the caller set up.
    fn forward_at_precision(&self, x: &Tensor) -> Tensor {
        let mut h = self.input.forward(x);
        for b in &self.blocks {
            h = b.forward(&h);
        }
        self.output.forward(&h.relu())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn keeps_the_spatial_size_starts_at_zero_and_trains() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ResNet::new(&vs.root(), 3, 8, 5, 2).unwrap();
        let x = Tensor::randn([2, 3, 6, 4], (Kind::Float, Device::Cpu));
        let y = net.forward(&x);
        assert_eq!(y.size(), vec![2, 5, 6, 4]);
        assert_eq!(y.abs().max().double_value(&[]), 0.0, "zero-initialised output");
        y.sum(None).backward();
        let g = vs.variables()["output.weight"].grad();
        assert!(g.abs().sum(None).double_value(&[]) > 0.0, "the output layer still gets a gradient");
    }
}
