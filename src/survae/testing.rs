//! Shared checks for surjective layers: a composed model's density integrates to 1 on a 2D grid.
use crate::dist::DiagNormal;
use crate::layer::{Layer, LayerModel};
use crate::model::Model;
use tch::{nn, Device, Kind, Tensor};

/// Adds N(0, scale²) noise to every trainable variable (moves layers away from their identity initialisation).
pub fn perturb(vs: &nn::VarStore, scale: f64) {
    tch::manual_seed(3);
    tch::no_grad(|| {
        for mut p in vs.trainable_variables() {
            let _ = p.g_add_(&(Tensor::randn_like(&p) * scale));
        }
    });
}

/// Σ p(x) · area over a 400² grid on [-6, 6]² for `layers` on a shifted, scaled diagonal Gaussian base of dimension
/// `base_dim` (its parameters are set here, so the density is not symmetric).
pub fn grid_mass(layers: Vec<Box<dyn Layer>>, vs: &nn::VarStore, base_dim: i64) -> f64 {
    let base = DiagNormal::new(&vs.root().sub("test_base"), &[base_dim]);
    tch::no_grad(|| {
        let _ = base.mean.shallow_clone().copy_(&(Tensor::arange(base_dim, (Kind::Float, Device::Cpu)) * -0.7 + 0.4));
        let _ = base.log_std.shallow_clone().fill_(-0.5);
    });
    let model = LayerModel { layers, base: Box::new(base), family: crate::model::Family::Survae };
    let n = 400;
    let h = 12.0 / (n - 1) as f64;
    let xs = Tensor::linspace(-6.0, 6.0, n, (Kind::Float, Device::Cpu));
    // The second axis is offset by half a cell, so no grid point lies on the diagonal x_1 = x_2 (sort's ties).
    let pts = Tensor::stack(&[xs.repeat_interleave_self_int(n, 0, None), (&xs + h / 2.0).repeat([n])], 1);
    let area = h * h;
    tch::no_grad(|| model.log_prob(&pts).value.exp().sum(Kind::Double).double_value(&[]) * area)
}
