//! Affine (or additive) couplings on images with a ResNet conditioner (Dinh et al. 2017, §3.4-3.5; Kingma & Dhariwal
//! 2018, §3.3). A fixed binary mask b picks the conditioning coordinates: a spatial checkerboard or half of the
//! channels. With h = ResNet(b ⊙ x), log s = bound(h_s) ⊙ (1 - b), t = h_t ⊙ (1 - b):
//! z = x ⊙ exp(log s) + t (so z = x where b = 1), log|det ∂z/∂x| = Σ log s.
//!
//! A conditional coupling reads the context features h(c) [B, E] as E constant channels beside b ⊙ x
//! (h = ResNet([b ⊙ x, h(c)])): for every fixed c it is the same bijection with the same log-determinant.
use super::ScaleBound;
use crate::dist::normal::sum_except_batch;
use crate::layer::{Layer, LayerKind};
use crate::nets::ResNet;
use anyhow::Result;
use tch::{nn, Kind, Tensor};

/// Which coordinates condition the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// b = 1 where (h + w) is even (odd with `parity`), on every channel.
    Checkerboard { parity: bool },
    /// b = 1 on the first half of the channels (the second with `parity`).
    Channel { parity: bool },
}

impl Mask {
    /// The mask as a [1, C, H, W] tensor of 0s and 1s.
    pub fn tensor(self, shape: &[i64], device: tch::Device) -> Tensor {
        let (c, h, w) = (shape[0], shape[1], shape[2]);
        let opts = (Kind::Float, device);
        let b = match self {
            Mask::Checkerboard { parity } => {
                let hw = Tensor::arange(h, opts).view([h, 1]) + Tensor::arange(w, opts).view([1, w]);
                let even = hw.remainder(2.0).eq(if parity { 1.0 } else { 0.0 });
                even.to_kind(Kind::Float).view([1, 1, h, w]).expand([1, c, h, w], false)
            }
            Mask::Channel { parity } => {
                let first = Tensor::arange(c, opts).lt((c / 2) as f64).to_kind(Kind::Float);
                let b = if parity { 1.0 - first } else { first };
                b.view([1, c, 1, 1]).expand([1, c, h, w], false)
            }
        };
        b.contiguous()
    }
}

/// Whether the coupling scales as well as shifts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageTransform {
    Affine(ScaleBound),
    Additive,
}

#[derive(Debug)]
pub struct ImageCoupling {
    net: ResNet,
    mask: Tensor,
    transform: ImageTransform,
    /// Width E of the context features read as constant channels (0: unconditional).
    cond: i64,
}

impl ImageCoupling {
    /// A coupling on events of shape [C, H, W].
    pub fn new(path: &nn::Path, shape: &[i64], mask: Mask, transform: ImageTransform, hidden: i64, blocks: usize) -> Result<Self> {
        Self::conditional(path, shape, mask, transform, hidden, blocks, 0)
    }

    /// A coupling whose ResNet also reads `cond` channels of context features (0 gives `new`).
    pub fn conditional(path: &nn::Path, shape: &[i64], mask: Mask, transform: ImageTransform, hidden: i64, blocks: usize, cond: i64) -> Result<Self> {
        anyhow::ensure!(shape.len() == 3, "an image coupling needs [C, H, W] events, got {shape:?}");
        let c = shape[0];
        anyhow::ensure!(
            transform != ImageTransform::Affine(ScaleBound::ScaledTanh),
            "scale_bound = \"scaled_tanh\" is for the MLP couplings; image couplings take tanh, softplus or sigmoid"
        );
        if let Mask::Channel { .. } = mask {
            anyhow::ensure!(c >= 2, "a channel coupling needs at least 2 channels, got {c} (squeeze first)");
        }
        let c_out = match transform {
            ImageTransform::Affine(_) => 2 * c,
            ImageTransform::Additive => c,
        };
        let net = ResNet::new(&path.sub("net"), c + cond, hidden, c_out, blocks)?;
        let mask = path.add("mask", mask.tensor(shape, path.device()), false);
        Ok(ImageCoupling { net, mask, transform, cond })
    }

    /// (log s, t), both zero where the mask conditions; log s is None for the additive coupling. `c`: context
    /// features [B, E] of a conditional coupling, broadcast over the pixels.
    fn params(&self, x_a: &Tensor, c: Option<&Tensor>) -> (Option<Tensor>, Tensor) {
        let free = 1.0 - &self.mask;
        let input = match c {
            Some(c) => {
                let (b, hh, ww) = (x_a.size()[0], x_a.size()[2], x_a.size()[3]);
                assert_eq!(c.size(), vec![b, self.cond], "context features [batch, width] of a conditional image coupling");
                let planes = c.to_kind(x_a.kind()).view([b, self.cond, 1, 1]).expand([b, self.cond, hh, ww], false);
                Tensor::cat(&[x_a.shallow_clone(), planes], 1)
            }
            None => {
                assert_eq!(self.cond, 0, "a conditional image coupling needs its context features (forward_given)");
                x_a.shallow_clone()
            }
        };
        let h = self.net.forward(&input);
        match self.transform {
            ImageTransform::Additive => (None, h * free),
            ImageTransform::Affine(bound) => {
                let c = h.size()[1] / 2;
                let (raw, t) = (h.narrow(1, 0, c), h.narrow(1, c, c));
                (Some(bound.log_scale(&raw) * &free), t * free)
            }
        }
    }
}

impl ImageCoupling {
    fn forward_with(&self, x: &Tensor, c: Option<&Tensor>) -> (Tensor, Tensor) {
        let (log_s, t) = self.params(&(x * &self.mask), c);
        match log_s {
            Some(log_s) => (t.addcmul(x, &log_s.exp()), sum_except_batch(&log_s)),
            None => (x + t, Tensor::zeros([x.size()[0]], (x.kind(), x.device()))),
        }
    }

