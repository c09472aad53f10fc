//! Hostile and clumsy use of the CLI: nothing lost, nothing silent. Each test is one class of fault from issue 14:
//! folders relaxflow did not make, concurrent writers, signals, validation before writing, strict loading, bad
//! data files, libtorch errors, and summaries with non-finite numbers.
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_relaxflow"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn relaxflow(args: &[&str]) -> Output {
    bin().args(args).output().expect("the relaxflow binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Fails with exit code 1 and a one-line message free of C++ frames; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = relaxflow(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "relaxflow {args:?} should fail with exit code 1:\n{err}");
    assert!(!err.contains("frame #") && !err.contains("Exception raised from") && !err.contains("panicked"), "{err}");
    err
}

fn ok(args: &[&str]) -> String {
    let out = relaxflow(args);
    assert!(out.status.success(), "relaxflow {args:?} failed:\n{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A tiny moons run's settings.
const TINY: [&str; 18] = [
    "--set", "data.n_train=1000", "--set", "data.n_test=200", "--set", "train.checkpoint_every=10", "--set", "eval.every=0",
    "--set", "train.log_every=5", "--set", "eval.n_samples=200", "--set", "eval.grid=16", "--set", "model.n_layers=2",
    "--set", "model.hidden=[8]",
];

fn tiny(out: &Path, steps: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["train", "realnvp-moons", "--steps", steps, "--out", out.to_str().unwrap()].iter().map(|s| s.to_string()).collect();
    a.extend(TINY.iter().map(|s| s.to_string()));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn sweeps_never_delete_follow_links_or_keep_stale_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sw");
    let s = out.to_str().unwrap();
    // Someone's folder where the sweep would put a run: a config.toml that is not ours, and a thesis.
    let foreign = out.join("model.hidden=-8-").join("seed-0");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("config.toml"), "x = 1\n").unwrap();
    std::fs::write(foreign.join("thesis.tex"), "years of work").unwrap();
    let mut args = vec!["sweep", "realnvp-moons", "--steps", "10", "--out", s, "--set", "model.hidden=[8],[4]"];
    args.extend(TINY[..16].iter());
    let o = relaxflow(&args);
    assert!(o.status.success(), "one run of two succeeds: {}", stderr(&o));
    assert!(stderr(&o).contains("1 of 2 runs") && stderr(&o).contains("not a relaxflow run"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(foreign.join("thesis.tex")).unwrap(), "years of work");
    assert_eq!(std::fs::read_to_string(foreign.join("config.toml")).unwrap(), "x = 1\n");
    assert!(out.join("model.hidden=-4-/seed-0/summary.json").exists());

    // Run again with another fixed setting: the finished run is a different run, not "kept"; every run fails.
    let mut again = args.clone();
    again.extend(["--set", "train.lr=0.01"]);
    let err = fails(&again);
    assert!(err.contains("every one of the 2 runs"), "{err}");
    let table = std::fs::read_to_string(out.join("sweep.json")).unwrap();
    assert!(table.contains("train.lr") && table.contains("different run"), "{table}");

    // A point folder that is a link out of --out is refused, and what it points to is untouched.
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("seed-0")).unwrap();
    std::fs::write(outside.join("seed-0/config.toml"), "x = 1\n").unwrap();
    let out2 = tmp.path().join("sw2");
    std::fs::create_dir_all(&out2).unwrap();
    std::os::unix::fs::symlink(&outside, out2.join("model.hidden=-8-")).unwrap();
    let mut linked = vec!["sweep", "realnvp-moons", "--steps", "10", "--out", out2.to_str().unwrap(), "--set", "model.hidden=[8],[4]"];
    linked.extend(TINY[..16].iter());
    let o = relaxflow(&linked);
    assert!(o.status.success() && stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(outside.join("seed-0/config.toml")).unwrap(), "x = 1\n");
}

#[test]
fn one_writer_per_run_and_signals_checkpoint_then_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("r");
    let r = run.to_str().unwrap();
    let child = bin().args(refs(&tiny(&run, "200000", &["--set", "train.checkpoint_every=100000"]))).stderr(Stdio::piped()).spawn().unwrap();
    // Wait until the run folder exists (published after its step-0 checkpoint).
    let t0 = std::time::Instant::now();
    while !run.join("checkpoint.pt").exists() {
        assert!(t0.elapsed().as_secs() < 60, "the run never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let err = fails(&["train", "--resume", r]);
    assert!(err.contains("in use by another relaxflow process (pid"), "{err}");
    let err = fails(&refs(&tiny(&run, "10", &[])));
    assert!(err.contains("already holds a run"), "{err}");
    // SIGINT: the step finishes, a checkpoint is written, exit 130 with the resume command.
    unsafe { libc_kill(child.id() as i32, 2) };
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("SIGINT") && err.contains(&format!("--resume {r}")), "{err}");
    let step: i64 = err.split("checkpoint at step ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(step > 0);
    // The resumed run goes on from that step to the end, every logged step once.
    ok(&["train", "--resume", r, "--steps", &(step + 12).to_string()]);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<i64> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_i64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "steps strictly increasing: {steps:?}");
    assert_eq!(*steps.last().unwrap(), step + 12);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn validation_comes_before_any_write_and_every_folder_can_be_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("z");
    let r = run.to_str().unwrap();
    // --steps 0: a finished folder at step 0 that can be trained further.
    ok(&refs(&tiny(&run, "0", &[])));
    assert!(run.join("summary.json").exists());
    ok(&["train", "--resume", r, "--steps", "10"]);
    assert!(run.join("summary.prev.json").exists());
    let config = std::fs::read(run.join("config.toml")).unwrap();
    let err = fails(&["train", "--resume", r, "--steps", "5"]);
    assert!(err.contains("reached step 10"), "{err}");
    let err = fails(&["train", "--resume", r]);
    assert!(err.contains("is finished"), "{err}");
    assert_eq!(std::fs::read(run.join("config.toml")).unwrap(), config, "a refused resume wrote nothing");

    // A run with no checkpoint (older versions, or a user deleting it) starts again from step 0.
    std::fs::remove_file(run.join("checkpoint.pt")).unwrap();
    std::fs::remove_file(run.join("summary.json")).unwrap();
    let o = relaxflow(&["train", "--resume", r]);
    assert!(o.status.success() && stderr(&o).contains("starting again from step 0"), "{}", stderr(&o));

    // Bad configs leave nothing behind.
    for (o, want) in [("eval.n_final=0", "eval.n_final"), ("eval.grid=100000", "eval.grid"), ("train.batch_size=100000000", "train.batch_size")] {
        let bad = tmp.path().join("bad");
        let err = fails(&refs(&tiny(&bad, "5", &["--set", o])));
        assert!(err.contains(want), "{err}");
        assert!(!bad.exists());
    }
    let err = fails(&["train", "../../x"]);
    assert!(err.contains("is not an experiment name"), "{err}");
}

#[test]
fn trained_runs_load_strictly_and_sample_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("a");
    let r = run.to_str().unwrap();
    ok(&refs(&tiny(&run, "10", &["--set", "data.n_test=1"])));
    // One test point: the standard error is NaN (null in JSON), and compare still reads the run.
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert!(s["test_nll_stderr"].is_null());
    ok(&["compare", r, "--out", tmp.path().join("cmp").to_str().unwrap()]);

    let err = fails(&["eval", r, "--set", "model.n_layers=1"]);
    assert!(err.contains("model.n_layers") && err.contains("changes the trained"), "{err}");
    let err = fails(&["sample", r, "-n", "5", "--out", tmp.path().join("t.npy").to_str().unwrap(), "--temperature", "inf"]);
    assert!(err.contains("--temperature"), "{err}");
    // Many samples stream to disk in blocks.
    let big = tmp.path().join("big.npy");
    ok(&["sample", r, "-n", "123457", "--out", big.to_str().unwrap()]);
    assert_eq!(relaxflow::data::npy::read(&big).unwrap().size(), vec![123457, 2]);
    let err = fails(&["sample", r, "-n", "1000000", "--out", tmp.path().join("big.png").to_str().unwrap()]);
    assert!(err.contains("at most"), "{err}");

    // A damaged checkpoint is refused by eval and by resume, by name.
    let ckpt = run.join("checkpoint.pt");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(&["eval", r]);
    assert!(err.contains("checkpoint.pt") && err.contains("checkpoint"), "{err}");
}

