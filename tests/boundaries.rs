//! Exact boundary inputs, where a support map, a sign, a log or a division meets its edge: every layer and model
//! gives a finite log-density and finite gradients there (issue 19). Interior behaviour is tested beside each layer.
use relaxflow::data;
use relaxflow::experiment::registry;
use relaxflow::flows::logit::Logit;
use relaxflow::flows::spline::{rational_quadratic, SplineParams};
use relaxflow::layer::Layer;
use relaxflow::survae::max::{Blocks, Max};
use relaxflow::survae::vardeq::VarDequant;
use tch::{nn, Device, Kind, Tensor};

/// Finite values and, through `f`, finite gradients with respect to the input.
fn finite_with_grad(x: &Tensor, f: impl Fn(&Tensor) -> Tensor, what: &str) {
    let x = x.detach().set_requires_grad(true);
    let y = f(&x);
    assert!(bool::try_from(y.isfinite().all()).unwrap(), "{what}: non-finite value {y:?}");
    y.sum(Kind::Double).backward();
    let g = x.grad();
    assert!(bool::try_from(g.isfinite().all()).unwrap(), "{what}: non-finite gradient");
}

fn build(model: &str, shape: &[i64]) -> (nn::VarStore, Box<dyn relaxflow::model::Model>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let table: toml::Table = model.parse().unwrap();
    let (m, _) = registry::build(&table, &vs.root(), shape, "test").unwrap();
    (vs, m)
}

#[test]
fn abs_and_sort_models_on_axes_and_ties() {
    for (model, pts) in [
        ("kind = \"survae\"\nsurjection = \"abs\"\nn_layers = 2\nhidden = [8]\nsign_hidden = [8]", [0.0f32, 0.0, 0.0, 1.5, -2.0, 0.0]),
        ("kind = \"survae\"\nsurjection = \"abs_fixed\"\nn_layers = 2\nhidden = [8]", [0.0, 0.0, 0.0, 1.5, -2.0, 0.0]),
        ("kind = \"survae\"\nsurjection = \"sort\"\nn_layers = 2\nhidden = [8]", [0.3, 0.3, 0.0, 0.0, -1.0, -1.0]),
    ] {
        let (_vs, m) = build(model, &[2]);
        finite_with_grad(&Tensor::from_slice(&pts).view([3, 2]), |x| m.log_prob(x).value, model);
    }
}

#[test]
fn logit_and_dequantization_at_pixels_0_and_255() {
    // Dequantized pixels with u exactly 0 (pixel 0 -> x = 0) and u -> 1 (pixel 255 -> x just below 1).
    let pixels = Tensor::from_slice(&[0.0f32, 255.0, 0.0, 255.0]).view([2, 2]);
    let x_low = &pixels / 256.0;
    let x_high = ((&pixels + 1.0) / 256.0).clamp_max(1.0 - 1.0 / 16_777_216.0);
    assert!(data::dequantize(&pixels).max().double_value(&[]) < 1.0, "dequantization stays below 1");
    for alpha in [0.0, 1e-6, 0.05] {
        let l = Logit::new(alpha).unwrap();
        for x in [&x_low, &x_high, &Tensor::from_slice(&[0.0f32, 1.0]).view([1, 2])] {
            finite_with_grad(x, |x| {
                let (y, v) = l.forward(x);
                y.sum_dim_intlist(1, false, None) + v
            }, &format!("logit alpha {alpha}"));
        }
    }
    // A whole image flow on images whose pixels are all 0 or all 255 (u = 0).
    let (_vs, m) = build("kind = \"glow\"\nlevels = 1\nsteps = 1\nhidden_channels = 8\nblocks = 1", &[1, 4, 4]);
    for v in [0.0, 255.0 / 256.0] {
        finite_with_grad(&Tensor::full([2, 1, 4, 4], v, (Kind::Float, Device::Cpu)), |x| m.log_prob(x).value, "glow");
    }
}

#[test]
fn variational_dequantization_at_the_extreme_pixels() {
    let vs = nn::VarStore::new(Device::Cpu);
    let vd = VarDequant::new(&vs.root(), 1, 8, 1).unwrap();
    let x = Tensor::from_slice(&[0.0f32, 255.0 / 256.0, 0.0, 255.0 / 256.0]).view([1, 1, 2, 2]);
    finite_with_grad(&x, |x| vd.forward(x).1, "vardeq forward");
    let y = Tensor::from_slice(&[0.0f32, 1.0 - 1e-7, 1.0 / 256.0, 255.0 / 256.0]).view([1, 1, 2, 2]);
    finite_with_grad(&y, |y| vd.inverse(y).1, "vardeq inverse at bin edges");
}

#[test]
fn splines_at_their_bounds_and_knots() {
    tch::manual_seed(0);
    let (bins, bound) = (5, 3.0);
    let w = Tensor::randn([1, bins], (Kind::Double, Device::Cpu));
    let h = Tensor::randn([1, bins], (Kind::Double, Device::Cpu));
    let d = Tensor::randn([1, bins - 1], (Kind::Double, Device::Cpu));
    // Equal widths put knots at -3, -1.8, -0.6, 0.6, 1.8, 3 when the widths' logits are equal.
    let w_equal = w.zeros_like();
    for widths in [&w, &w_equal] {
        let p = SplineParams { widths, heights: &h, derivatives: &d };
        let x = Tensor::from_slice(&[-bound, bound, -1.8, -0.6, 0.6, 1.8, 0.0, -bound - 1e-12, bound + 1e-12]);
        for inverse in [false, true] {
            finite_with_grad(&x, |x| {
                let n = x.size()[0];
                let pw = SplineParams { widths: &p.widths.expand([n, bins], false), heights: &p.heights.expand([n, bins], false), derivatives: &p.derivatives.expand([n, bins - 1], false) };
                let (y, ld) = rational_quadratic(x, &pw, bound, inverse);
                y + ld
            }, "spline");
        }
    }
}

#[test]
fn max_pooling_and_vector_max_with_ties() {
    let vs = nn::VarStore::new(Device::Cpu);
    let pool = Max::new(&vs.root().sub("pool"), Blocks::Pool2d, 1);
    let x = Tensor::from_slice(&[0.5f32, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0]).view([1, 1, 4, 4]);
    finite_with_grad(&x, |x| pool.forward(x).1, "max pooling with ties");
    let vmax = Max::new(&vs.root().sub("vec"), Blocks::Vector, 3);
    finite_with_grad(&Tensor::from_slice(&[1.0f32, 1.0, 1.0, 0.0, 0.0, -1.0]).view([2, 3]), |x| vmax.forward(x).1, "vector max with ties");
}
