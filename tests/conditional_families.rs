//! Conditional DDPM, score, DiffFlow and CNF models with classifier-free guidance, the conditional VAE and SurVAE flow,
//! trained through the library on 2D data whose class decides the mode, and a class-conditional Glow on small
//! images whose class decides which half is bright: samples land at their class, the conditional likelihood beats
//! the unconditional twin's by about the entropy of the class (ln 2), guidance weight 0 samples exactly the
//! conditional model, and w > 0 changes the samples. A conditional SNF on the tilted double well estimates the
//! normaliser Z(c) of each tilt.
use relaxflow::cnf::CnfParams;
use relaxflow::diffflow::DiffFlowParams;
use relaxflow::diffusion::{Ddpm, DdpmParams};
use relaxflow::model::{Kind as LikKind, Model, ModelParams};
use relaxflow::nets::guidance::{self, with_context, Mode};
use relaxflow::multiscale::MultiscaleParams;
use relaxflow::score::ScoreParams;
use relaxflow::snf::{Snf, SnfParams};
use relaxflow::survae::model::SurvaeParams;
use relaxflow::vae::VaeParams;
use relaxflow::{Context, ContextSpec};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

const CLASSES: ContextSpec = ContextSpec::Class { classes: 2 };

/// x = (±1.5, 0) + 0.3 ε with the sign set by the class c ∈ {0, 1}; H(c) = ln 2.
fn two_class(n: i64) -> (Tensor, Context) {
    let c = Tensor::randint(2, [n], (Kind::Int64, Device::Cpu));
    let mean = Tensor::stack(&[(c.to_kind(Kind::Float) * 3.0 - 1.5), Tensor::zeros([n], (Kind::Float, Device::Cpu))], 1);
    (mean + Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * 0.3, Context::Class(c))
}

/// Adam on the model's loss, with the batch's classes when `conditional`.
fn train(model: &dyn Model, vs: &nn::VarStore, steps: i64, lr: f64, conditional: bool) {
    let mut opt = nn::Adam::default().build(vs, lr).unwrap();
    model.set_training(true);
    for step in 0..steps {
        let (x, c) = two_class(256);
        let c = if conditional { c } else { Context::None };
        if step == 0 {
            model.data_init_given(&x, &c);
        }
        opt.zero_grad();
        let loss = model.loss_backward_given(&x, &c, step);
        assert!(loss.double_value(&[]).is_finite(), "step {step}: loss not finite");
        opt.step();
    }
    model.set_training(false);
}

/// The share of `x` on the side of the plane x0 = 0 that `class` puts the mode on.
fn at_class(x: &Tensor, class: i64) -> f64 {
    let side = if class == 1 { x.select(1, 0).gt(0.0) } else { x.select(1, 0).lt(0.0) };
    side.to_kind(Kind::Float).mean(None).double_value(&[])
}

fn classes(k: i64, n: i64) -> Context {
    Context::Class(Tensor::full([n], k, (Kind::Int64, Device::Cpu)))
}

fn ddpm_params() -> DdpmParams {
    toml::from_str("timesteps = 100\n[net]\nhidden = [64, 64]\nemb_dim = 16").unwrap()
}

