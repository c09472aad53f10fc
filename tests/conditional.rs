//! Conditional runs end to end: a user's points with a context column train a conditional flow; `sample` draws at
//! given contexts and `eval` scores rows with their own contexts; every kind of bad context input is refused with
//! an error that names it; a class-conditional MNIST flow writes one grid row per class.
use std::path::Path;
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

fn relaxflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relaxflow")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("the relaxflow binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = relaxflow(args);
    assert!(out.status.success(), "relaxflow {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn fails(args: &[&str]) -> String {
    let out = relaxflow(args);
    assert!(!out.status.success(), "relaxflow {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// [n, 3]: x = (c + 0.3 ε1, -c + 0.3 ε2) in columns 0-1, c ~ U(-2, 2) in column 2.
fn points(n: i64) -> Tensor {
    let c = Tensor::rand([n, 1], (Kind::Float, Device::Cpu)) * 4.0 - 2.0;
    let e = Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * 0.3;
    let x = Tensor::cat(&[&c, &(-&c)], 1) + e;
    Tensor::cat(&[x, c], 1)
}

#[test]
fn a_context_column_trains_a_conditional_flow_that_samples_and_scores_at_given_contexts() {
    tch::manual_seed(0);
    let tmp = tempfile::tempdir().unwrap();
    let pts = tmp.path().join("pts.npy");
    points(1000).write_npy(&pts).unwrap();
    let run = tmp.path().join("run");
    let data = format!("data.path={}", pts.display());
    let base = ["--set", "model.n_layers=4", "--set", "model.hidden=[32,32]", "--set", "eval.grid=16", "--set", "train.lr=3e-3"];
    let mut args = vec!["train", "realnvp-moons", "--steps", "300", "--out", s(&run), "--set", &data, "--set", "data.context_columns=[2]"];
    args.extend(base);
    ok(&args);
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["context"], serde_json::json!({"kind": "vector", "width": 1}), "{info}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["dim"], 2, "the context column is not part of x");
    // At c, x ≈ (c, -c) + 0.3 ε: 300 steps put the conditional mean near it (an unconditional model would give 0).
    let out = tmp.path().join("at.npy");
    ok(&["sample", s(&run), "-n", "400", "--context", "1.5", "--out", s(&out)]);
    let x = Tensor::read_npy(&out).unwrap();
    assert_eq!(x.size(), [400, 2]);
    let m = Vec::<f64>::try_from(x.to_kind(Kind::Double).mean_dim(0, false, Kind::Double)).unwrap();
    assert!((m[0] - 1.5).abs() < 0.5 && (m[1] + 1.5).abs() < 0.5, "sample mean at c = 1.5: {m:?}");
    // One block per context row, in row order.
    let cfile = tmp.path().join("c.npy");
    Tensor::from_slice(&[-1.5f32, 1.5]).view([2, 1]).write_npy(&cfile).unwrap();
    ok(&["sample", s(&run), "-n", "300", "--context-file", s(&cfile), "--out", s(&out)]);
    let x = Tensor::read_npy(&out).unwrap().to_kind(Kind::Double);
    assert_eq!(x.size(), [600, 2]);
    let (lo, hi) = (x.narrow(0, 0, 300).mean_dim(0, false, Kind::Double), x.narrow(0, 300, 300).mean_dim(0, false, Kind::Double));
    assert!(lo.double_value(&[0]) < -0.8 && hi.double_value(&[0]) > 0.8, "blocks out of order: {lo:?} {hi:?}");

    // eval: each row of --data with its own context; the same rows with swapped contexts score far worse.
    let xs = tmp.path().join("x.npy");
    Tensor::from_slice(&[-1.5f32, 1.5, 1.5, -1.5]).view([2, 2]).write_npy(&xs).unwrap();
    let lp = tmp.path().join("lp.npy");
    let v: serde_json::Value = serde_json::from_str(&ok(&["eval", s(&run), "--data", s(&xs), "--context-file", s(&cfile), "--logp-out", s(&lp)])).unwrap();
    assert_eq!(v["kind"], "exact");
    let right = Vec::<f64>::try_from(Tensor::read_npy(&lp).unwrap()).unwrap();
    let swapped = tmp.path().join("swapped.npy");
    Tensor::from_slice(&[1.5f32, -1.5]).view([2, 1]).write_npy(&swapped).unwrap();
    ok(&["eval", s(&run), "--data", s(&xs), "--context-file", s(&swapped), "--logp-out", s(&lp)]);
    let wrong = Vec::<f64>::try_from(Tensor::read_npy(&lp).unwrap()).unwrap();
    assert!(right.iter().zip(&wrong).all(|(r, w)| r - w > 5.0), "log p with own contexts {right:?}, swapped {wrong:?}");

    // Bad context input, each named.
    let err = fails(&["sample", s(&run), "-n", "4", "--class", "1", "--out", s(&out)]);
    assert!(err.contains("--class 1") && err.contains("vector context of width 1"), "{err}");
    let err = fails(&["sample", s(&run), "-n", "4", "--context", "1,2", "--out", s(&out)]);
    assert!(err.contains("width 2, but the model was trained with width 1"), "{err}");
    let err = fails(&["sample", s(&run), "-n", "4", "--context", "one", "--out", s(&out)]);
    assert!(err.contains("`one`") && err.contains("not a number"), "{err}");
    let err = fails(&["sample", s(&run), "-n", "4", "--context-file", "/nonexistent/c.npy", "--out", s(&out)]);
    assert!(err.contains("/nonexistent/c.npy: data file not found"), "{err}");
    let err = fails(&["eval", s(&run), "--data", s(&xs)]);
    assert!(err.contains("conditional") && err.contains("--context-file"), "{err}");
    let three = tmp.path().join("three.npy");
    Tensor::zeros([3, 1], (Kind::Float, Device::Cpu)).write_npy(&three).unwrap();
    let err = fails(&["eval", s(&run), "--data", s(&xs), "--context-file", s(&three)]);
    assert!(err.contains("3 context rows for 2 data rows"), "{err}");
    let nan = tmp.path().join("nan.npy");
    Tensor::from_slice(&[0.0f32, f32::NAN]).view([2, 1]).write_npy(&nan).unwrap();
    let err = fails(&["eval", s(&run), "--data", s(&xs), "--context-file", s(&nan)]);
    assert!(err.contains("NaN"), "{err}");
    let err = fails(&["sample", s(&run), "-n", "4", "--temperature", "0.5", "--out", s(&out)]);
    assert!(err.contains("temperature 1 only"), "{err}");

    // An unconditional run takes no context.
    let plain = tmp.path().join("plain");
    let mut args = vec!["train", "realnvp-moons", "--steps", "5", "--out", s(&plain), "--set", "data.n_train=500", "--set", "data.n_test=100"];
    args.extend(base);
    ok(&args);
    let err = fails(&["sample", s(&plain), "-n", "4", "--context", "1.0", "--out", s(&out)]);
    assert!(err.contains("unconditional"), "{err}");
    let err = fails(&["eval", s(&plain), "--data", s(&xs), "--context-file", s(&cfile)]);
    assert!(err.contains("unconditional"), "{err}");
}

#[test]
fn bad_context_configs_are_named_before_anything_is_written() {
    tch::manual_seed(1);
    let tmp = tempfile::tempdir().unwrap();
    let pts = tmp.path().join("pts.npy");
    points(200).write_npy(&pts).unwrap();
    let data = format!("data.path={}", pts.display());
    let train = |extra: &[&str]| {
        let out = tmp.path().join("r");
        let mut args = vec!["train", "realnvp-moons", "--steps", "2", "--out", s(&out), "--set", &data];
        for e in extra {
            args.extend(["--set", e]);
        }
        let err = fails(&args);
        assert!(!out.exists(), "a refused config left {}", out.display());
        err
    };
    let err = train(&["data.context_columns=[5]"]);
    assert!(err.contains("column 5 is out of range") && err.contains("3 columns"), "{err}");
    let err = train(&["data.context_columns=[0,1,2]"]);
    assert!(err.contains("at least one column of x"), "{err}");
    // Column 2 holds reals, not class indices.
    let err = train(&["data.context_columns=[2]", "data.context_classes=4"]);
    assert!(err.contains("whole numbers"), "{err}");
    let err = train(&["data.context_path=/nonexistent/c.npy"]);
    assert!(err.contains("/nonexistent/c.npy: data file not found"), "{err}");
    let short = tmp.path().join("short.npy");
    Tensor::zeros([7, 1], (Kind::Float, Device::Cpu)).write_npy(&short).unwrap();
    let err = train(&[&format!("data.context_path={}", short.display())]);
    assert!(err.contains("7 rows") && err.contains("one context row per data row"), "{err}");
    // Classes out of range: 3 classes declared, a 3 in the column.
    let labelled = tmp.path().join("labelled.npy");
    let c = Tensor::arange(200, (Kind::Int64, Device::Cpu)).remainder(4).to_kind(Kind::Float).view([200, 1]);
    Tensor::cat(&[Tensor::randn([200, 2], (Kind::Float, Device::Cpu)), c], 1).write_npy(&labelled).unwrap();
    let labelled = format!("data.path={}", labelled.display());
    let out = tmp.path().join("r");
    let err = fails(&["train", "realnvp-moons", "--steps", "2", "--out", s(&out), "--set", &labelled, "--set", "data.context_columns=[2]", "--set", "data.context_classes=3"]);
    assert!(err.contains("class 3 is out of range"), "{err}");
    let err = train(&["data.context=labels"]);
    assert!(err.contains("applies to labelled images") && err.contains("holds points"), "{err}");
    // A model family without a conditional form says so.
    let err = fails(&["train", "planar-8gaussians", "--steps", "2", "--out", s(&out), "--set", &data, "--set", "data.context_columns=[2]"]);
    assert!(err.contains("no conditional form"), "{err}");
}

/// A class-conditional flow on MNIST: `sample` writes one grid row per class by default, `--class` one class, and
/// the summary's image quality scores how often the classifier sees the class a sample was drawn at.
#[test]
fn a_class_conditional_mnist_flow_draws_one_grid_row_per_class() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("c");
    let small = [
        "model.n_layers=1", "model.hidden=[32]", "train.batch_size=8", "eval.n_final=20", "eval.n_eval=20", "eval.batch_size=20",
        "eval.n_samples=10", "eval.quality_samples=8", "train.sample_every=2", "eval.every=2",
    ];
    let mut args = vec!["train", "maf-mnist-conditional", "--steps", "2", "--device", "cpu", "--out", s(&run)];
    for e in &small {
        args.extend(["--set", e]);
    }
    ok(&args);
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["context"], serde_json::json!({"kind": "class", "classes": 10}), "{info}");
    let grid = tmp.path().join("grid.png");
    ok(&["sample", s(&run), "-n", "4", "--out", s(&grid)]);
    // 10 rows of 4 images of 28 px with 1 px gaps, drawn at 2x.
    let (w, h) = image::image_dimensions(&grid).unwrap();
    assert_eq!((w, h), (2 * (4 * 29 - 1), 2 * (10 * 29 - 1)));
    let npy = tmp.path().join("three.npy");
    ok(&["sample", s(&run), "-n", "5", "--class", "3", "--out", s(&npy)]);
    assert_eq!(Tensor::read_npy(&npy).unwrap().size(), [5, 784]);
    let err = fails(&["sample", s(&run), "-n", "5", "--class", "10", "--out", s(&npy)]);
    assert!(err.contains("class 10 is out of range") && err.contains("0..=9"), "{err}");
    let err = fails(&["sample", s(&run), "-n", "5", "--context", "0.5,1", "--out", s(&npy)]);
    assert!(err.contains("one column (the class index)"), "{err}");
}

