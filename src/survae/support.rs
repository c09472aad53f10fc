//! Bijections that carry the image of a surjection back onto all of R^D, so that the flow and base after it are
//! normalised on the right set: after abs, z ∈ (0, ∞)^D; after sort, z lies in the ordered cone z_1 ≤ ... ≤ z_D.
//! Without them a base on R^D wastes the mass outside that set and the model is sub-normalised.
use crate::layer::{Layer, LayerKind};
use tch::Tensor;

/// Floor of z (and of sorted gaps) before taking logs.
const TINY: f64 = 1e-30;

/// (0, ∞) -> R element-wise: y = log(e^z - 1) (the inverse softplus), log|dy/dz| = -log(1 - e^{-z}).
#[derive(Debug)]
pub struct PositiveToReal;

impl Layer for PositiveToReal {
    /// z is floored at 1e-30 (z = 0 has measure zero but appears on evaluation grids): the density there is ~0, not NaN.
    fn forward(&self, z: &Tensor) -> (Tensor, Tensor) {
        let z = z.clamp_min(TINY);
        let y = &z + (-(-&z).exp()).log1p();
        let v = -(-(-&z).exp()).log1p();
        (y, v.flatten(1, -1).sum_dim_intlist(1, false, None))
    }

    /// z = softplus(y), log|dz/dy| = log σ(y).
    fn inverse(&self, y: &Tensor) -> (Tensor, Tensor) {
        (y.softplus(), y.log_sigmoid().flatten(1, -1).sum_dim_intlist(1, false, None))
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }
}

/// Ordered cone -> R^D: y_1 = z_1, y_i = log(z_i - z_{i-1}); log|det| = -Σ_{i≥2} log(z_i - z_{i-1}).
#[derive(Debug)]
pub struct OrderedToFree;

impl Layer for OrderedToFree {
    /// Gaps are floored at 1e-30 (ties have measure zero but appear on evaluation grids): density ~0 there, not NaN.
    fn forward(&self, z: &Tensor) -> (Tensor, Tensor) {
        let d = z.size()[1];
        let log_gaps = (z.narrow(1, 1, d - 1) - z.narrow(1, 0, d - 1)).clamp_min(TINY).log();
        let v = -log_gaps.sum_dim_intlist(1, false, None);
        (Tensor::cat(&[z.narrow(1, 0, 1), log_gaps], 1), v)
    }

    /// z = y_1 + cumulative sums of e^{y_i}; log|det| = Σ_{i≥2} y_i.
    fn inverse(&self, y: &Tensor) -> (Tensor, Tensor) {
        let d = y.size()[1];
        let gaps = y.narrow(1, 1, d - 1);
        let rest = y.narrow(1, 0, 1) + gaps.exp().cumsum(1, gaps.kind());
        (Tensor::cat(&[y.narrow(1, 0, 1), rest], 1), gaps.sum_dim_intlist(1, false, None))
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
    fn both_are_correct_bijections_on_their_domains() {
        let positive = Tensor::rand([8, 3], (Kind::Double, Device::Cpu)) * 4.0 + 0.05;
        check_bijection_at(&positive, |_| Box::new(PositiveToReal));
        let ordered = (Tensor::rand([8, 4], (Kind::Double, Device::Cpu)) + 0.1).cumsum(1, Kind::Double) - 1.0;
        check_bijection_at(&ordered, |_| Box::new(OrderedToFree));
    }
}
