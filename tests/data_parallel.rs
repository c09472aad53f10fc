//! Data-parallel training and sharded evaluation (issue 16): two Gloo ranks spawned here follow the trajectory of
//! one process on the union batch (a flow, a diffusion model and DiffFlow), hold bit-identical weights, resume
//! together, shard `relaxflow eval` to the single-process numbers, refuse mismatched configs, and end cleanly when a
//! rank dies.
mod common;
use common::{finish, free_port};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(300);

/// `relaxflow ARGS` as rank `rank` of `world`, meeting through a TCPStore on `port`.
fn rank(rank: usize, world: usize, port: u16, args: &[String]) -> Child {
    let mut c = common::relaxflow();
    c.args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("RELAXFLOW_DIST_TIMEOUT", "60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

/// Both ranks' outputs, by rank.
fn two_ranks(args: &[String]) -> Vec<Output> {
    let port = free_port();
    let children: Vec<Child> = (0..2).map(|r| rank(r, 2, port, args)).collect();
    children.into_iter().enumerate().map(|(r, c)| finish(c, LIMIT, &format!("rank {r}"))).collect()
}

fn one_process(args: &[String]) -> Output {
    let mut c = common::relaxflow();
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    finish(c.spawn().unwrap(), LIMIT, "one process")
}

fn ok(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    stderr
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `train EXP` for `steps` steps into `out`, logging every step, with a small final evaluation.
fn train_args(exp: &str, out: &Path, steps: i64, extra: &[&str]) -> Vec<String> {
    let mut a = strings(&["train", exp, "--steps", &steps.to_string(), "--out", out.to_str().unwrap(), "--device", "cpu"]);
    for s in ["train.log_every=1", "eval.n_final=64", "eval.n_samples=64", "eval.batch_size=32", "eval.sampler_settings=[]"] {
        a.extend(strings(&["--set", s]));
    }
    for s in extra {
        a.extend(strings(&["--set", s]));
    }
    a
}

fn losses(run: &Path) -> Vec<(i64, f64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["step"].as_i64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

fn summary(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Same steps, losses equal to `tol` (relative to max(1, |loss|)).
fn same_losses(a: &[(i64, f64)], b: &[(i64, f64)], tol: f64, what: &str) {
    assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), b.iter().map(|x| x.0).collect::<Vec<_>>(), "{what}: logged steps differ");
    for ((step, x), (_, y)) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * x.abs().max(1.0), "{what}: step {step}: loss {x} (one process) vs {y} (two ranks)");
    }
}

/// One family: a single process on the whole batch and two ranks on its halves give the same loss at every step,
/// the ranks' weights agree bit for bit, and summary.json says two Gloo ranks.
fn follows_one_process(exp: &str, steps: i64, extra: &[&str], nll_tol: f64) {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    ok(&one_process(&train_args(exp, &one, steps, extra)), &format!("{exp}, one process"));
    let outs = two_ranks(&train_args(exp, &two, steps, extra));
    let stderr0 = ok(&outs[0], &format!("{exp}, rank 0"));
    ok(&outs[1], &format!("{exp}, rank 1"));
    assert!(stderr0.contains("weights bit-identical on every rank"), "{exp}: rank 0 did not report identical weights:\n{stderr0}");
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len() as i64, steps);
    same_losses(&a, &b, 1e-5, exp);
    let (s1, s2) = (summary(&one), summary(&two));
    assert_eq!(s2["world_size"], 2, "{exp}: summary.json world_size");
    assert_eq!(s2["backend"], "gloo", "{exp}: summary.json backend");
    assert_eq!(s1["world_size"], 1);
    let (n1, n2) = (s1["test_nll_nats"].as_f64().unwrap(), s2["test_nll_nats"].as_f64().unwrap());
    assert!((n1 - n2).abs() <= nll_tol * n1.abs().max(1.0), "{exp}: final test NLL {n1} (one process) vs {n2} (sharded over two ranks)");
}

#[test]
fn a_flow_on_two_ranks_follows_one_process() {
    follows_one_process("realnvp-moons", 25, &["train.batch_size=256"], 1e-5);
}

#[test]
fn ddpm_on_two_ranks_follows_one_process() {
    // Each example's diffusion time and noise are drawn as rows of the whole batch's draw (relaxflow::rows).
    follows_one_process("ddpm-rings", 20, &["train.batch_size=128", "model.timesteps=100"], 1e-4);
}

#[test]
fn diffflow_on_two_ranks_follows_one_process() {
    // Forward noises of every trajectory step and the random time grid, likewise; the likelihood is an adaptive
    // ODE solve whose steps depend on the rows it is given, hence the looser NLL tolerance.
    follows_one_process("diffflow-rings", 15, &["train.batch_size=128", "model.steps=8"], 1e-3);
}

