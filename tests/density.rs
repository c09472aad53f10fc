//! A trained 2D flow's density integrates to 1 on a grid, and its samples agree with its density.
use relaxflow::plot::Bounds;
use relaxflow::runner::{pictures, session, train};
use tch::{Device, Kind, Tensor};

fn trained(experiment: &str, extra: &[&str], dir: &std::path::Path) -> session::Session {
    let mut overrides: Vec<String> = ["data.n_train=5000", "data.n_test=1000", "eval.every=0", "train.sample_every=0", "eval.n_samples=200", "eval.grid=16"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let opts = train::TrainOptions {
        experiment: Some(experiment.into()),
        overrides,
        steps: Some(400),
        device: Some("cpu".into()),
        out: Some(dir.join(experiment)),
        ..Default::default()
    };
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    let run = train::train(&opts).unwrap();
    session::open_run(&run, Device::Cpu).unwrap()
}

/// Mass on the grid, mass with x > 0.5, and the density-weighted mean of x.
fn grid_moments(s: &session::Session) -> (f64, f64, f64) {
    // Wide: an undertrained planar flow keeps a few percent of its mass beyond |x| = 8.
    grid_moments_on(s, 16.0, 800)
}

/// The same on [-half, half]² with size² points.
fn grid_moments_on(s: &session::Session, half: f64, size: usize) -> (f64, f64, f64) {
    let bounds = Bounds { xmin: -half, xmax: half, ymin: -half, ymax: half };
    let (p, area, _) = pictures::density_grid(&*s.model, bounds, size, Device::Cpu);
    let (xs, _, _) = relaxflow::plot::grid_points(bounds, size);
    let mass: f64 = p.iter().map(|&v| v as f64 * area).sum();
    let right: f64 = p.iter().zip(&xs).filter(|(_, &x)| x > 0.5).map(|(&v, _)| v as f64 * area).sum();
    let mean_x: f64 = p.iter().zip(&xs).map(|(&v, &x)| v as f64 * x as f64 * area).sum();
    (mass, right, mean_x)
}

fn check(s: &session::Session) {
    let (mass, right, mean_x) = grid_moments(s);
    assert!((mass - 1.0).abs() < 0.02, "density integrates to {mass}");
    tch::manual_seed(11);
    let x = s.model.sample(20_000);
    let frac_right = x.select(1, 0).gt(0.5).to_kind(Kind::Double).mean(None).double_value(&[]);
    let sample_mean = x.select(1, 0).to_kind(Kind::Double).mean(None).double_value(&[]);
    assert!((frac_right - right / mass).abs() < 0.02, "P(x > 0.5): samples {frac_right}, density {}", right / mass);
    assert!((sample_mean - mean_x / mass).abs() < 0.05, "E[x]: samples {sample_mean}, density {}", mean_x / mass);
    // The model learned something: its test NLL beats a standard normal's by a margin.
    let lp = s.model.log_prob(&s.data.test).value;
    let base = Tensor::from(-2.0 * 0.5 * (2.0 * std::f64::consts::PI).ln()) - s.data.test.square().sum_dim_intlist(1, false, None) * 0.5;
    assert!(lp.mean(None).double_value(&[]) > base.mean(None).double_value(&[]) + 0.3);
}

#[test]
fn trained_flows_are_normalised_and_sample_their_density() {
    let dir = tempfile::tempdir().unwrap();
    check(&trained("realnvp-moons", &["model.n_layers=6", "model.hidden=[32,32]"], dir.path()));
    check(&trained(
        "realnvp-8gaussians",
        &["model.n_layers=4", "model.hidden=[32,32]", "model.actnorm=true", "model.mixing=\"random\"", "model.base.kind=\"diag_normal\"", "model.scale_bound=\"softplus\""],
        dir.path(),
    ));
    check(&trained("nice-moons", &["model.n_layers=4", "model.hidden=[32,32]", "model.mixing=\"reverse\""], dir.path()));
}

/// Spline and autoregressive flows (MAF samples in D passes, IAF evaluates density in D passes): normalised, and
/// their samples follow their density.
#[test]
fn spline_and_autoregressive_flows_are_normalised_and_sample_their_density() {
    let dir = tempfile::tempdir().unwrap();
    check(&trained("nsf-checkerboard", &["data.name=\"moons\"", "model.n_layers=4", "model.hidden=[32,32]", "model.mixing=\"lu\""], dir.path()));
    check(&trained("maf-moons", &["model.n_layers=4", "model.hidden=[32,32]"], dir.path()));
    check(&trained("realnvp-gmmbase-8gaussians", &["model.n_layers=4", "model.hidden=[32,32]"], dir.path()));
    check(&trained("maf-moons", &["model.n_layers=4", "model.hidden=[32,32]", "model.direction=\"iaf\"", "model.actnorm=true"], &dir.path().join("iaf")));
    check(&trained("maf-moons", &["model.n_layers=3", "model.hidden=[32,32]", "model.transformer=\"spline\"", "model.batchnorm=true"], &dir.path().join("spline")));
}

/// Planar and radial flows (the planar inverse by root finding), batch normalization in evaluation mode, and the
/// resampled base (density with a Monte Carlo normaliser, rejection sampling with truncation).
#[test]
fn planar_radial_batchnorm_and_resampled_base_are_normalised_and_sample_their_density() {
    let dir = tempfile::tempdir().unwrap();
    check(&trained("planar-8gaussians", &["data.name=\"moons\"", "model.n_layers=16"], dir.path()));
    check(&trained("planar-8gaussians", &["data.name=\"moons\"", "model.n_layers=8", "model.transform=\"radial\""], &dir.path().join("radial")));
    check(&trained("realnvp-moons", &["model.n_layers=4", "model.hidden=[32,32]", "model.batchnorm=true"], &dir.path().join("bn")));
    let s = trained("realnvp-resampled-rings", &["data.name=\"moons\"", "model.n_layers=4", "model.hidden=[32,32]", "model.base.resampled.eval_samples=262144"], dir.path());
    assert_eq!(s.model.log_prob(&s.data.test.narrow(0, 0, 4)).kind, relaxflow::model::Kind::Estimate);
    check(&s);
}

/// On data with a known density a flow's exact test NLL can't beat the true entropy (the gap is a KL divergence),
/// beyond noise; a wrong log-det sign or a missing Jacobian term would break this.
#[test]
fn a_trained_flow_never_beats_the_true_entropy() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [("nsf-checkerboard", vec!["model.n_layers=4", "model.hidden=[32,32]"]), ("planar-8gaussians", vec!["data.name=\"checkerboard\""])] {
        let s = trained(name, &extra, dir.path());
        let e = relaxflow::runner::evaluate::test_nll(&*s.model, &s.data, None, 1000, Device::Cpu);
        let h = s.data.true_entropy.unwrap();
        assert!(e.nll_nats > h - 3.0 * e.nll_stderr, "{name}: NLL {} below the entropy {h} (± {})", e.nll_nats, e.nll_stderr);
        assert!(e.nll_nats < h + 1.0, "{name}: NLL {} did not learn (entropy {h})", e.nll_nats);
    }
}

/// SurVAE inference surjections (abs with a learned sign classifier, sort) keep the likelihood exact: trained models
/// integrate to 1 and sample their density. A VAE's importance-sampled density is an unbiased estimate of p(x), so it
/// integrates to 1 as well, up to Monte Carlo error.
#[test]
fn surjective_models_and_the_vae_estimate_are_normalised() {
    let dir = tempfile::tempdir().unwrap();
    check(&trained("survae-abs-corners", &["model.n_layers=4", "model.hidden=[32,32]"], dir.path()));
    check(&trained("survae-sort-exchangeable", &["data.dim=2", "model.n_layers=4", "model.hidden=[32,32]"], dir.path()));
    let s = trained("vae-checkerboard", &["data.name=\"moons\"", "model.hidden=[32,32]", "model.eval_k=64"], dir.path());
    // Moons lie within [-2, 3] x [-1, 1.5]; a 300² grid on [-6, 6]² keeps the 64-sample estimate affordable.
    let (mass, _, _) = grid_moments_on(&s, 6.0, 300);
    assert!((mass - 1.0).abs() < 0.05, "VAE density estimate integrates to {mass}");
}
