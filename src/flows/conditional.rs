//! Conditional flows p(x | c): layers whose conditioners read [x_a, h(c)] and a base that may depend on h(c).
//!
//! log p(x | c) = log p_Z(f(x; h) | h) + log|det ∂f(x; h)/∂x|, h = h(c) (the change of variables for every fixed c,
//! as in zuko's `flow(c)` and nflows' `context`): exact, normalised over x for each c.
use crate::context::{Context, ContextSpec};
use crate::layer::LayerModel;
use crate::model::{Family, LogProb, Model, SamplingCost};
use crate::nets::embed::ContextEncoder;
use tch::Tensor;

#[derive(Debug)]
pub struct ConditionalFlow {
    /// Layers built with the encoder's width as their context width, and the base.
    pub flow: LayerModel,
    pub encoder: ContextEncoder,
    /// Importance samples of the test likelihood when a layer makes it a bound (unused when exact).
    pub eval_k: i64,
}

/// Rows per pass of IWBO(k).
const ROWS: i64 = 200_000;

impl ConditionalFlow {
    /// z = f(x; h(c)) and its log|det|.
    pub fn forward(&self, x: &Tensor, c: &Context) -> (Tensor, Tensor, Tensor) {
        let h = self.encoder.forward(c);
        let (z, v) = self.flow.forward_given(x, &h);
        (z, v, h)
    }

    /// log p_Z(z | h) + V for one pass: log p(x | c) when every layer is exact, else a one-sample bound.
    fn single_pass(&self, x: &Tensor, c: &Context) -> Tensor {
        let (z, v, h) = self.forward(x, c);
        self.flow.base.log_prob_given(&z, &h) + v
    }

    fn needs_context(&self) -> ! {
        panic!("a conditional flow needs its context ({}): call the *_given methods", self.encoder.spec.describe())
    }
}

impl Model for ConditionalFlow {
    fn loss(&self, _x: &Tensor, _step: i64) -> Tensor {
        self.needs_context()
    }
    fn log_prob(&self, _x: &Tensor) -> LogProb {
        self.needs_context()
    }
    fn sample(&self, _n: i64) -> Tensor {
        self.needs_context()
    }

    /// Maximum likelihood of p(x | c): the mean of -log p(x_i | c_i) over the batch (of its one-sample bound for a
    /// surjective model).
    fn loss_given(&self, x: &Tensor, c: &Context, _step: i64) -> Tensor {
        -self.single_pass(x, c).mean(None)
    }

    /// Exact: log p(x | c). A bound: IWBO(eval_k) of log p(x | c).
    fn log_prob_given(&self, x: &Tensor, c: &Context) -> LogProb {
        match self.flow.kind() {
            crate::model::Kind::Exact => LogProb { value: self.single_pass(x, c), kind: crate::model::Kind::Exact },
            kind => {
                let h = self.encoder.forward(c);
                LogProb { value: self.flow.iwbo_given(x, Some(&h), self.eval_k, ROWS), kind }
            }
        }
    }

    fn sample_given(&self, _n: i64, c: &Context) -> Tensor {
        tch::no_grad(|| {
            let h = self.encoder.forward(c);
            let z = self.flow.base.sample_given(&h, 1.0);
            self.flow.inverse_given(&z, &h).0
        })
    }

    fn context_spec(&self) -> Option<ContextSpec> {
        Some(self.encoder.spec)
    }

    fn data_init_given(&self, x: &Tensor, c: &Context) {
        self.encoder.data_init(c);
        tch::no_grad(|| {
            let h = self.encoder.forward(c);
            let mut z = x.shallow_clone();
            for layer in &self.flow.layers {
                z = layer.data_init_given(&z, &h);
            }
        })
    }

    fn sampling_cost(&self) -> SamplingCost {
        self.flow.sampling_cost()
    }

    fn family(&self) -> Family {
        self.flow.family
    }

    fn estimator(&self) -> serde_json::Value {
        self.flow.estimator()
    }