#[test]
fn channels_last_convolutions_on_two_ranks_follow_one_process() {
    // train.channels_last: the ranks' first broadcast sends the NHWC-strided weights through contiguous copies.
    follows_one_process("glow-mnist", 6, &["model.hidden_channels=8", "model.steps=1", "train.batch_size=16",
                                          "train.channels_last=true", "eval.every=0", "train.sample_every=0"], 1e-4);
}

/// Two ranks stopped after step 13 (checkpoint at 10) and resumed as two ranks end where one uninterrupted
/// process does, the moving average of the weights (train.ema_decay) included: rank 0's average reaches rank 1 on
/// resume, and the sharded final evaluation is of the average on both ranks.
#[test]
fn two_ranks_resume_together() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let extra = ["train.batch_size=128", "train.checkpoint_every=5", "train.ema_decay=0.9"];
    ok(&one_process(&train_args("realnvp-moons", &one, 20, &extra)), "one process");
    let halted = two_ranks(&[train_args("realnvp-moons", &two, 20, &extra), strings(&["--halt-after", "13"])].concat());
    for (r, out) in halted.iter().enumerate() {
        assert!(!out.status.success(), "rank {r} should stop at --halt-after");
        assert!(String::from_utf8_lossy(&out.stderr).contains("halted after step 13"), "rank {r}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(!two.join("summary.json").exists());
    let resumed = two_ranks(&strings(&["train", "--resume", two.to_str().unwrap(), "--device", "cpu"]));
    let stderr0 = ok(&resumed[0], "resumed rank 0");
    ok(&resumed[1], "resumed rank 1");
    assert!(stderr0.contains("resuming") && stderr0.contains("from step 10"), "{stderr0}");
    same_losses(&losses(&one), &losses(&two), 1e-5, "resumed");
    // TensorBoard: rank 0 alone writes, one file per session, and the redone steps 11..13 are in it once.
    let files = relaxflow::tracking::writer::event_files(&two).unwrap();
    assert_eq!(files.len(), 2, "one event file for the halted session and one for the resumed, from rank 0 only: {files:?}");
    let mut loss_steps = Vec::new();
    for f in &files {
        let (records, clean) = relaxflow::tracking::record::read(f).unwrap();
        assert!(clean, "{}", f.display());
        for r in records {
            let e = <relaxflow::tracking::event::Event as prost::Message>::decode(r.as_slice()).unwrap();
            if let Some(relaxflow::tracking::event::What::Summary(s)) = e.what {
                if s.value.iter().any(|v| v.tag == "loss") {
                    loss_steps.push(e.step);
                }
            }
        }
    }
    assert_eq!(loss_steps, (1..=20).collect::<Vec<i64>>(), "every logged step once, in order");
    let (s1, s2) = (summary(&one), summary(&two));
    assert_eq!((&s1["weights"], &s2["weights"]), (&Value::from("ema"), &Value::from("ema")));
    let (n1, n2) = (s1["test_nll_nats"].as_f64().unwrap(), s2["test_nll_nats"].as_f64().unwrap());
    assert!((n1 - n2).abs() <= 1e-5 * n1.abs().max(1.0), "averaged weights: NLL {n1} (one process) vs {n2} (two ranks, resumed)");
}

/// `relaxflow eval` sharded over two ranks prints the one-process numbers: an exact flow likelihood and DDPM's
/// variational bound (its noise per test point drawn as rows of the whole batch's draw).
#[test]
fn sharded_eval_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    for (exp, extra) in [("realnvp-moons", vec!["train.batch_size=128"]), ("ddpm-rings", vec!["train.batch_size=128", "model.timesteps=50"])] {
        let run = dir.path().join(exp);
        ok(&one_process(&train_args(exp, &run, 10, &extra)), exp);
        // 101 points in batches of 32: the last batch of 5 splits unevenly (2 rows on rank 0, 3 on rank 1).
        let eval = strings(&["eval", run.to_str().unwrap(), "--device", "cpu", "--set", "eval.n_final=101", "--set", "eval.batch_size=32"]);
        let single = one_process(&eval);
        ok(&single, &format!("{exp}: eval, one process"));
        let sharded = two_ranks(&eval);
        ok(&sharded[0], &format!("{exp}: eval, rank 0"));
        ok(&sharded[1], &format!("{exp}: eval, rank 1"));
        assert!(sharded[1].stdout.is_empty(), "{exp}: only rank 0 prints");
        let a: Value = serde_json::from_slice(&single.stdout).unwrap();
        let b: Value = serde_json::from_slice(&sharded[0].stdout).unwrap();
        let (x, y) = (a["nll_nats"].as_f64().unwrap(), b["nll_nats"].as_f64().unwrap());
        assert_eq!(a["n"], 101);
        assert_eq!(b["n"], 101);
        assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{exp}: NLL {x} (one process) vs {y} (two ranks)");
        assert!((a["nll_stderr"].as_f64().unwrap() - b["nll_stderr"].as_f64().unwrap()).abs() < 1e-6);
    }
}