/// The VAE and the time-conditioned families on MNIST labels: `sample` draws one grid row per class; DDPM, score
/// and DiffFlow guide at a weight given with --set model.guidance_weight (a sampling setting) and refuse a change of
/// the training-only p_uncond.
#[test]
fn class_conditional_vae_ddpm_score_and_diffflow_draw_per_class_grids_and_take_a_guidance_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let small = [
        "train.batch_size=4", "eval.n_final=2", "eval.n_eval=2", "eval.batch_size=2", "eval.n_samples=2", "eval.quality_samples=8",
        "model.net.unet_ch=8", "model.net.unet_groups=4", "train.sample_every=2", "eval.every=2", "model.ode.rtol=1e-2",
    ];
    for (exp, extra) in [
        ("ddpm-mnist-conditional", vec!["model.timesteps=10"]),
        ("scoresde-mnist-conditional", vec!["model.sample_steps=4"]),
        ("diffflow-mnist-conditional", vec!["model.steps=3", "model.steps_schedule=[[0, 2], [2, 3]]"]),
        ("vae-mnist-conditional", vec!["model.eval_k=10", "model.hidden=[16]"]),
    ] {
        let guided = exp != "vae-mnist-conditional";
        let run = tmp.path().join(exp);
        let mut args = vec!["train", exp, "--steps", "2", "--device", "cpu", "--out", s(&run)];
        let no_ode = matches!(exp, "ddpm-mnist-conditional" | "vae-mnist-conditional");
        let no_net = exp == "vae-mnist-conditional";
        for e in small.iter().chain(&extra).filter(|e| !(no_ode && e.starts_with("model.ode")) && !(no_net && e.starts_with("model.net"))) {
            args.extend(["--set", e]);
        }
        ok(&args);
        let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        assert_eq!(info["context"], serde_json::json!({"kind": "class", "classes": 10}), "{exp}: {info}");
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        let guidance = &summary["estimator"]["guidance"];
        if guided {
            assert_eq!((guidance["p_uncond"].as_f64(), guidance["guidance_weight"].as_f64()), (Some(0.1), Some(0.0)), "{exp}: {summary}");
        }
        let grid = tmp.path().join(format!("{exp}.png"));
        ok(&["sample", s(&run), "-n", "3", "--out", s(&grid)]);
        assert_eq!(image::image_dimensions(&grid).unwrap(), (2 * (3 * 29 - 1), 2 * (10 * 29 - 1)), "{exp}: 10 rows of 3");
        let npy = tmp.path().join(format!("{exp}.npy"));
        if !guided {
            ok(&["sample", s(&run), "-n", "2", "--class", "7", "--out", s(&npy)]);
            assert_eq!(Tensor::read_npy(&npy).unwrap().size(), [2, 1, 28, 28], "{exp}");
            continue;
        }
        ok(&["sample", s(&run), "-n", "2", "--class", "7", "--set", "model.guidance_weight=2", "--out", s(&npy)]);
        assert_eq!(Tensor::read_npy(&npy).unwrap().size(), [2, 1, 28, 28], "{exp}");
        let err = fails(&["sample", s(&run), "-n", "2", "--class", "7", "--set", "model.p_uncond=0.5", "--out", s(&npy)]);
        assert!(err.contains("model.p_uncond") && err.contains("model.guidance_weight"), "{exp}: {err}");
    }
}