#[test]
fn a_class_conditional_ddpm_puts_samples_at_their_class_and_beats_its_unconditional_twin() {
    tch::manual_seed(0);
    let p = ddpm_params();
    let vs = nn::VarStore::new(Device::Cpu);
    let cond = p.build_conditional(&vs.root(), &[2], &CLASSES).unwrap();
    assert_eq!(cond.context_spec(), Some(CLASSES));
    train(&*cond, &vs, 1500, 3e-3, true);
    let vs_u = nn::VarStore::new(Device::Cpu);
    let uncond = p.build(&vs_u.root(), &[2]).unwrap();
    assert_eq!(uncond.context_spec(), None);
    train(&*uncond, &vs_u, 1500, 3e-3, false);

    for k in 0..2 {
        let x = tch::no_grad(|| cond.sample_given(500, &classes(k, 500)));
        assert_eq!(x.size(), [500, 2]);
        let share = at_class(&x, k);
        assert!(share > 0.95, "class {k}: {share} of the samples at their class's mode");
    }
    let x = tch::no_grad(|| uncond.sample(1000));
    let share = at_class(&x, 1);
    assert!((0.3..0.7).contains(&share), "the unconditional twin draws both modes: {share} at x0 > 0");

    // Both are variational bounds (NLL upper bounds); p(x | c) has ln 2 less entropy than p(x).
    let (x, c) = two_class(4000);
    let lc = tch::no_grad(|| cond.log_prob_given(&x, &c));
    let lu = tch::no_grad(|| uncond.log_prob(&x));
    assert_eq!((lc.kind, lu.kind), (LikKind::LowerBound, LikKind::LowerBound));
    let (nc, nu) = (-lc.value.mean(Kind::Double).double_value(&[]), -lu.value.mean(Kind::Double).double_value(&[]));
    let exact = 2.0 * (0.3f64.ln() + 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln());
    assert!(nc > exact - 0.05, "the conditional bound {nc} cannot be below the exact conditional entropy {exact}");
    assert!(nu - nc > 0.3, "conditional NLL bound {nc} vs unconditional {nu}: the class carries ln 2 = 0.69 nats");
}

#[test]
fn guidance_weight_zero_samples_the_conditional_model_and_a_positive_weight_changes_the_samples() {
    tch::manual_seed(1);
    let p = ddpm_params();
    let vs = nn::VarStore::new(Device::Cpu);
    let cond = guidance::Conditioning { context_embed: Some(8), p_uncond: 0.2, guidance_weight: 0.0 };
    let net = guidance::time_net(&vs.root().sub("net"), &[2], &p.net, &CLASSES, &cond).unwrap();
    let model = Ddpm::new(net, p, vec![2], false, Device::Cpu);
    train(&model, &vs, 600, 3e-3, true);
    let c = classes(1, 300);
    let draw = |seed: i64, f: &dyn Fn() -> Tensor| {
        tch::manual_seed(seed);
        tch::no_grad(f)
    };
    let guided0 = draw(5, &|| model.sample_given(300, &c));
    let conditional = draw(5, &|| with_context(&[&*model.net], &c, Mode::Conditional, || model.sample(300)));
    assert!(guided0.equal(&conditional), "w = 0 draws exactly the conditional model's samples");
    let g = model.net.guided().expect("a guided network");
    g.set_weight(3.0).unwrap();
    let guided3 = draw(5, &|| model.sample_given(300, &c));
    let moved = (&guided3 - &conditional).abs().max().double_value(&[]);
    assert!(moved > 1e-3, "w = 3 changes the samples (max change {moved})");
    assert!(at_class(&guided3, 1) > 0.95, "guided samples stay at their class");
    // The likelihood is the conditional model's whatever w is set for sampling.
    let (x, cx) = two_class(200);
    tch::manual_seed(9);
    let l3 = tch::no_grad(|| model.log_prob_given(&x, &cx)).value;
    g.set_weight(0.0).unwrap();
    tch::manual_seed(9);
    let l0 = tch::no_grad(|| model.log_prob_given(&x, &cx)).value;
    assert!(l3.equal(&l0), "log_prob_given ignores the guidance weight");
}

