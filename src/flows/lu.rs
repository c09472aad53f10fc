//! LU-decomposed invertible linear layer (Kingma & Dhariwal 2018, §3.2; nflows' LULinear): z = P L (U + diag(e^s)) x + b
//! with P a fixed random permutation, L unit lower-triangular and U strictly upper-triangular, so
//! log|det ∂z/∂x| = Σ s and the inverse is two triangular solves. Initialised at the identity (times P).
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
}

impl Layer for LuLinear {
    /// z = P L U x + b (rows of the batch), V = Σ s.
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (l, u) = self.factors();
        let y = x.matmul(&u.transpose(0, 1)).matmul(&l.transpose(0, 1));
        let z = y.index_select(1, &self.inv_perm) + &self.bias;
        let v = self.log_s.sum(self.log_s.kind()).expand([x.size()[0]], false);
        (z, v)
    }

    /// x = U⁻¹ L⁻¹ Pᵀ (z - b) by triangular solves; contribution -Σ s.
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let (l, u) = self.factors();
        let y = (z - &self.bias).index_select(1, &self.perm).transpose(0, 1);
        let w = Tensor::linalg_solve_triangular(&l, &y, false, true, true);
        let x = Tensor::linalg_solve_triangular(&u, &w, true, true, false).transpose(0, 1);
        let v = -self.log_s.sum(self.log_s.kind()).expand([z.size()[0]], false);
        (x, v)
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection;

    #[test]
    fn lu_linear_is_a_correct_bijection() {
        check_bijection(5, |p| Box::new(LuLinear::new(p, 5)));
        check_bijection(2, |p| Box::new(LuLinear::new(p, 2)));
    }
}
