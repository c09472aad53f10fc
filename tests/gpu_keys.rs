//! The GPU-speed keys on the CPU. With `train.cuda_graph` the step that a CUDA graph captures (device-resident
//! learning rate and Adam count, static loss and norm) runs eagerly here, so these tests check the step itself: it
//! trains as the ordinary step does, resumes exactly, says why it is not captured, and `relaxflow sample` draws the
//! same samples. tests/gpu.rs checks the capture on CUDA; `train.channels_last` is checked in runner/optim.rs and
//! tests/data_parallel.rs.
use std::path::Path;
use std::process::{Command, Output};

fn relaxflow(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_relaxflow"));
    c.current_dir(env!("CARGO_MANIFEST_DIR")).env("OMP_NUM_THREADS", "1");
    let out = c.args(args).output().expect("the relaxflow binary runs");
    assert!(out.status.success(), "relaxflow {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

const SMALL: [&str; 9] = ["data.n_train=2000", "data.n_test=500", "train.log_every=5", "train.checkpoint_every=10", "eval.every=0",
                          "eval.n_samples=200", "eval.grid=16", "train.sample_every=0", "eval.sampler_settings=[]"];

fn train_args<'a>(exp: &'a str, out: &'a Path, steps: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train", exp, "--steps", steps, "--device", "cpu", "--out", out.to_str().unwrap()];
    for s in SMALL {
        a.extend(["--set", s]);
    }
    a.extend(extra);
    a
}

fn train(exp: &str, out: &Path, steps: &str, extra: &[&str]) -> String {
    String::from_utf8_lossy(&relaxflow(&train_args(exp, out, steps, extra)).stderr).to_string()
}

/// (loss, grad_norm, cuda_graph) of every metrics line.
fn metrics(run: &Path) -> Vec<(f64, f64, Option<String>)> {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        (v["loss"].as_f64().unwrap(), v["grad_norm"].as_f64().unwrap(), v["cuda_graph"].as_str().map(String::from))
    }).collect()
}

fn assert_close(a: &[(f64, f64, Option<String>)], b: &[(f64, f64, Option<String>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x.0 - y.0).abs() <= 1e-5 * (1.0 + x.0.abs()), "{what}: loss of line {i}: {} vs {}", x.0, y.0);
        assert!((x.1 - y.1).abs() <= 1e-4 * (1.0 + x.1.abs()), "{what}: grad norm of line {i}: {} vs {}", x.1, y.1);
    }
}

#[test]
fn the_graph_step_trains_like_the_ordinary_step_and_says_why_it_runs_eagerly() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, clip) in [("clipped", &["--set", "train.grad_clip=1.0"][..]), ("unclipped", &[][..])] {
        let (plain, graph) = (tmp.path().join(format!("plain-{label}")), tmp.path().join(format!("graph-{label}")));
        let mut extra = clip.to_vec();
        extra.extend(["--set", "train.weight_decay=0.01"]);
        train("realnvp-moons", &plain, "30", &extra);
        extra.extend(["--set", "train.cuda_graph=true"]);
        let err = train("realnvp-moons", &graph, "30", &extra);
        assert!(err.contains("train.cuda_graph: CUDA graphs need a CUDA device, and this run is on Cpu; every step runs eagerly"), "{err}");
        let (a, b) = (metrics(&plain), metrics(&graph));
        assert_close(&a, &b, label);
        assert!(a.iter().all(|l| l.2.is_none()) && b.iter().all(|l| l.2.as_deref() == Some("eager")), "{b:?}");
        // The comparison can fail: another learning rate moves the losses.
        let other = tmp.path().join(format!("other-{label}"));
        extra.extend(["--set", "train.lr=1e-2"]);
        train("realnvp-moons", &other, "30", &extra);
        let c = metrics(&other);
        assert!((c.last().unwrap().0 - b.last().unwrap().0).abs() > 1e-3, "another learning rate must change the losses");
    }
}

#[test]
fn a_graph_step_run_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let on = ["--set", "train.cuda_graph=true", "--set", "train.lr_schedule=\"cosine\""];
    let whole = tmp.path().join("whole");
    train("realnvp-moons", &whole, "30", &on);
    let cut = tmp.path().join("cut");
    let mut halted = on.to_vec();
    halted.extend(["--halt-after", "13"]);
    let o = Command::new(env!("CARGO_BIN_EXE_relaxflow")).current_dir(env!("CARGO_MANIFEST_DIR")).env("OMP_NUM_THREADS", "1")
        .args(train_args("realnvp-moons", &cut, "30", &halted)).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("halted after step 13"));
    relaxflow(&["train", "--resume", cut.to_str().unwrap(), "--device", "cpu"]);
    // Adam's device-side count restarts from the checkpoint's: the resumed run retraces the whole one.
    assert_close(&metrics(&whole), &metrics(&cut), "resumed");
}

#[test]
fn a_model_whose_step_is_not_capturable_trains_eagerly_with_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("vae");
    let err = train("vae-checkerboard", &run, "10", &["--set", "train.cuda_graph=true"]);
    assert!(err.contains("every step runs eagerly"), "{err}");
    assert!(run.join("summary.json").exists());
}

#[test]
fn sampling_with_the_key_draws_the_same_samples_and_says_it_is_eager_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("ddpm");
    train("ddpm-rings", &run, "10", &["--set", "model.timesteps=50"]);
    let (a, b) = (tmp.path().join("a.npy"), tmp.path().join("b.npy"));
    let r = run.to_str().unwrap();
    relaxflow(&["sample", r, "-n", "700", "--out", a.to_str().unwrap(), "--device", "cpu", "--set", "eval.batch_size=200"]);
    let o = relaxflow(&["sample", r, "-n", "700", "--out", b.to_str().unwrap(), "--device", "cpu", "--set", "eval.batch_size=200",
                        "--set", "train.cuda_graph=true"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("CUDA graphs need a CUDA device, and sampling runs on Cpu; every block is sampled eagerly"), "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "the same seed draws the same samples");
}