#[test]
fn a_class_conditional_score_model_samples_at_its_class_with_an_exact_ode_likelihood() {
    tch::manual_seed(2);
    let p: ScoreParams = toml::from_str("sampler = \"em\"\nsample_steps = 200\n[net]\nhidden = [64, 64]\nemb_dim = 16\n[ode]\nrtol = 1e-3").unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = p.build_conditional(&vs.root(), &[2], &CLASSES).unwrap();
    train(&*model, &vs, 1500, 3e-3, true);
    for k in 0..2 {
        let share = at_class(&tch::no_grad(|| model.sample_given(400, &classes(k, 400))), k);
        assert!(share > 0.95, "class {k}: {share} of the score model's samples at their class");
    }
    let (x, c) = two_class(300);
    let lp = model.log_prob_given(&x, &c);
    assert_eq!(lp.kind, LikKind::Exact, "2D: the exact divergence");
    // The density at each point's own class beats the density at the other class.
    let other = match &c {
        Context::Class(k) => Context::Class(1 - k),
        _ => unreachable!(),
    };
    let (own, swapped) = (lp.value.mean(Kind::Double).double_value(&[]), model.log_prob_given(&x, &other).value.mean(Kind::Double).double_value(&[]));
    assert!(own.is_finite() && own > swapped + 5.0, "log p(x | own class) {own} vs at the other class {swapped}");
}

/// The CNF's conditional velocity v(z, t, c): its exact ODE likelihood at the right class beats the unconditional
/// twin's by about H(c) = ln 2, with adjoint gradients (one context binding for both solves), and samples move with c.
#[test]
fn a_class_conditional_cnf_beats_its_unconditional_twin_by_the_class_entropy() {
    let text = "gradient = \"adjoint\"\ntrain_rtol = 1e-3\nkinetic = 0.0\njacobian = 0.0\n[net]\nhidden = [32, 32]\n[ode]\nrtol = 1e-4";
    let p: CnfParams = toml::from_str(text).unwrap();
    let mut nll = Vec::new();
    for conditional in [true, false] {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = if conditional { p.build_conditional(&vs.root(), &[2], &CLASSES).unwrap() } else { p.build(&vs.root(), &[2]).unwrap() };
        model.bind_parameters(&vs.trainable_variables());
        assert_eq!(model.context_spec(), conditional.then_some(CLASSES));
        train(&*model, &vs, 300, 1e-2, conditional);
        tch::manual_seed(5);
        let (x, c) = two_class(1000);
        let lp = tch::no_grad(|| model.log_prob_given(&x, if conditional { &c } else { &Context::None }));
        assert_eq!(lp.kind, LikKind::Exact);
        nll.push(-lp.value.mean(Kind::Double).double_value(&[]));
        if conditional {
            for k in 0..2 {
                let share = at_class(&tch::no_grad(|| model.sample_given(400, &classes(k, 400))), k);
                assert!(share > 0.9, "class {k}: {share} of the CNF's samples at their class");
            }
        }
    }
    let gain = nll[1] - nll[0];
    eprintln!("CNF: conditional NLL {:.4}, unconditional {:.4} (exact)", nll[0], nll[1]);
    assert!((gain - std::f64::consts::LN_2).abs() < 0.25, "conditional NLL {} vs unconditional {}: gain {gain}, H(c) = ln 2", nll[0], nll[1]);
    // Guidance without a trained null context is refused by name.
    let bad: CnfParams = toml::from_str("guidance_weight = 1.0").unwrap();
    let err = bad.build_conditional(&nn::VarStore::new(Device::Cpu).root(), &[2], &CLASSES).err().unwrap().to_string();
    assert!(err.contains("p_uncond"), "{err}");
}

#[test]
fn a_class_conditional_diffflow_trains_and_its_samples_move_with_the_class() {
    tch::manual_seed(3);
    let p: DiffFlowParams = toml::from_str("steps = 10\ng = 0.2\nt_end = 0.05\n[net]\narch = \"fourier\"\nhidden = [64, 64]\n[ode]\nrtol = 1e-3").unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = p.build_conditional(&vs.root(), &[2], &CLASSES).unwrap();
    assert_eq!(model.context_spec(), Some(CLASSES));
    train(&*model, &vs, 400, 5e-3, true);
    let mean_x0 = |k: i64| tch::no_grad(|| model.sample_given(500, &classes(k, 500))).select(1, 0).mean(Kind::Double).double_value(&[]);
    let (m0, m1) = (mean_x0(0), mean_x0(1));
    assert!(m1 - m0 > 1.5, "sample means of x0 at class 0 ({m0}) and class 1 ({m1}); the modes are 3 apart");
    let (x, c) = two_class(200);
    let lp = model.log_prob_given(&x, &c);
    assert!(lp.value.isfinite().all().int64_value(&[]) == 1 && lp.kind == LikKind::Exact);
}