/// Ranks given different configs refuse to start, and no run folder appears.
#[test]
fn mismatched_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let port = free_port();
    let base = train_args("realnvp-moons", &run, 5, &[]);
    let children = [rank(0, 2, port, &base), rank(1, 2, port, &[base.clone(), strings(&["--set", "train.lr=0.5"])].concat())];
    for (r, c) in children.into_iter().enumerate() {
        let out = finish(c, LIMIT, &format!("rank {r}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "rank {r} should refuse");
        assert!(stderr.contains("different configs"), "rank {r}: {stderr}");
    }
    assert!(!run.exists(), "a refused job leaves no run folder");
}

/// A rank killed mid-training ends the other with an error naming the collective, long before the store timeout
/// (60 s here); the checkpoint rank 0 wrote is kept for --resume.
#[test]
fn a_killed_rank_stops_training_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let port = free_port();
    let args = train_args("realnvp-moons", &run, 1_000_000, &["train.checkpoint_every=50", "train.batch_size=64"]);
    let mut survivor = rank(0, 2, port, &args);
    let mut victim = rank(1, 2, port, &args);
    let start = Instant::now();
    while !run.join("metrics.jsonl").exists() || std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count() < 60 {
        assert!(start.elapsed() < LIMIT, "training never got going");
        if let Some(status) = survivor.try_wait().unwrap() {
            let out = survivor.wait_with_output().unwrap();
            panic!("rank 0 ended early ({status}): {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    victim.kill().unwrap();
    let _ = victim.wait();
    let killed = Instant::now();
    let out = finish(survivor, Duration::from_secs(50), "rank 0 after its peer died");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rank 0 must fail when its peer dies");
    assert!(killed.elapsed() < Duration::from_secs(30), "rank 0 took {:?} to notice", killed.elapsed());
    assert!(stderr.contains("rank 0"), "the error names the rank: {stderr}");
    assert!(run.join("checkpoint.pt").exists());
}

/// torchrun (from the venv, when there) launches a data-parallel run.
#[test]
fn torchrun_launches_training() {
    let venv: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/torchrun");
    if !venv.exists() {
        eprintln!("skipped: no torchrun in .venv");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut c = std::process::Command::new(&venv);
    for v in common::LAUNCH_VARS {
        c.env_remove(v);
    }
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("OMP_NUM_THREADS", "1")
        .args(["--nproc_per_node", "2", "--master_port", &free_port().to_string(), "--no-python", env!("CARGO_BIN_EXE_relaxflow")])
        .args(train_args("realnvp-moons", &run, 10, &["train.batch_size=64"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = finish(c.spawn().unwrap(), LIMIT, "torchrun");
    ok(&out, "torchrun");
    let s = summary(&run);
    assert_eq!(s["world_size"], 2);
    assert_eq!(losses(&run).len(), 10);
}

/// Every family, in one process: the whole batch's gradient equals the sum over two shares of each share's gradient
/// weighted by its size, when each share's loss runs under its `rows::Split` from the same seed. This is what makes
/// N ranks follow one process: every per-example random draw goes through `relaxflow::rows`, and every loss is a
/// mean over examples. (Batch normalization, which no shipped experiment uses, would break it: its statistics are
/// per rank.)
#[test]
fn every_family_split_gradient_equals_whole_batch() {
    use relaxflow::experiment::config;
    use relaxflow::rows::{with_split, Split};
    use tch::{Device, Kind, Tensor};
    let ws = relaxflow::Workspace::default();
    // A CNF's adaptive solver takes its own steps on each rank's rows, so its split gradient equals the whole batch's
    // to the training tolerance (set tight here), not bit for bit.
    let cases: [(&str, i64, &[&str]); 19] = [
        ("realnvp-moons", 10, &[]),
        ("realnvp-resampled-rings", 10, &[]),
        ("nf-gmm", 10, &[]),
        ("glow-mnist", 6, &["model.levels=2", "model.steps=2", "model.hidden_channels=16"]),
        ("vardeq-realnvp-mnist", 6, &[]),
        ("vae-checkerboard", 10, &[]),
        ("iwae-binary-mnist", 6, &[]),
        ("survae-abs-corners", 10, &[]),
        ("survae-sort-exchangeable", 10, &[]),
        ("augmented-flow-checkerboard", 10, &[]),
        ("snf-doublewell", 10, &[]),
        ("snf-doublewell-hmc", 10, &[]),
        ("ddpm-rings", 10, &[]),
        ("score-checkerboard", 10, &[]),
        ("ncsn-rings", 10, &[]),
        ("diffflow-rings", 10, &["model.steps=6"]),
        ("cnf-checkerboard", 10, &["model.train_rtol=1e-8", "model.net.hidden=[16, 16]"]),
        ("cnf-moons", 10, &["model.train_rtol=1e-8", "model.net.hidden=[16, 16]", "model.gradient=\"adjoint\""]),
        ("mnist-classifier", 6, &[]),
    ];
    for (exp, batch, extra) in cases {
        let (_, file) = config::resolve_file(exp, &ws.experiments).unwrap();
        let overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let exp_cfg = config::load(&file, &overrides).unwrap_or_else(|e| panic!("{exp}: {e:#}"));
        let seed = exp_cfg.train.seed;
        let job = relaxflow::runner::train::open(exp_cfg, exp, Device::Cpu, &ws).unwrap_or_else(|e| panic!("{exp}: {e:#}"));
        tch::manual_seed(seed);
        job.data_init();
        // A step past every schedule's start (SNF's KL term switches on at kl_start).
        let step = 1_000_000;
        let vars: Vec<Tensor> = job.vs().trainable_variables();
        let grads = |f: &dyn Fn()| -> Vec<Tensor> {
            for v in &vars {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            f();
            vars.iter().map(|v| if v.grad().defined() { v.grad().copy() } else { v.zeros_like() }).collect()
        };
        tch::manual_seed(7);
        let idx = Tensor::randint(job.n_train(), [batch], (Kind::Int64, Device::Cpu));
        let whole = grads(&|| {
            tch::manual_seed(11);
            job.loss_backward(&idx, step);
        });
        let mut split_sum: Vec<Tensor> = whole.iter().map(Tensor::zeros_like).collect();
        for r in 0..2 {
            let s = Split::of(batch, r, 2);
            let g = grads(&|| {
                tch::manual_seed(11);
                with_split(s, || job.loss_backward(&s.rows_of(&idx), step));
            });
            for (acc, g) in split_sum.iter_mut().zip(g) {
                *acc += g * s.weight();
            }
        }
        let scale = whole.iter().map(|g| g.abs().max().double_value(&[])).fold(0.0, f64::max);
        assert!(scale > 0.0, "{exp}: no gradient at all");
        let worst = whole.iter().zip(&split_sum).map(|(a, b)| (a - b).abs().max().double_value(&[])).fold(0.0, f64::max);
        assert!(worst <= 1e-4 * scale, "{exp}: split gradients differ from the whole batch's by {worst:.3e} (largest gradient {scale:.3e})");
    }
}

/// `sweep --slurm-array` writes an array job; its tasks, run here one by one with SLURM_ARRAY_TASK_ID set (as Slurm
/// would), train one run each in the sweep's folder layout; a rerun task keeps its finished run; the plain sweep
/// command afterwards trains nothing and writes the table.
#[test]
fn slurm_array_tasks_run_locally() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let sweep = |extra: &[&str]| {
        let mut c = common::relaxflow();
        c.args(["sweep", "realnvp-moons", "--set", "train.lr=0.001,0.003", "--set", "eval.n_final=64", "--seeds", "1", "--steps", "5"])
            .args(["--out", out.to_str().unwrap(), "--device", "cpu"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        finish(c.spawn().unwrap(), LIMIT, "sweep")
    };
    ok(&sweep(&["--slurm-array"]), "sweep --slurm-array");
    let script = out.join("sweep.sbatch");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array=0-1"), "{text}");
    assert!(!out.join("sweep.json").exists(), "writing the job trains nothing");
    let task = |k: Option<usize>| {
        let mut c = std::process::Command::new("bash");
        c.arg(&script).env("OMP_NUM_THREADS", "1").stdout(Stdio::piped()).stderr(Stdio::piped());
        for v in common::LAUNCH_VARS {
            c.env_remove(v);
        }
        if let Some(k) = k {
            c.env("SLURM_ARRAY_TASK_ID", k.to_string());
        }
        finish(c.spawn().unwrap(), LIMIT, "array task")
    };
    let missing = task(None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("SLURM_ARRAY_TASK_ID"));
    for k in 0..2 {
        ok(&task(Some(k)), &format!("array task {k}"));
    }
    for point in ["train.lr=0.001", "train.lr=0.003"] {
        assert!(out.join(point).join("seed-0/summary.json").exists(), "{point} trained");
    }
    let again = task(Some(1));
    assert!(ok(&again, "task 1 again").contains("finished, kept"));
    let beyond = task(Some(2));
    assert!(String::from_utf8_lossy(&beyond.stderr).contains("--array-task 2"), "{}", String::from_utf8_lossy(&beyond.stderr));
    let table = sweep(&[]);
    let stderr = ok(&table, "sweep after the array");
    assert_eq!(stderr.matches("finished, kept").count(), 2, "{stderr}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(json["points"].as_array().unwrap().len(), 2);
}
