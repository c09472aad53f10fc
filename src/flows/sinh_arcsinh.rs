//! The sinh-arcsinh layer (Jones & Pewsey 2009, eq. 2): per coordinate, z = sinh(δ asinh(x) - ε) with a learned skew
//! ε and tail weight δ = e^{log δ} > 0, the identity at initialisation. Interleaved with affine couplings it lets a
//! flow match lighter or heavier tails than the Gaussian base, which affine layers alone cannot change.
//!   log|dz/dx| = Σ_i [log δ_i + log cosh(δ_i asinh(x_i) - ε_i) - ½ log(1 + x_i²)]
//!   x = sinh((asinh(z) + ε) / δ)
//! `kind = "sinh_arcsinh"`: one of these before each coupling of a RealNVP stack.
use super::build::{base, realnvp_layers, BaseParams, RealNvpParams};
use crate::layer::{Layer, LayerKind, LayerModel};
use crate::model::{vector_dim, Family, Model, ModelParams};
use crate::nets::Activation;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct SinhArcsinh {
    epsilon: Tensor,
    log_delta: Tensor,
}

impl SinhArcsinh {
    pub fn new(path: &nn::Path, dim: i64) -> Self {
        SinhArcsinh { epsilon: path.zeros("epsilon", &[dim]), log_delta: path.zeros("log_delta", &[dim]) }
    }
}

/// log cosh(y) = |y| + log(1 + e^{-2|y|}) - log 2, without overflow.
fn log_cosh(y: &Tensor) -> Tensor {
    let a = y.abs();
    (&a * -2.0).exp().log1p() + a - std::f64::consts::LN_2
}

impl Layer for SinhArcsinh {
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let y = x.arcsinh() * self.log_delta.exp() - &self.epsilon;
        let ldj = &self.log_delta + log_cosh(&y) - (x.square() + 1.0).log() * 0.5;
        (y.sinh(), ldj.sum_dim_intlist(1, false, None))
    }

    fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
        let x = ((z.arcsinh() + &self.epsilon) * (-&self.log_delta).exp()).sinh();
        let (_, ldj) = self.forward(&x);
        (x, -ldj)
    }

    fn kind(&self) -> LayerKind {
        LayerKind::Bijection
    }
}

/// `kind = "sinh_arcsinh"`: RealNVP couplings, each preceded by a sinh-arcsinh layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinhArcsinhParams {
    pub n_layers: usize,
    pub hidden: Vec<i64>,
    pub activation: Activation,
    pub base: BaseParams,
}

impl Default for SinhArcsinhParams {
    fn default() -> Self {
        SinhArcsinhParams { n_layers: 8, hidden: vec![64, 64], activation: Activation::Relu, base: BaseParams::default() }
    }
}

impl ModelParams for SinhArcsinhParams {
    fn build(&self, path: &nn::Path, shape: &[i64]) -> Result<Box<dyn Model>> {
        let dim = vector_dim("sinh_arcsinh", shape)?;
        let couplings = RealNvpParams { n_layers: self.n_layers, hidden: self.hidden.clone(), activation: self.activation, ..Default::default() };
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        for (i, coupling) in realnvp_layers(&path.sub("flow"), dim, &couplings)?.into_iter().enumerate() {
            layers.push(Box::new(SinhArcsinh::new(&path.sub("sas").sub(i.to_string()), dim)));
            layers.push(coupling);
        }
        Ok(Box::new(LayerModel { layers, base: base(path, dim, &self.base)?, family: Family::Flow }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::testing::check_bijection;
    use tch::{Device, Kind};

    #[test]
    fn is_a_bijection_with_the_autograd_log_det() {
        check_bijection(3, |p| Box::new(SinhArcsinh::new(p, 3)));
    }

    #[test]
    fn starts_at_the_identity_and_log_cosh_does_not_overflow() {
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = SinhArcsinh::new(&vs.root(), 2);
        let x = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let (z, ldj) = layer.forward(&x);
        assert!((z - &x).abs().max().double_value(&[]) < 1e-5);
        assert!(ldj.abs().max().double_value(&[]) < 1e-5);
        let big = log_cosh(&Tensor::from_slice(&[200.0f32, -200.0]));
        assert!((big - (200.0 - std::f64::consts::LN_2)).abs().max().double_value(&[]) < 1e-3);
    }

    #[test]
    fn the_model_is_exact_and_normalised_on_a_grid() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = SinhArcsinhParams { n_layers: 2, hidden: vec![8], ..Default::default() }.build(&vs.root(), &[2]).unwrap();
        tch::no_grad(|| {
            for mut v in vs.trainable_variables() {
                let noise = Tensor::randn_like(&v) * 0.1;
                let _ = v.g_add_(&noise);
            }
        });
        let (n, half) = (300, 8.0);
        let h = 2.0 * half / n as f64;
        let c = Tensor::arange(n, (Kind::Float, Device::Cpu)) * h + (-half + 0.5 * h);
        let grid = Tensor::stack(&[c.unsqueeze(1).expand([n, n], false).reshape([-1]), c.unsqueeze(0).expand([n, n], false).reshape([-1])], 1);
        let lp = model.log_prob(&grid);
        assert_eq!(lp.kind, crate::model::Kind::Exact);
        let mass = lp.value.exp().sum(Kind::Double).double_value(&[]) * h * h;
        assert!((mass - 1.0).abs() < 0.02, "density integrates to {mass}");
    }
}