#[test]
fn a_conditional_vae_samples_at_its_class_and_its_estimate_beats_the_unconditional_twin() {
    tch::manual_seed(4);
    let p: VaeParams = toml::from_str("hidden = [64, 64]\nlatent = 2\nactivation = \"relu\"\nlikelihood = \"gaussian\"\neval_k = 200").unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let cond = p.build_conditional(&vs.root(), &[2], &CLASSES).unwrap();
    assert_eq!(cond.context_spec(), Some(CLASSES));
    train(&*cond, &vs, 2000, 3e-3, true);
    let vs_u = nn::VarStore::new(Device::Cpu);
    let uncond = p.build(&vs_u.root(), &[2]).unwrap();
    train(&*uncond, &vs_u, 2000, 3e-3, false);
    for k in 0..2 {
        let share = at_class(&tch::no_grad(|| cond.sample_given(500, &classes(k, 500))), k);
        assert!(share > 0.95, "class {k}: {share} of the conditional VAE's samples at their class");
    }
    let (x, c) = two_class(2000);
    let lc = tch::no_grad(|| cond.log_prob_given(&x, &c));
    let lu = tch::no_grad(|| uncond.log_prob(&x));
    assert_eq!(lc.kind, LikKind::Estimate, "importance sampling: an estimate");
    let (nc, nu) = (-lc.value.mean(Kind::Double).double_value(&[]), -lu.value.mean(Kind::Double).double_value(&[]));
    assert!(nu - nc > 0.3, "conditional NLL estimate {nc} vs unconditional {nu}: the class carries ln 2 = 0.69 nats");
    let exact = 2.0 * (0.3f64.ln() + 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln());
    assert!(nc > exact - 0.05, "the estimate {nc} errs high, never far below the exact conditional entropy {exact}");
    eprintln!("conditional VAE: NLL estimate {nc:.3} (exact conditional entropy {exact:.3}), unconditional twin {nu:.3}");
    // The ELBO (k = 1) stays below the k = 200 estimate on average, for p(x | c) too.
    let elbo = -cond.loss_given(&x, &c, 10_000).double_value(&[]);
    assert!(elbo < -nc + 0.02, "ELBO {elbo} vs IWAE(200) {}", -nc);
}

#[test]
fn a_conditional_augmented_survae_flow_is_a_bound_that_tightens_with_k_and_samples_at_its_class() {
    tch::manual_seed(5);
    let p: SurvaeParams = toml::from_str("surjection = \"augment\"\naugment = 2\nn_layers = 6\nhidden = [64, 64]\neval_k = 50").unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let cond = p.build_conditional(&vs.root(), &[2], &CLASSES).unwrap();
    train(&*cond, &vs, 1500, 2e-3, true);
    let vs_u = nn::VarStore::new(Device::Cpu);
    let uncond = p.build(&vs_u.root(), &[2]).unwrap();
    train(&*uncond, &vs_u, 1500, 2e-3, false);
    for k in 0..2 {
        let share = at_class(&tch::no_grad(|| cond.sample_given(500, &classes(k, 500))), k);
        assert!(share > 0.95, "class {k}: {share} of the conditional SurVAE flow's samples at their class");
    }
    let (x, c) = two_class(2000);
    let lc = tch::no_grad(|| cond.log_prob_given(&x, &c));
    assert_eq!(lc.kind, LikKind::LowerBound, "augmentation makes it a bound");
    let iwbo = -lc.value.mean(Kind::Double).double_value(&[]);
    let single = tch::no_grad(|| cond.loss_given(&x, &c, 0)).double_value(&[]);
    assert!(iwbo < single, "IWBO(50) NLL {iwbo} is tighter than the one-sample bound {single}");
    let nu = -tch::no_grad(|| uncond.log_prob(&x)).value.mean(Kind::Double).double_value(&[]);
    assert!(nu - iwbo > 0.3, "conditional NLL bound {iwbo} vs unconditional {nu}: the class carries ln 2 = 0.69 nats");
    let folded: SurvaeParams = toml::from_str("surjection = \"abs\"").unwrap();
    let err = folded.build_conditional(&vs.root().sub("abs"), &[2], &CLASSES).err().expect("abs has no conditional form").to_string();
    assert!(err.contains("Abs") && err.contains("permute or augment"), "{err}");
}

