//! The max surjection (Nielsen et al. 2020, §3.2 and App. E): z = max of a block, an inference surjection. Its inverse
//! picks which element was the max, k ~ U{1..m}, and sets the others x_j = z - e_j with e_j ~ HalfNormal(σ)
//! (σ learned per channel), so V = -log m + Σ_{j≠k} log HalfNormal(z - x_j; σ).
//! Blocks are the whole feature vector ([B, D] -> [B, 1]) or 2x2 windows of images (max pooling,
//! [B, C, H, W] -> [B, C, H/2, W/2]).
use crate::dist::normal::LN_2PI;
use crate::layer::{Layer, LayerKind};
use tch::{nn, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocks {
    /// The max over all features of a vector.
    Vector,
    /// 2x2 max pooling of images.
    Pool2d,
}

#[derive(Debug)]
pub struct Max {
    blocks: Blocks,
    /// Elements per block m: D for a vector, 4 for 2x2 pooling.
    width: i64,
    /// log σ of the half-normal gaps, one per channel (one for vectors).
    log_sigma: Tensor,
}

impl Max {
    /// `features`: D of the vectors, or C of the images.
    pub fn new(path: &nn::Path, blocks: Blocks, features: i64) -> Self {
        let (c, width) = if blocks == Blocks::Vector { (1, features) } else { (features, 4) };
        Max { blocks, width, log_sigma: path.zeros("log_sigma", &[c]) }
    }

    /// x as blocks [B, C, ..., m] with the block's elements last (a vector is one block on one channel).
    fn to_blocks(&self, x: &Tensor) -> Tensor {
        match self.blocks {
            Blocks::Vector => x.unsqueeze(1),
            Blocks::Pool2d => {
                let s = x.size();
                let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
                x.reshape([b, c, h / 2, 2, w / 2, 2]).permute([0, 1, 2, 4, 3, 5]).reshape([b, c, h / 2, w / 2, 4])
            }
        }
    }

    fn from_blocks(&self, blocks: &Tensor) -> Tensor {
        match self.blocks {
            Blocks::Vector => blocks.squeeze_dim(1),
            Blocks::Pool2d => {
                let s = blocks.size();
                let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
                blocks.reshape([b, c, h, w, 2, 2]).permute([0, 1, 2, 4, 3, 5]).reshape([b, c, h * 2, w * 2])
            }
        }
    }

    /// log σ broadcast against blocks [B, C, ..., m] (channel dimension 1).
    fn log_sigma_for(&self, blocks: &Tensor) -> Tensor {
        let mut shape = vec![1i64; blocks.dim()];
        shape[1] = -1;
        self.log_sigma.view(shape.as_slice())
    }

    /// Σ over non-max elements of log HalfNormal(gap; σ), per example; gaps [B, C, ..., m] with 0 at the max.
    fn log_gaps(&self, gaps: &Tensor, non_max: &Tensor) -> Tensor {
        let log_s = self.log_sigma_for(gaps);
        let lp = (gaps * (-&log_s).exp()).square() * -0.5 - &log_s - 0.5 * LN_2PI + 2f64.ln();
        (lp * non_max).flatten(1, -1).sum_dim_intlist(1, false, None)
    }

    fn blocks_per_example(&self, blocks: &Tensor) -> i64 {
        blocks.numel() as i64 / (blocks.size()[0] * blocks.size().last().copied().unwrap_or(1))
    }
}

impl Layer for Max {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let blocks = self.to_blocks(x);
        let (z, k) = blocks.max_dim(-1, true);
        let non_max = blocks.ones_like().scatter_value(-1, &k, 0.0);
        let v = self.log_gaps(&(&z - &blocks), &non_max) - self.blocks_per_example(&blocks) as f64 * (self.width as f64).ln();
        (z.squeeze_dim(-1), v)
    }

    /// k ~ U{1..m} per block, the other elements z - |N(0, σ²)|; contribution -V.
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let zb = z.unsqueeze(-1);
        let mut shape = zb.size();
        let k_shape = shape.clone();
        *shape.last_mut().expect("block dim") = self.width;
        let opts = (z.kind(), z.device());
        let k = crate::rows::randint(self.width, k_shape.as_slice(), z.device());
        let non_max = Tensor::ones(shape.as_slice(), opts).scatter_value(-1, &k, 0.0);
        let gaps = crate::rows::randn(shape.as_slice(), opts).abs() * self.log_sigma_for(&zb).exp() * &non_max;
        let blocks = &zb - &gaps;
        let v = self.log_gaps(&gaps, &non_max) - self.blocks_per_example(&blocks) as f64 * (self.width as f64).ln();
        (self.from_blocks(&blocks), -v)
    }

    fn kind(&self) -> LayerKind {
        LayerKind::InferenceSurjection
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::survae::testing::grid_mass;
    use tch::{Device, Kind};

    #[test]
    fn vector_max_model_integrates_to_one() {
        let vs = nn::VarStore::new(Device::Cpu);
        let max = Max::new(&vs.root().sub("max"), Blocks::Vector, 2);
        tch::no_grad(|| {
            let _ = max.log_sigma.shallow_clone().fill_(0.3);
        });
        let mass = grid_mass(vec![Box::new(max)], &vs, 1);
        assert!((mass - 1.0).abs() < 5e-3, "mass {mass}");
    }

    #[test]
    fn max_pooling_contribution_matches_a_hand_computation() {
        // One 2x2 block [1, 3, 2, 0.5]: z = 3, gaps 2, 1, 2.5 under HalfNormal(σ = 1), and -log 4 for the index.
        let vs = nn::VarStore::new(Device::Cpu);
        let max = Max::new(&vs.root(), Blocks::Pool2d, 1);
        let x = Tensor::from_slice(&[1.0f64, 3.0, 2.0, 0.5]).view([1, 1, 2, 2]);
        let (z, v) = max.forward(&x);
        assert_eq!(z.size(), vec![1, 1, 1, 1]);
        assert_eq!(z.double_value(&[0, 0, 0, 0]), 3.0);
        let half_normal = |g: f64| 2f64.ln() - 0.5 * LN_2PI - 0.5 * g * g;
        let expected = half_normal(2.0) + half_normal(1.0) + half_normal(2.5) - 4f64.ln();
        assert!((v.double_value(&[0]) - expected).abs() < 1e-9);
        // The inverse puts z back as the block's maximum and the others below it.
        let img = Tensor::randn([2, 3, 4, 4], (Kind::Double, Device::Cpu));
        let max3 = Max::new(&nn::VarStore::new(Device::Cpu).root(), Blocks::Pool2d, 3);
        let (z, _) = max3.forward(&img.to_kind(Kind::Float));
        let (x_back, contrib) = max3.inverse(&z);
        assert_eq!(x_back.size(), vec![2, 3, 4, 4]);
        let (z_again, v_again) = max3.forward(&x_back);
        assert!((z_again - &z).abs().max().double_value(&[]) < 1e-6);
        assert!((v_again + contrib).abs().max().double_value(&[]) < 1e-4);
    }
}