    fn set_training(&self, on: bool) {
        self.flow.set_training(on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::build::{MafParams, NsfParams, RealNvpParams};
    use crate::flows::made::{ArTransform, Autoregressive, MaskedAutoregressive};
    use crate::flows::testing::autograd_log_abs_det;
    use crate::flows::image_coupling::{ImageCoupling, ImageTransform, Mask};
    use crate::flows::{Conditioner, Coupling, ScaleBound, Transformer};
    use crate::layer::Layer;
    use crate::model::ModelParams;
    use crate::nets::Activation;
    use tch::nn::{self, OptimizerConfig};
    use tch::{Device, Kind};

    /// For a fixed context: inverse_given(forward_given(x, h), h) = x, the inverse's contribution is -V, V is the
    /// log|det| of the autograd Jacobian in x, and the output really depends on h (the context is read).
    fn check_conditional(shape: &[i64], e: i64, make: impl Fn(&nn::Path) -> Box<dyn Layer>) {
        tch::manual_seed(11);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let layer = make(&vs.root());
        tch::no_grad(|| {
            for mut p in vs.trainable_variables() {
                let _ = p.g_add_(&(p.randn_like() * 0.3));
            }
        });
        vs.double();
        let mut full = vec![8i64];
        full.extend(shape);
        let x = Tensor::randn(full.as_slice(), (Kind::Double, Device::Cpu));
        let h = Tensor::randn([8, e], (Kind::Double, Device::Cpu));
        let (z, v) = layer.forward_given(&x, &h);
        let (x_back, v_inv) = layer.inverse_given(&z, &h);
        assert!((&x_back - &x).abs().max().double_value(&[]) < 1e-9, "{layer:?}: inverse(forward(x))");
        assert!((&v_inv + &v).abs().max().double_value(&[]) < 1e-9, "{layer:?}: inverse contribution");
        // The Jacobian in x at fixed h: wrap the layer so that forward reads h.
        #[derive(Debug)]
        struct AtContext<'a>(&'a dyn Layer, Tensor);
        impl Layer for AtContext<'_> {
            fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
                self.0.forward_given(x, &self.1)
            }
            fn inverse(&self, z: &Tensor) -> (Tensor, Tensor) {
                self.0.inverse_given(z, &self.1)
            }
            fn kind(&self) -> crate::layer::LayerKind {
                self.0.kind()
            }
        }
        let log_det = autograd_log_abs_det(&AtContext(&*layer, h.shallow_clone()), &x);
        assert!((&log_det - &v).abs().max().double_value(&[]) < 1e-8, "{layer:?}: V vs autograd log|det|");
        let (z2, _) = layer.forward_given(&x, &(&h + 1.0));
        assert!((&z2 - &z).abs().max().double_value(&[]) > 1e-3, "{layer:?}: the output ignores the context");
        let h = h.set_requires_grad(true);
        let (z, v) = layer.forward_given(&x, &h);
        (z.square().sum(Kind::Double) + v.sum(Kind::Double)).backward();
        assert!(h.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0, "{layer:?}: no gradient reaches h(c)");
    }

    #[test]
    fn conditional_couplings_and_made_layers_are_bijections_in_x_for_every_context() {
        for t in [Transformer::Affine(ScaleBound::Tanh), Transformer::Spline { bins: 5, bound: 2.0 }, Transformer::Additive] {
            for parity in [false, true] {
                check_conditional(&[3], 4, |p| Box::new(Coupling::conditional(p, 3, &[16], Activation::Tanh, t, parity, Conditioner::Shared, 4).unwrap()));
            }
        }
        for kind in [Autoregressive::Maf, Autoregressive::Iaf] {
            for t in [ArTransform::Affine, ArTransform::Spline { bins: 4, bound: 1.5 }] {
                check_conditional(&[4], 3, |p| Box::new(MaskedAutoregressive::conditional(p, 4, &[16, 16], Activation::Tanh, kind, t, 3).unwrap()));
            }
        }
        // Image couplings read h(c) as constant channels beside b ⊙ x.
        let affine = ImageTransform::Affine(ScaleBound::Sigmoid);
        for (shape, mask, t) in [([2i64, 4, 4], Mask::Checkerboard { parity: true }, affine), ([4, 2, 2], Mask::Channel { parity: false }, ImageTransform::Additive)] {
            check_conditional(&shape, 3, |p| Box::new(ImageCoupling::conditional(p, &shape, mask, t, 8, 1, 3).unwrap()));
        }
    }

    #[test]
    fn an_unconditional_coupling_is_unchanged_by_the_context_plumbing() {
        // Same seed, same init: Coupling::new and Coupling::conditional(.., 0) are the same map, and forward_given
        // of an unconditional layer ignores h.
        let make = |context| {
            tch::manual_seed(2);
            let vs = nn::VarStore::new(Device::Cpu);
            let c = Coupling::conditional(&vs.root(), 3, &[8], Activation::Relu, Transformer::Spline { bins: 4, bound: 3.0 }, false, Conditioner::Shared, context).unwrap();
            tch::no_grad(|| {
                for v in vs.trainable_variables() {
                    let _ = v.shallow_clone().g_add_(&(v.ones_like() * 0.1));
                }
            });
            (vs, c)
        };
        let (_a, a) = make(0);
        let x = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        let (za, va) = a.forward(&x);
        let (zb, vb) = a.forward_given(&x, &Tensor::randn([5, 7], (Kind::Float, Device::Cpu)));
        assert!(za.equal(&zb) && va.equal(&vb));
    }

    fn perturbed(vs: &nn::VarStore, scale: f64) {
        tch::no_grad(|| {
            for v in vs.trainable_variables() {
                let _ = v.shallow_clone().g_add_(&(v.randn_like() * scale));
            }
        });
    }

    #[test]
    fn conditional_densities_integrate_to_one_for_each_context() {
        // Trapezoid-free Riemann sum on a fine grid: ∫ q(x | c) dx = 1 for every c, for coupling and autoregressive
        // flows, with the conditional Gaussian base and a class embedding.
        let specs = [ContextSpec::Vector { width: 3 }, ContextSpec::Class { classes: 4 }];
        let nsf: NsfParams = toml::from_str("n_layers = 3\nhidden = [16]\nbins = 6\nbound = 3.0\nmixing = \"lu\"\n[base]\nkind = \"conditional_normal\"").unwrap();
        let maf: MafParams = toml::from_str("n_layers = 2\nhidden = [16]\n").unwrap();
        let rnvp: RealNvpParams = toml::from_str("n_layers = 4\nhidden = [16]\n").unwrap();
        let builders: [&dyn Fn(&nn::Path, &ContextSpec) -> Box<dyn Model>; 3] = [
            &|p, s| nsf.build_conditional(p, &[2], s).unwrap(),
            &|p, s| maf.build_conditional(p, &[2], s).unwrap(),
            &|p, s| rnvp.build_conditional(p, &[2], s).unwrap(),
        ];
        let g = Tensor::linspace(-10.0, 10.0, 501, (Kind::Float, Device::Cpu));
        let cell = (20.0f64 / 500.0).powi(2);
        let grid = Tensor::stack(&[g.repeat_interleave_self_int(501, 0, None), g.repeat([501])], 1);
        for spec in specs {
            for (i, build) in builders.iter().enumerate() {
                tch::manual_seed(5);
                let vs = nn::VarStore::new(Device::Cpu);
                let model = build(&vs.root(), &spec);
                // Far enough from the identity to test, near enough that the mass stays inside the grid.
                perturbed(&vs, if i == 2 { 0.05 } else { 0.1 });
                let contexts = match spec {
                    ContextSpec::Vector { .. } => Context::Vector(Tensor::randn([2, 3], (Kind::Float, Device::Cpu))),
                    ContextSpec::Class { .. } => Context::Class(Tensor::from_slice(&[0i64, 3])),
                };
                let mut masses = Vec::new();
                for j in 0..2 {
                    let c = contexts.narrow(j, 1, Device::Cpu).cycled(grid.size()[0]);
                    let lp = tch::no_grad(|| model.log_prob_given(&grid, &c).value);
                    masses.push(lp.exp().sum(Kind::Double).double_value(&[]) * cell);
                }
                for m in &masses {
                    assert!((m - 1.0).abs() < 0.01, "builder {i}, {spec:?}: mass {m}");
                }
                // Different contexts give different densities.
                let at = |j| tch::no_grad(|| model.log_prob_given(&grid.narrow(0, 0, 500), &contexts.narrow(j, 1, Device::Cpu).cycled(500)).value);
                assert!((at(0) - at(1)).abs().max().double_value(&[]) > 1e-3, "builder {i}: the density ignores c");
            }
        }
    }

    /// q(θ | x) on 2-D Gaussian linear data (θ ~ N(0, 0.1 I), x = θ + N(0, 0.1 I)): the exact posterior
    /// N(x/2, 0.05 I) has conditional entropy ln(2πe · 0.05); a trained conditional flow's test NLL approaches it
    /// from above (up to the test mean's noise), and its unconditional twin cannot beat H(θ) = ln(2πe · 0.1).
    #[test]
    fn a_trained_conditional_flow_reaches_the_analytic_conditional_entropy_and_beats_its_unconditional_twin() {
        tch::manual_seed(0);
        let draw = |n| {
            let theta = Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * 0.1f64.sqrt();
            let x = &theta + Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * 0.1f64.sqrt();
            (theta, x)
        };
        let (theta, x) = draw(20_000);
        let (theta_t, x_t) = draw(20_000);
        let p: NsfParams = toml::from_str("n_layers = 2\nhidden = [32, 32]\nbins = 8\nbound = 4.0\nactnorm = true\n[base]\nkind = \"conditional_normal\"").unwrap();
        let spec = ContextSpec::Vector { width: 2 };
        let train = |conditional: bool| {
            tch::manual_seed(1);
            let vs = nn::VarStore::new(Device::Cpu);
            let unconditional = NsfParams { base: Default::default(), ..p.clone() };
            let model: Box<dyn Model> = if conditional { p.build_conditional(&vs.root(), &[2], &spec).unwrap() } else { unconditional.build(&vs.root(), &[2]).unwrap() };
            let ctx = |c: &Tensor| if conditional { Context::Vector(c.shallow_clone()) } else { Context::None };
            model.data_init_given(&theta.narrow(0, 0, 4096), &ctx(&x.narrow(0, 0, 4096)));
            let mut opt = nn::Adam::default().build(&vs, 3e-3).unwrap();
            for step in 0..1500 {
                if step == 1000 {
                    opt.set_lr(5e-4);
                }
                let idx = Tensor::randint(20_000, [256], (Kind::Int64, Device::Cpu));
                let loss = model.loss_given(&theta.index_select(0, &idx), &ctx(&x.index_select(0, &idx)), step);
                opt.backward_step(&loss);
            }
            let lp = tch::no_grad(|| model.log_prob_given(&theta_t, &ctx(&x_t)).value);
            (-lp.mean(None).double_value(&[]), lp.std(true).double_value(&[]) / (20_000f64).sqrt())
        };
        let two_pi_e = 2.0 * std::f64::consts::PI * std::f64::consts::E;
        let (h_cond, h_marg) = ((two_pi_e * 0.05).ln(), (two_pi_e * 0.1).ln());
        let (nll, se) = train(true);
        assert!(nll > h_cond - 4.0 * se, "NLL {nll} below the conditional entropy {h_cond} by more than the noise ({se})");
        assert!(nll < h_cond + 0.05, "NLL {nll} should approach H(θ|x) = {h_cond}");
        let (nll_u, se_u) = train(false);
        assert!(nll_u > h_marg - 4.0 * se_u, "the unconditional NLL {nll_u} cannot beat H(θ) = {h_marg}");
        assert!(nll_u - nll > 0.6, "conditioning is worth ln 2 = 0.69 nats here: {nll_u} vs {nll}");
    }
}