/// [n, 1, 4, 4] images in (0, 1): class 1 has a bright top half, class 0 a bright bottom half.
fn half_images(n: i64) -> (Tensor, Context) {
    let c = Tensor::randint(2, [n], (Kind::Int64, Device::Cpu));
    let top = c.to_kind(Kind::Float).view([n, 1, 1, 1]).expand([n, 1, 2, 4], false);
    let mean = Tensor::cat(&[&top * 0.6 + 0.2, (-&top + 1.0) * 0.6 + 0.2], 2);
    let x = (mean + Tensor::randn([n, 1, 4, 4], (Kind::Float, Device::Cpu)) * 0.05).clamp(0.01, 0.99);
    (x, Context::Class(c))
}

#[test]
fn a_class_conditional_glow_beats_its_unconditional_twin_on_images_whose_class_sets_the_bright_half() {
    tch::manual_seed(6);
    let p: MultiscaleParams = toml::from_str("levels = 1\nsteps = 3\nhidden_channels = 16\ncontext_embed = 4").unwrap();
    let fit = |conditional: bool| {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = if conditional { p.build_conditional(&vs.root(), &[1, 4, 4], &CLASSES).unwrap() } else { p.build(&vs.root(), &[1, 4, 4]).unwrap() };
        let ctx = |c: Context| if conditional { c } else { Context::None };
        let (x0, c0) = half_images(256);
        model.data_init_given(&x0, &ctx(c0));
        let mut opt = nn::Adam::default().build(&vs, 2e-3).unwrap();
        for step in 0..600 {
            let (x, c) = half_images(128);
            opt.zero_grad();
            let _ = model.loss_backward_given(&x, &ctx(c), step);
            opt.step();
        }
        (vs, model)
    };
    let (_vs, cond) = fit(true);
    let (_vs_u, uncond) = fit(false);
    let (x, c) = half_images(2000);
    let lc = tch::no_grad(|| cond.log_prob_given(&x, &c));
    assert_eq!(lc.kind, LikKind::Exact);
    let nc = -lc.value.mean(Kind::Double).double_value(&[]);
    let nu = -tch::no_grad(|| uncond.log_prob(&x)).value.mean(Kind::Double).double_value(&[]);
    assert!(nu - nc > 0.3, "conditional exact NLL {nc} vs unconditional {nu}: the class carries ln 2 = 0.69 nats");
    for k in 0..2 {
        let s = tch::no_grad(|| cond.sample_given(200, &classes(k, 200)));
        assert_eq!(s.size(), [200, 1, 4, 4]);
        let brighter_top = (s.narrow(2, 0, 2).mean_dim(&[1i64, 2, 3][..], false, None) - s.narrow(2, 2, 2).mean_dim(&[1i64, 2, 3][..], false, None)).gt(0.0);
        let share = brighter_top.to_kind(Kind::Float).mean(None).double_value(&[]);
        let want = if k == 1 { share } else { 1.0 - share };
        assert!(want > 0.95, "class {k}: {want} of the samples have the class's bright half");
    }
}

