//! Shared checks for every bijective layer: invertibility, log-det against the autograd Jacobian, gradient flow.
use crate::layer::Layer;
use tch::{nn, Device, Kind, Tensor};

/// Builds a layer on a fresh VarStore, perturbs its parameters away from their (often identity) initial values,
/// switches to f64, then checks on random inputs of shape [8, dim]:
/// inverse(forward(x)) = x; the inverse's contribution is -V; V = log|det ∂z/∂x| of the autograd Jacobian;
/// a loss built from z and V sends a non-zero gradient to every trainable parameter.
pub fn check_bijection(dim: i64, make: impl Fn(&nn::Path) -> Box<dyn Layer>) {
    tch::manual_seed(7);
    let x = Tensor::randn([8, dim], (Kind::Double, Device::Cpu));
    check_bijection_at(&x, make)
}

/// The same checks on given f64 inputs of any shape [batch, ...] (images, or data in (0, 1) for a logit).
pub fn check_bijection_at(x: &Tensor, make: impl Fn(&nn::Path) -> Box<dyn Layer>) {
    tch::manual_seed(7);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let layer = make(&vs.root());
    tch::no_grad(|| {
        for mut p in vs.trainable_variables() {
            let noise = Tensor::randn_like(&p) * 0.3;
            let _ = p.g_add_(&noise);
        }
    });
    vs.double();
    let x = x.to_kind(Kind::Double);
    let batch = x.size()[0];

    let (z, v) = layer.forward(&x);
    let (x_back, v_inv) = layer.inverse(&z);
    assert_eq!(v.size(), vec![batch], "V must be per example");
    assert_eq!(z.numel(), x.numel(), "a bijection keeps the dimension");
    let err = (&x_back - &x).abs().max().double_value(&[]);
    assert!(err < 1e-9, "{layer:?}: inverse(forward(x)) differs from x by {err}");
    let err = (&v_inv + &v).abs().max().double_value(&[]);
    assert!(err < 1e-9, "{layer:?}: inverse contribution is not -V (off by {err})");

    let log_det = autograd_log_abs_det(&*layer, &x);
    let err = (&log_det - &v).abs().max().double_value(&[]);
    assert!(err < 1e-8, "{layer:?}: V differs from log|det J| of autograd by {err}: V {v:?} vs {log_det:?}");

    if vs.trainable_variables().is_empty() {
        return;
    }
    let (z, v) = layer.forward(&x);
    let loss = (z.square().sum(None) + v.sum(None)) * 0.5 + z.sum(None);
    loss.backward();
    for (name, p) in vs.variables() {
        if p.requires_grad() {
            let g = p.grad();
            assert!(g.defined(), "{layer:?}: no gradient reached {name}");
            assert!(g.abs().sum(None).double_value(&[]) > 0.0, "{layer:?}: zero gradient at {name}");
        }
    }
}

/// log|det ∂f(x)/∂x| per example, from the full Jacobian (inputs and outputs flattened) built row by row with autograd.
pub fn autograd_log_abs_det(layer: &dyn Layer, x: &Tensor) -> Tensor {
    let x = x.detach().set_requires_grad(true);
    let z = layer.forward(&x).0.flatten(1, -1);
    let d = z.size()[1];
    let rows: Vec<Tensor> = (0..d)
        .map(|j| Tensor::run_backward(&[z.select(1, j).sum(None)], &[&x], true, false).remove(0).flatten(1, -1))
        .collect();
    let jac = Tensor::stack(&rows, 1); // [batch, out j, in i]
    Tensor::linalg_slogdet(&jac).1
}
