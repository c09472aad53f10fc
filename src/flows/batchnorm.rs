//! Batch normalization as a bijection (Dinh et al. 2017, §3.7; Papamakarios et al. 2017, §3.4):
//! z = (x - μ) / sqrt(σ² + ε) ⊙ e^γ + β, log|det ∂z/∂x| = Σ_i [γ_i - ½ log(σ_i² + ε)].
//! In training μ, σ² are the batch's statistics (and update running averages); in evaluation and sampling the running
//! averages are used, so the layer is then a fixed affine map and the density is exact and batch-independent.
use crate::layer::{Layer, LayerKind};
use std::cell::Cell;
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct BatchNorm {
    log_gamma: Tensor,
    beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    momentum: f64,
    eps: f64,
    training: Cell<bool>,
}

impl BatchNorm {
    /// Over features (dimension 1) of [batch, dim] inputs.
    pub fn new(path: &nn::Path, dim: i64) -> Self {
        BatchNorm {
            log_gamma: path.zeros("log_gamma", &[dim]),
            beta: path.zeros("beta", &[dim]),
            running_mean: path.zeros_no_train("running_mean", &[dim]),
            running_var: path.ones_no_train("running_var", &[dim]),
            momentum: 0.1,
            eps: 1e-5,
            training: Cell::new(false),
        }
    }

    /// (μ, σ²) to normalise with: the batch's in training (updating the running averages), else the running ones.
    fn stats(&self, x: &Tensor) -> (Tensor, Tensor) {
        if !self.training.get() {
            return (self.running_mean.shallow_clone(), self.running_var.shallow_clone());
        }
        let mean = x.mean_dim(0, false, None);
        let var = x.var_dim(0, false, false);
        tch::no_grad(|| {
            let m = self.momentum;
            let new_mean = &self.running_mean * (1.0 - m) + mean.detach() * m;
            let new_var = &self.running_var * (1.0 - m) + var.detach() * m;
            self.running_mean.shallow_clone().copy_(&new_mean);
            self.running_var.shallow_clone().copy_(&new_var);
        });
        (mean, var)
    }

    fn log_det(&self, var: &Tensor, batch: i64) -> Tensor {
        (&self.log_gamma - (var + self.eps).log() * 0.5).sum(None).expand([batch], false)
    }
}

impl Layer for BatchNorm {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (mean, var) = self.stats(x);
        let z = (x - mean) * (&var + self.eps).rsqrt() * self.log_gamma.exp() + &self.beta;
        (z, self.log_det(&var, x.size()[0]))
    }

    /// Always with the running averages (sampling happens in evaluation).
    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let var = &self.running_var;
        let x = (z - &self.beta) * (-&self.log_gamma).exp() * (var + self.eps).sqrt() + &self.running_mean;
        (x, -self.log_det(var, z.size()[0]))
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }

    fn set_training(&self, on: bool) {
        self.training.set(on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection;
    use tch::{Device, Kind};

    #[test]
    fn in_evaluation_it_is_a_correct_bijection() {
        check_bijection(3, |p| {
            let bn = BatchNorm::new(p, 3);
            bn.set_training(true);
            let _ = bn.forward(&(Tensor::randn([256, 3], (Kind::Float, Device::Cpu)) * 2.0 + 1.0));
            bn.set_training(false);
            Box::new(bn)
        });
    }

    #[test]
    fn training_normalises_the_batch_and_running_stats_follow_the_data() {
        let vs = nn::VarStore::new(Device::Cpu);
        let bn = BatchNorm::new(&vs.root(), 2);
        bn.set_training(true);
        let data = |n| Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * Tensor::from_slice(&[3.0f32, 0.5]) + Tensor::from_slice(&[-1.0f32, 2.0]);
        let x = data(4096);
        let (z, v) = bn.forward(&x);
        assert!(z.mean_dim(0, false, None).abs().max().double_value(&[]) < 1e-4);
        assert!((z.var_dim(0, false, false) - 1.0).abs().max().double_value(&[]) < 1e-3);
        let expected = -0.5 * (x.var_dim(0, false, false) + 1e-5).log().sum(None).double_value(&[]);
        assert!((v.double_value(&[0]) - expected).abs() < 1e-4);
        for _ in 0..100 {
            let _ = bn.forward(&data(1024));
        }
        let m = Vec::<f32>::try_from(&bn.running_mean).unwrap();
        let var = Vec::<f32>::try_from(&bn.running_var).unwrap();
        assert!((m[0] + 1.0).abs() < 0.1 && (m[1] - 2.0).abs() < 0.05, "{m:?}");
        assert!((var[0] - 9.0).abs() < 0.6 && (var[1] - 0.25).abs() < 0.02, "{var:?}");
        // In evaluation the same input gives the same output whatever the batch.
        bn.set_training(false);
        let one = bn.forward(&x.narrow(0, 0, 1)).0;
        let many = bn.forward(&x).0.narrow(0, 0, 1);
        assert!(one.equal(&many));
    }
}
