//! Permutations of the feature dimension: reverse and a fixed random permutation (|det| = 1, V = 0).
use crate::layer::{Layer, LayerKind};
use tch::{nn, Kind, Tensor};

fn zeros_like_batch(x: &Tensor) -> Tensor {
    Tensor::zeros([x.size()[0]], (x.kind(), x.device()))
}

/// z = x reversed along dimension 1.
#[derive(Debug)]
pub struct Reverse;

impl Layer for Reverse {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        (x.flip([1]), zeros_like_batch(x))
    }
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        (z.flip([1]), zeros_like_batch(z))
    }
    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }
}

/// z = x[:, π] for a permutation π drawn once from torch's RNG and stored (not trained) with the weights.
#[derive(Debug)]
pub struct Permutation {
    perm: Tensor,
    inv: Tensor,
}

impl Permutation {
    pub fn new(path: &nn::Path, dim: i64) -> Self {
        let perm = path.add("perm", Tensor::randperm(dim, (Kind::Int64, path.device())), false);
        let inv = path.add("inv_perm", perm.argsort(0, false), false);
        Permutation { perm, inv }
    }
}

impl Layer for Permutation {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        (x.index_select(1, &self.perm), zeros_like_batch(x))
    }
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        (z.index_select(1, &self.inv), zeros_like_batch(z))
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
    fn reverse_is_a_correct_bijection() {
        check_bijection(4, |_| Box::new(Reverse));
    }

    #[test]
    fn permutation_is_a_correct_bijection() {
        check_bijection(5, |p| Box::new(Permutation::new(p, 5)));
    }
}
