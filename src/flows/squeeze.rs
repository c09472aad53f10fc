//! Squeeze (Dinh et al. 2017, §3.6): each 2x2 spatial block becomes 4 channels, [C, H, W] -> [4C, H/2, W/2].
//! A permutation of coordinates, so V = 0.
use crate::layer::{Layer, LayerKind};
use tch::Tensor;

#[derive(Debug)]
pub struct Squeeze;

impl Layer for Squeeze {
    /// out[c·4 + 2i + j, h, w] = x[c, 2h + i, 2w + j].
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let s = x.size();
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        assert!(h % 2 == 0 && w % 2 == 0, "squeeze needs even height and width, got {h}x{w}");
        let z = x.reshape([b, c, h / 2, 2, w / 2, 2]).permute([0, 1, 3, 5, 2, 4]).reshape([b, c * 4, h / 2, w / 2]);
        (z, Tensor::zeros([b], (x.kind(), x.device())))
    }

    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let s = z.size();
        let (b, c, h, w) = (s[0], s[1] / 4, s[2], s[3]);
        let x = z.reshape([b, c, 2, 2, h, w]).permute([0, 1, 4, 2, 5, 3]).reshape([b, c, h * 2, w * 2]);
        (x, Tensor::zeros([b], (z.kind(), z.device())))
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection_at;
    use tch::{Device, Kind};

    #[test]
    fn squeeze_moves_each_2x2_block_into_channels() {
        let x = Tensor::arange(2 * 4 * 4, (Kind::Float, Device::Cpu)).view([1, 2, 4, 4]);
        let (z, _) = Squeeze.forward(&x);
        assert_eq!(z.size(), vec![1, 8, 2, 2]);
        // Channel 1·4 + 2·1 + 0 at (h, w) = (1, 0) holds x[1, 3, 0].
        assert_eq!(z.double_value(&[0, 6, 1, 0]), x.double_value(&[0, 1, 3, 0]));
        assert_eq!(z.double_value(&[0, 3, 0, 1]), x.double_value(&[0, 0, 1, 3]));
        check_bijection_at(&Tensor::randn([2, 3, 4, 2], (Kind::Double, Device::Cpu)), |_| Box::new(Squeeze));
    }
}