#[test]
fn a_conditional_snf_on_the_tilted_double_well_estimates_log_z_of_every_tilt() {
    tch::manual_seed(7);
    let cfg: relaxflow::data::DataConfig = toml::from_str("name = \"doublewell-tilted\"\nn_train = 20000\nn_test = 2000").unwrap();
    let data = relaxflow::data::load(&cfg, std::path::Path::new(".")).unwrap();
    let ctx = data.context.as_ref().expect("doublewell-tilted carries its tilts");
    assert_eq!(ctx.spec, ContextSpec::Vector { width: 1 });
    let p: SnfParams = toml::from_str("target = \"doublewell\"\nn_blocks = 3\nhidden = [64, 64]\nstochastic = \"mh\"\nmc_steps = 20\nkl_weight = 0.5\nkl_start = 300").unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let snf = Snf::new_given(&vs.root(), 2, &p, Some(&ctx.spec)).unwrap();
    let batch = |n: i64| {
        let idx = Tensor::randint(data.train.size()[0], [n], (Kind::Int64, Device::Cpu));
        (data.train.index_select(0, &idx), ctx.train.rows(&idx, Device::Cpu))
    };
    let (x0, c0) = batch(2000);
    snf.data_init_given(&x0, &c0);
    let mut opt = nn::Adam::default().build(&vs, 5e-3).unwrap();
    for step in 0..600 {
        let (x, c) = batch(128);
        opt.zero_grad();
        let _ = snf.loss_backward_given(&x, &c, step);
        opt.step();
    }
    let d = snf.diagnostics(4000, 2).unwrap();
    for t in d["per_tilt"].as_array().unwrap() {
        let (est, exact) = (t["log_z_estimate"]["mean"].as_f64().unwrap(), t["exact"]["log_z"].as_f64().unwrap());
        assert!((est - exact).abs() < 0.1, "c = {}: log Z estimate {est} vs exact {exact}", t["c"]);
        let (mode, mode_exact) = (t["mode_weight_reweighted"]["mean"].as_f64().unwrap(), t["exact"]["mode_weight_x1_lt_0"].as_f64().unwrap());
        assert!((mode - mode_exact).abs() < 0.05, "c = {}: reweighted P(x1 < 0) {mode} vs exact {mode_exact}", t["c"]);
    }
    // The model follows the tilt: samples at c = -1 sit mostly in the left well, at c = 2 in the right one.
    let at = |c: f64| {
        let s = tch::no_grad(|| snf.sample_given(2000, &Context::Vector(Tensor::full([2000, 1], c, (Kind::Float, Device::Cpu)))));
        s.select(1, 0).lt(0.0).to_kind(Kind::Float).mean(None).double_value(&[])
    };
    let (left, right) = (at(-1.0), at(2.0));
    assert!(left > 0.8 && right < 0.1, "P(x1 < 0): {left} at c = -1, {right} at c = 2");
    let lp = snf.log_prob_given(&data.test, &ctx.test);
    assert_eq!(lp.kind, LikKind::LowerBound, "stochastic layers: a bound");
    let nll = -lp.value.mean(Kind::Double).double_value(&[]);
    let h = data.true_entropy.unwrap();
    assert!(nll > h - 0.05, "the bound {nll} stays above H(x | c) = {h}");
    // Only the double well takes a parameter; it reads exactly one context column.
    let gmm = SnfParams { target: "gmm".into(), ..p.clone() };
    let err = Snf::new_given(&vs.root().sub("g"), 2, &gmm, Some(&ctx.spec)).err().unwrap().to_string();
    assert!(err.contains("takes no parameter") && err.contains("doublewell-tilted"), "{err}");
    let err = Snf::new_given(&vs.root().sub("w"), 2, &p, Some(&ContextSpec::Vector { width: 2 })).err().unwrap().to_string();
    assert!(err.contains("one context column"), "{err}");
}
