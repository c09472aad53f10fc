//! Gaussian base distributions.
use super::Distribution;
use tch::{nn, Device, Kind, Tensor};

/// ln 2π.
pub const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Sum over every dimension but the first.
pub fn sum_except_batch(x: &Tensor) -> Tensor {
    x.flatten(1, -1).sum_dim_intlist(1, false, None)
}

/// N(0, I) over an event of shape `shape`.
#[derive(Debug)]
pub struct StandardNormal {
    pub shape: Vec<i64>,
    pub device: Device,
}

impl Distribution for StandardNormal {
    /// log N(z; 0, I) = -½ Σ z² - (D/2) log 2π.
    fn log_prob(&self, z: &Tensor) -> Tensor {
        let d: i64 = self.shape.iter().product();
        sum_except_batch(&z.square()) * -0.5 - 0.5 * d as f64 * LN_2PI
    }

    fn sample_tempered(&self, n: i64, t: f64) -> Tensor {
        let mut shape = vec![n];
        shape.extend(&self.shape);
        crate::rows::randn(&shape, (Kind::Float, self.device)) * t
    }
}

/// N(μ, diag σ²) with learned μ and log σ (initialised to 0: the standard normal).
#[derive(Debug)]
pub struct DiagNormal {
    pub mean: Tensor,
    pub log_std: Tensor,
}

impl DiagNormal {
    pub fn new(path: &nn::Path, shape: &[i64]) -> Self {
        DiagNormal { mean: path.zeros("mean", shape), log_std: path.zeros("log_std", shape) }
    }
}

impl Distribution for DiagNormal {
    /// log N(z; μ, σ²) = Σ [-½ ((z-μ)/σ)² - log σ] - (D/2) log 2π.
    fn log_prob(&self, z: &Tensor) -> Tensor {
        let d = self.mean.numel() as f64;
        let u = (z - &self.mean) * (-&self.log_std).exp();
        sum_except_batch(&(u.square() * -0.5 - &self.log_std)) - 0.5 * d * LN_2PI
    }

    fn sample_tempered(&self, n: i64, t: f64) -> Tensor {
        let mut shape = vec![n];
        shape.extend(self.mean.size());
        let eps = crate::rows::randn(&shape, (Kind::Float, self.mean.device())) * t;
        eps * self.log_std.exp() + &self.mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_normal_matches_closed_form() {
        let d = StandardNormal { shape: vec![3], device: Device::Cpu };
        let z = Tensor::from_slice(&[0.5f32, -1.0, 2.0]).view([1, 3]);
        let expected = -0.5 * (0.25 + 1.0 + 4.0) - 1.5 * LN_2PI;
        assert!((d.log_prob(&z).double_value(&[0]) - expected).abs() < 1e-5);
    }

    #[test]
    fn diag_normal_matches_product_of_univariate() {
        let vs = nn::VarStore::new(Device::Cpu);
        let d = DiagNormal::new(&vs.root(), &[2]);
        tch::no_grad(|| {
            d.mean.shallow_clone().copy_(&Tensor::from_slice(&[1.0f32, -2.0]));
            d.log_std.shallow_clone().copy_(&Tensor::from_slice(&[0.5f32, -0.3]));
        });
        let z = Tensor::from_slice(&[0.2f32, -1.5]).view([1, 2]);
        let uni = |z: f64, m: f64, ls: f64| -0.5 * ((z - m) / ls.exp()).powi(2) - ls - 0.5 * LN_2PI;
        let expected = uni(0.2, 1.0, 0.5) + uni(-1.5, -2.0, -0.3);
        assert!((d.log_prob(&z).double_value(&[0]) - expected).abs() < 1e-5);
    }
}