    fn inverse_with(&self, z: &Tensor, c: Option<&Tensor>) -> (Tensor, Tensor) {
        let (log_s, t) = self.params(&(z * &self.mask), c);
        match log_s {
            Some(log_s) => ((z - t) * (-&log_s).exp(), -sum_except_batch(&log_s)),
            None => (z - t, Tensor::zeros([z.size()[0]], (z.kind(), z.device()))),
        }
    }
}

impl Layer for ImageCoupling {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.forward_with(x, None)
    }

    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        self.inverse_with(z, None)
    }

    fn forward_given(&self, x: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        self.forward_with(x, Some(h))
    }

    fn inverse_given(&self, z: &Tensor, h: &Tensor) -> (Tensor, Tensor) {
        self.inverse_with(z, Some(h))
    }

    fn data_init_given(&self, x: &Tensor, h: &Tensor) -> Tensor {
        self.forward_with(x, Some(h)).0
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }

    fn nfe(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection_at;
    use tch::Device;

    fn check(shape: [i64; 3], mask: Mask, transform: ImageTransform) {
        let x = Tensor::randn([3, shape[0], shape[1], shape[2]], (Kind::Double, Device::Cpu));
        check_bijection_at(&x, |p| Box::new(ImageCoupling::new(p, &shape, mask, transform, 8, 1).unwrap()));
    }

    #[test]
    fn image_couplings_are_correct_bijections() {
        let affine = ImageTransform::Affine(ScaleBound::Sigmoid);
        check([1, 4, 4], Mask::Checkerboard { parity: false }, affine);
        check([2, 3, 4], Mask::Checkerboard { parity: true }, ImageTransform::Affine(ScaleBound::Tanh));
        check([4, 2, 2], Mask::Channel { parity: false }, affine);
        check([4, 2, 3], Mask::Channel { parity: true }, ImageTransform::Additive);
    }

    /// Under `train.precision = "bf16"` the conditioner runs in bf16 but the coupling stays an exact bijection with an
    /// f32 log-determinant: the inverse reads the same conditioner input, so it undoes the forward map to f32 rounding.
    #[test]
    fn bf16_conditioner_keeps_the_coupling_invertible_with_f32_log_determinants() {
        use crate::native::amp::{with_precision, Precision};
        let shape = [2, 4, 4];
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = ImageCoupling::new(&vs.root(), &shape, Mask::Checkerboard { parity: false }, ImageTransform::Affine(ScaleBound::Sigmoid), 16, 1).unwrap();
        // Small weights, so that log s stays moderate and f32 itself inverts to ~1e-6 (a log s of -20 would lose x
        // in z = x e^{log s} + t whatever the conditioner's precision).
        tch::no_grad(|| {
            for mut p in vs.trainable_variables() {
                let _ = p.g_add_(&(Tensor::randn_like(&p) * 0.05));
            }
        });
        let x = Tensor::randn([3, 2, 4, 4], (Kind::Float, Device::Cpu));
        let (z32, v32) = layer.forward(&x);
        let ((z, v), (back, v_inv)) = with_precision(Precision::Bf16, || (layer.forward(&x), layer.inverse(&layer.forward(&x).0))).unwrap();
        assert_eq!((z.kind(), v.kind(), back.kind()), (Kind::Float, Kind::Float, Kind::Float));
        let round_trip = (&back - &x).abs().max().double_value(&[]);
        assert!(round_trip < 1e-5, "inverse(forward(x)) off by {round_trip}");
        assert!((&v + &v_inv).abs().max().double_value(&[]) < 1e-4, "the inverse's contribution must be -V");
        let dv = (&v - &v32).abs().max().double_value(&[]);
        assert!(dv > 0.0 && dv < 0.05 * v32.abs().max().double_value(&[]).max(1.0), "bf16 log-det {dv} away from f32");
        assert!((&z - &z32).abs().max().double_value(&[]) > 0.0, "bf16 must change the numbers (else the test proves nothing)");
        assert!(layer.forward(&x).0.equal(&z32), "back in f32, the same bits as before");
    }

    #[test]
    fn masked_coordinates_pass_through_and_masks_are_complementary() {
        let shape = [2, 4, 4];
        for mask in [Mask::Checkerboard { parity: false }, Mask::Channel { parity: true }] {
            tch::manual_seed(1);
            let vs = nn::VarStore::new(Device::Cpu);
            let layer = ImageCoupling::new(&vs.root(), &shape, mask, ImageTransform::Affine(ScaleBound::Sigmoid), 8, 1).unwrap();
            tch::no_grad(|| {
                for mut p in vs.trainable_variables() {
                    let _ = p.g_add_(&(Tensor::randn_like(&p) * 0.3));
                }
            });
            let x = Tensor::randn([2, 2, 4, 4], (Kind::Float, Device::Cpu));
            let (z, _) = layer.forward(&x);
            let b = mask.tensor(&shape, Device::Cpu);
            assert_eq!(((&z - &x) * &b).abs().max().double_value(&[]), 0.0, "{mask:?}: conditioning part unchanged");
            assert!(((&z - &x) * (-&b + 1.0)).abs().max().double_value(&[]) > 1e-3, "{mask:?}: the rest changes");
            assert_eq!(b.mean(None).double_value(&[]), 0.5);
        }
        let a = Mask::Checkerboard { parity: false }.tensor(&shape, Device::Cpu);
        let b = Mask::Checkerboard { parity: true }.tensor(&shape, Device::Cpu);
        assert_eq!((a + b).min().double_value(&[]), 1.0);
    }
}
