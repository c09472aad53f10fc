//! Sorting and stochastic permutations for exchangeable data (Nielsen et al. 2020, §3.2 and §4.2).
//! - `Sort`: z = sort(x) (ascending along the features), an inference surjection; its inverse draws a uniformly random
//!   permutation, so V = log q(π | z) = -log D! (ties have measure zero).
//! - `StochasticPermutation`: z = x\[π] with a fresh uniform π each pass; V = log p(x|z) - log q(z|x) = 0, a stochastic
//!   layer whose single-sample log-likelihood is a lower bound (exact when everything after it is exchangeable).
use crate::layer::{Layer, LayerKind};
use tch::Tensor;

/// log D!.
pub fn log_factorial(d: i64) -> f64 {
    (2..=d).map(|k| (k as f64).ln()).sum()
}

/// A uniformly random permutation of dimension 1 for every example.
fn random_permutation(x: &Tensor) -> Tensor {
    let idx = crate::rows::rand_like(x).argsort(1, false);
    x.gather(1, &idx, false)
}

#[derive(Debug)]
pub struct Sort;

impl Layer for Sort {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (z, _) = x.sort(1, false);
        let v = Tensor::full([x.size()[0]], -log_factorial(x.size()[1]), (x.kind(), x.device()));
        (z, v)
    }

    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let v = Tensor::full([z.size()[0]], log_factorial(z.size()[1]), (z.kind(), z.device()));
        (random_permutation(z), v)
    }

    fn kind(&self) -> LayerKind {
        LayerKind::InferenceSurjection
    }
}

#[derive(Debug)]
pub struct StochasticPermutation;

impl Layer for StochasticPermutation {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        (random_permutation(x), Tensor::zeros([x.size()[0]], (x.kind(), x.device())))
    }

    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        (random_permutation(z), Tensor::zeros([z.size()[0]], (z.kind(), z.device())))
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Stochastic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn sort_orders_rows_and_its_model_integrates_to_one() {
        let x = Tensor::from_slice(&[3.0f32, -1.0, 2.0, 0.5, 0.1, -4.0]).view([2, 3]);
        let (z, v) = Sort.forward(&x);
        assert_eq!(Vec::<f32>::try_from(z.flatten(0, -1)).unwrap(), vec![-1.0, 2.0, 3.0, -4.0, 0.1, 0.5]);
        assert!((v.double_value(&[0]) + 6f64.ln()).abs() < 1e-6);
        let (back, _) = Sort.inverse(&z);
        assert!(back.sort(1, false).0.equal(&z), "the inverse permutes each row");
    }

    #[test]
    fn stochastic_permutation_draws_every_order() {
        tch::manual_seed(0);
        let x = Tensor::arange(3, (Kind::Float, Device::Cpu)).view([1, 3]).repeat([6000, 1]);
        let (z, v) = StochasticPermutation.forward(&x);
        assert_eq!(v.abs().sum(Kind::Double).double_value(&[]), 0.0);
        // Each value lands in each position a third of the time.
        let first_is_zero = z.select(1, 0).eq(0.0).to_kind(Kind::Double).mean(None).double_value(&[]);
        assert!((first_is_zero - 1.0 / 3.0).abs() < 0.03, "{first_is_zero}");
    }
}