#[test]
fn bad_data_and_libtorch_failures_are_clean_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    // A .npy whose header promises more rows than the file holds.
    let pts = tmp.path().join("p.npy");
    tch::Tensor::randn([100, 2], (tch::Kind::Double, tch::Device::Cpu)).write_npy(&pts).unwrap();
    let b = std::fs::read(&pts).unwrap();
    std::fs::write(&pts, &b[..b.len() - 160]).unwrap();
    let err = fails(&refs(&tiny(&out, "5", &["--set", &format!("data.path={}", pts.display())])));
    assert!(err.contains("truncated") && err.contains("p.npy"), "{err}");
    // A constant column.
    let csv = tmp.path().join("c.csv");
    std::fs::write(&csv, (0..50).map(|i| format!("{},1\n", i as f64 * 0.1)).collect::<String>()).unwrap();
    let err = fails(&refs(&tiny(&out, "5", &["--set", &format!("data.path={}", csv.display())])));
    assert!(err.contains("column 1") && err.contains("degenerate"), "{err}");
    // libtorch cannot allocate: a clean message, exit 1, no run folder.
    let err = fails(&refs(&tiny(&out, "5", &["--set", "model.hidden=[1000000,1000000]"])));
    assert!(err.contains("allocate"), "{err}");
    assert!(!out.exists());
}