/// `conditional_class_accuracy` scores what it says: with a briefly trained MNIST classifier, real test images at
/// their own labels score like the classifier's accuracy and at shifted labels near 0; a class-conditional run
/// reports the share for its samples in the summary's image quality.
#[test]
fn conditional_class_accuracy_scores_images_at_their_intended_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let clf = tmp.path().join("clf");
    let small = ["model.channels=[8, 16]", "model.feature_dim=32", "train.batch_size=64", "eval.every=0", "eval.n_eval=500"];
    let mut args = vec!["train", "mnist-classifier", "--steps", "150", "--device", "cpu", "--out", s(&clf)];
    for e in &small {
        args.extend(["--set", e]);
    }
    ok(&args);
    let trained = relaxflow::runner::classifier_run::open_run(&clf, Device::Cpu).unwrap();
    let cfg: relaxflow::data::DataConfig = toml::from_str("name = \"mnist\"\ncontext = \"labels\"\nn_test = 1000").unwrap();
    let data = relaxflow::data::load(&cfg, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    let labels = match &data.context.as_ref().expect("labels").test {
        relaxflow::Context::Class(c) => c.shallow_clone(),
        _ => unreachable!(),
    };
    let x = data.test.narrow(0, 0, 1000);
    let own = relaxflow::classifier::quality::class_accuracy(&x, &labels.narrow(0, 0, 1000), &trained);
    let shifted = relaxflow::classifier::quality::class_accuracy(&x, &((labels.narrow(0, 0, 1000) + 1).remainder(10)), &trained);
    assert!(own > 0.8, "real images at their labels: {own}");
    assert!(shifted < 0.15, "real images at shifted labels: {shifted}");
    let run = tmp.path().join("maf");
    let classifier = format!("eval.classifier=\"{}\"", clf.display());
    let small = [
        "model.n_layers=1", "model.hidden=[32]", "train.batch_size=8", "eval.n_final=20", "eval.n_eval=20", "eval.batch_size=20",
        "eval.n_samples=10", "eval.quality_samples=20", "train.sample_every=0", "eval.every=0", classifier.as_str(),
    ];
    let mut args = vec!["train", "maf-mnist-conditional", "--steps", "2", "--device", "cpu", "--out", s(&run)];
    for e in &small {
        args.extend(["--set", e]);
    }
    ok(&args);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let acc = summary["image_quality"]["conditional_class_accuracy"].as_f64();
    assert!(acc.is_some_and(|a| (0.0..=1.0).contains(&a)), "{}", summary["image_quality"]);
}
