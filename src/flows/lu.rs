//! LU-decomposed invertible linear layer (Kingma & Dhariwal 2018, §3.2; nflows' LULinear): z = P L (U + diag(e^s)) x + b
//! with P a fixed random permutation, L unit lower-triangular and U strictly upper-triangular, so
//! log|det ∂z/∂x| = Σ s and the inverse is two triangular solves. Initialised at the identity (times P).
//! On images [B, C, H, W] it acts on the channels of every pixel: the invertible 1x1 convolution of Glow in its LU
//! form, with log|det| = H·W·Σ s.
use crate::layer::{Layer, LayerKind};
use tch::{nn, Kind, Tensor};

#[derive(Debug)]
pub struct LuLinear {
    perm: Tensor,
    inv_perm: Tensor,
    lower: Tensor,
    upper: Tensor,
    log_s: Tensor,
    bias: Tensor,
    dim: i64,
}

impl LuLinear {
    pub fn new(path: &nn::Path, dim: i64) -> Self {
        let perm = path.add("perm", Tensor::randperm(dim, (Kind::Int64, path.device())), false);
        let inv_perm = path.add("inv_perm", perm.argsort(0, false), false);
        LuLinear {
            perm,
            inv_perm,
            lower: path.zeros("lower", &[dim, dim]),
            upper: path.zeros("upper", &[dim, dim]),
            log_s: path.zeros("log_s", &[dim]),
            bias: path.zeros("bias", &[dim]),
            dim,
        }
    }

    /// (L, U + diag(e^s)) from the free parameters.
    fn factors(&self) -> (Tensor, Tensor) {
        let eye = Tensor::eye(self.dim, (self.lower.kind(), self.lower.device()));
        let l = self.lower.tril(-1) + &eye;
        let u = self.upper.triu(1) + self.log_s.exp().diag_embed(0, -2, -1);
        (l, u)
    }

    /// Σ s times the number of positions the map is applied at (1 for vectors, H·W for images), per example.
    fn log_det(&self, x: &Tensor) -> Tensor {
        let positions: i64 = x.size()[2..].iter().product();
        (self.log_s.sum(self.log_s.kind()) * positions as f64).expand([x.size()[0]], false)
    }
}

impl Layer for LuLinear {
    /// z = P L U x + b on dimension 1 (features, or the channels of every pixel), V = positions · Σ s.
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (l, u) = self.factors();
        let y = x.movedim(&[1], &[-1]).matmul(&u.transpose(0, 1)).matmul(&l.transpose(0, 1));
        let z = (y.index_select(-1, &self.inv_perm) + &self.bias).movedim(&[-1], &[1]);
        (z, self.log_det(x))
    }

    /// x = U⁻¹ L⁻¹ Pᵀ (z - b) by triangular solves; contribution -V.
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let (l, u) = self.factors();
        let moved = z.movedim(&[1], &[-1]);
        let y = (moved - &self.bias).index_select(-1, &self.perm);
        let cols = y.reshape([-1, self.dim]).transpose(0, 1);
        let w = Tensor::linalg_solve_triangular(&l, &cols, false, true, true);
        let x = Tensor::linalg_solve_triangular(&u, &w, true, true, false).transpose(0, 1);
        let x = x.reshape(y.size().as_slice()).movedim(&[-1], &[1]);
        (x, -self.log_det(z))
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::{check_bijection, check_bijection_at};

    #[test]
    fn lu_linear_is_a_correct_bijection() {
        check_bijection(5, |p| Box::new(LuLinear::new(p, 5)));
        check_bijection(2, |p| Box::new(LuLinear::new(p, 2)));
    }

    #[test]
    fn on_images_it_is_a_1x1_convolution() {
        let x = Tensor::randn([2, 3, 4, 2], (tch::Kind::Double, tch::Device::Cpu));
        check_bijection_at(&x, |p| Box::new(LuLinear::new(p, 3)));
        // The same map as torch's conv2d with the weight W = P L U viewed as [C, C, 1, 1].
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let layer = LuLinear::new(&vs.root(), 3);
        tch::no_grad(|| {
            for mut p in vs.trainable_variables() {
                let _ = p.g_add_(&(Tensor::randn_like(&p) * 0.3));
            }
        });
        let x = x.to_kind(tch::Kind::Float);
        let (l, u) = layer.factors();
        let w = l.matmul(&u).index_select(0, &layer.inv_perm);
        let conv = x.conv2d(&w.view([3, 3, 1, 1]), Some(&layer.bias), [1, 1], [0, 0], [1, 1], 1);
        let (z, _) = layer.forward(&x);
        assert!((z - conv).abs().max().double_value(&[]) < 1e-5);
    }
}