/// `sweep --jobs 2`: the runs are child processes; their numbers equal an in-process sweep's; a signal to the sweep
/// reaches every running child once (each checkpoints and stops), and the same command then finishes the sweep.
#[test]
fn parallel_sweeps_match_serial_ones_and_stop_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = |out: &Path, jobs: &str, steps: &str| -> Vec<String> {
        let mut a: Vec<String> = ["sweep", "realnvp-moons", "--seeds", "2", "--steps", steps, "--jobs", jobs, "--out", out.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(TINY.iter().map(|s| s.to_string()));
        a
    };
    let nll = |dir: &Path, seed: i64| -> f64 {
        let text = std::fs::read_to_string(dir.join(format!("default/seed-{seed}/summary.json"))).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["test_nll_nats"].as_f64().unwrap()
    };
    let (serial, parallel) = (tmp.path().join("serial"), tmp.path().join("parallel"));
    ok(&refs(&sweep(&serial, "1", "30")));
    let out = relaxflow(&refs(&sweep(&parallel, "2", "30")));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("[default/seed-0]") && err.contains("[default/seed-1]"), "child output is relayed with its run:\n{err}");
    for seed in [0, 1] {
        let (a, b) = (nll(&serial, seed), nll(&parallel, seed));
        assert!((a - b).abs() < 1e-3 * a.abs().max(1.0), "seed {seed}: serial {a} vs parallel {b}");
    }
    assert_ne!(nll(&parallel, 0), nll(&parallel, 1), "the seeds are different runs");
    let table = std::fs::read_to_string(parallel.join("sweep.json")).unwrap();
    assert_eq!(table.matches("\"done\"").count(), 2, "{table}");

    // SIGTERM to the sweep while both children train: both checkpoint and stop, the sweep exits 143.
    let long = tmp.path().join("long");
    let mut args = sweep(&long, "2", "200000");
    args.extend(["--set", "train.checkpoint_every=100000"].iter().map(|s| s.to_string()));
    let child = bin().args(refs(&args)).stderr(Stdio::piped()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !(long.join("default/seed-0/checkpoint.pt").exists() && long.join("default/seed-1/checkpoint.pt").exists()) {
        assert!(t0.elapsed().as_secs() < 60, "the runs never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    unsafe { libc_kill(child.id() as i32, 15) };
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("run the same command again to continue"), "{err}");
    for seed in [0, 1] {
        let ckpt = format!("[default/seed-{seed}] error: stopped by SIGTERM: checkpoint at step ");
        assert!(err.contains(&ckpt), "seed {seed} checkpointed on the signal:\n{err}");
    }
    // The same command with fewer steps than were reached would go back; with the original --steps it would run
    // forever, so finish each run at its checkpoint + 5 steps through `train --resume`, then the sweep keeps them.
    for seed in [0, 1] {
        let run = long.join(format!("default/seed-{seed}"));
        let text = std::fs::read_to_string(&run.join("run.json")).unwrap();
        assert!(text.contains("realnvp-moons"));
        let at: i64 = err.split(&format!("[default/seed-{seed}] error: stopped by SIGTERM: checkpoint at step ")).nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        ok(&["train", "--resume", run.to_str().unwrap(), "--steps", &(at + 5).to_string()]);
        assert!(run.join("summary.json").exists());
    }
}

#[test]
fn a_time_limit_ends_training_at_a_log_step_and_the_run_is_evaluated() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("t");
    // A limit of 6 microseconds is past at the first log step (step 5 of 1000).
    let out = relaxflow(&refs(&tiny(&run, "1000", &["--set", "train.time_limit_min=1e-7"])));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("time_limit_min = 0.0000001 reached after step 5 of 1000"), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!((s["steps"].as_i64(), s["planned_steps"].as_i64()), (Some(5), Some(1000)), "{s}");
    assert!(s["test_nll_nats"].as_f64().unwrap().is_finite());
    // Without a limit the summary has no planned_steps.
    let full = tmp.path().join("f");
    ok(&refs(&tiny(&full, "5", &[])));
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(full.join("summary.json")).unwrap()).unwrap();
    assert!(s.get("planned_steps").is_none(), "{s}");
    let bad = tmp.path().join("bad");
    let err = fails(&refs(&tiny(&bad, "5", &["--set", "train.time_limit_min=-1"])));
    assert!(err.contains("train.time_limit_min"), "{err}");
    assert!(!bad.exists());
}
