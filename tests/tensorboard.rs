//! TensorBoard event files read back with the `tensorboard` package (installed into .venv by `make test`): every
//! scalar of metrics.jsonl at its step with its value (as f32, within one f32 ulp), the sample pictures decodable and equal to the run's
//! PNGs, the config and summary as text; a halted and resumed run has each step once; `train.tensorboard = false`
//! writes no tb/ and changes nothing else; a sweep's points are separate TensorBoard runs.
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn relaxflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relaxflow")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("the relaxflow binary runs")
}

fn ok(args: &[&str]) -> String {
    let o = relaxflow(args);
    assert!(o.status.success(), "relaxflow {args:?}:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// What TensorBoard's reader finds under `logdir`, by run (see tests/tb_read.py), its images written to `images`.
fn tensorboard(logdir: &Path, images: &Path) -> Value {
    std::fs::create_dir_all(images).unwrap();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let o = Command::new(&python)
        .args([Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tb_read.py").as_path(), logdir, images])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `make test`: it installs torch and tensorboard into .venv)", python.display()));
    assert!(o.status.success(), "tests/tb_read.py (is tensorboard installed? `make test` installs it):\n{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const SMALL: [&str; 10] = [
    "--set", "train.log_every=10", "--set", "eval.every=20", "--set", "train.sample_every=20", "--set", "train.checkpoint_every=15", "--set",
    "eval.n_samples=500",
];

fn train(out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["train", "realnvp-moons", "--steps", "60", "--device", "cpu", "--out", out.to_str().unwrap()];
    args.extend(SMALL);
    args.extend(extra);
    ok(&args)
}

/// Every number of every metrics line is TensorBoard's scalar at that step (f32, within one ulp), tagged by `scalar_tag`, and no
/// tag has a step twice.
fn scalars_match(run: &Path, tb: &Value) {
    let lines = metrics(run);
    let mut expected = 0;
    for line in &lines {
        let step = line["step"].as_i64().unwrap();
        for (key, v) in line.as_object().unwrap() {
            let Some(v) = v.as_f64().filter(|_| key != "step") else { continue };
            let tag = relaxflow::tracking::scalar_tag(key, line);
            let series = tb["scalars"][&tag].as_array().unwrap_or_else(|| panic!("no scalar {tag} in {}", tb["scalars"]));
            let hits: Vec<f64> = series.iter().filter(|p| p[0].as_i64() == Some(step)).map(|p| p[1].as_f64().unwrap()).collect();
            assert_eq!(hits.len(), 1, "{tag} at step {step}: {hits:?}");
            // TensorBoard stores f32: its value is the f32 nearest the logged f64. serde_json's default parser may
            // read metrics.jsonl one f64 ulp off, which can move a value sitting on an f32 midpoint by one f32 ulp.
            assert!((hits[0] - v).abs() <= f32::EPSILON as f64 * v.abs(), "{tag} at step {step}: {} vs {v}", hits[0]);
            expected += 1;
        }
    }
    let total: usize = tb["scalars"].as_object().unwrap().values().map(|s| s.as_array().unwrap().len()).sum();
    assert_eq!(total, expected, "TensorBoard holds exactly the metrics lines' numbers");
}

#[test]
fn event_files_read_back_with_tensorboard() {
    let tmp = tempfile::tempdir().unwrap();
    let logdir = tmp.path().join("runs");
    let run = logdir.join("moons");
    train(&run, &[]);
    let images = tmp.path().join("images");
    let all = tensorboard(&logdir, &images);
    let runs: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(runs, vec!["moons/tb"], "{all}");
    let tb = &all["moons/tb"];
    scalars_match(&run, tb);
    assert_eq!(tb["scalars"]["test_nll/exact"].as_array().map(Vec::len), Some(3), "the test NLL at 20, 40, 60 carries its kind");
    // Pictures at every picture step and the final one, the same pixels as the run's own PNGs.
    let pics = tb["images"]["samples"].as_array().unwrap();
    assert_eq!(pics.iter().map(|p| p[0].as_i64().unwrap()).collect::<Vec<_>>(), vec![20, 40, 60]);
    for p in pics {
        let from_tb = image::open(p[3].as_str().unwrap()).unwrap().to_rgb8();
        let own = image::open(run.join("samples").join(format!("step-{:06}.png", p[0].as_i64().unwrap()))).unwrap().to_rgb8();
        assert_eq!((from_tb.width() as i64, from_tb.height() as i64), (p[1].as_i64().unwrap(), p[2].as_i64().unwrap()));
        assert!(from_tb == own, "step {}: the image decodes to the run's picture", p[0]);
    }
    // The resolved config at step 0 and the summary at the end, as text.
    let config = &tb["text"]["config"][0];
    assert_eq!(config[0], 0);
    assert!(config[1].as_str().unwrap().contains(&std::fs::read_to_string(run.join("config.toml")).unwrap()));
    let summary = &tb["text"]["summary"][0];
    assert_eq!(summary[0], 60);
    assert!(summary[1].as_str().unwrap().contains(std::fs::read_to_string(run.join("summary.json")).unwrap().trim()));

    // Off: no tb/, and the run folder has the same files otherwise (and the same numbers: TensorBoard draws nothing).
    let off = tmp.path().join("off");
    train(&off, &["--set", "train.tensorboard=false"]);
    assert!(!off.join("tb").exists(), "train.tensorboard = false writes nothing");
    let files = |dir: &Path| -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
        out
    };
    let on_files: BTreeSet<PathBuf> = files(&run).into_iter().filter(|p| !p.starts_with("tb")).collect();
    assert_eq!(on_files, files(&off));
    let nll = |r: &Path| serde_json::from_str::<Value>(&std::fs::read_to_string(r.join("summary.json")).unwrap()).unwrap()["test_nll_nats"].as_f64();
    assert_eq!(nll(&run), nll(&off));
    let losses = |r: &Path| metrics(r).iter().map(|l| l["loss"].as_f64()).collect::<Vec<_>>();
    assert_eq!(losses(&run), losses(&off));
}

#[test]
fn a_halted_and_resumed_run_has_each_step_once() {
    let tmp = tempfile::tempdir().unwrap();
    let logdir = tmp.path().join("runs");
    let run = logdir.join("resumed");
    // Halted after step 50, after a checkpoint at 45: the lines and events at 50 are redone on resume.
    let mut args = vec!["train", "realnvp-moons", "--steps", "60", "--device", "cpu", "--out", run.to_str().unwrap(), "--halt-after", "50"];
    args.extend(SMALL);
    let o = relaxflow(&args);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("halted after step 50"));
    ok(&["train", "--resume", run.to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(relaxflow::tracking::writer::event_files(&run).unwrap().len(), 2);
    let images = tmp.path().join("images");
    let all = tensorboard(&logdir, &images);
    let tb = &all["resumed/tb"];
    scalars_match(&run, tb);
    let loss_steps: Vec<i64> = tb["scalars"]["loss"].as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
    assert_eq!(loss_steps, vec![10, 20, 30, 40, 50, 60]);
    assert_eq!(tb["images"]["samples"].as_array().unwrap().len(), 3, "pictures at 20, 40 and 60 once each");
    assert_eq!(tb["text"]["config"].as_array().unwrap().len(), 1, "the config once");
}

#[test]
fn each_sweep_point_is_its_own_tensorboard_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let mut args = vec!["sweep", "realnvp-moons", "--set", "model.n_layers=2,4", "--seeds", "2", "--steps", "20", "--out", out.to_str().unwrap()];
    args.extend(["--set", "train.log_every=10", "--set", "eval.n_samples=200"]);
    ok(&args);
    let images = tmp.path().join("images");
    let all = tensorboard(&out, &images);
    let runs: BTreeSet<&str> = all.as_object().unwrap().keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = ["model.n_layers=2/seed-0/tb", "model.n_layers=2/seed-1/tb", "model.n_layers=4/seed-0/tb", "model.n_layers=4/seed-1/tb"].into();
    assert_eq!(runs, want);
    for (name, tb) in all.as_object().unwrap() {
        let run = out.join(name.trim_end_matches("/tb"));
        scalars_match(&run, tb);
    }
}

/// A run killed (SIGKILL) mid-training leaves event files TensorBoard reads, and its resume from the last
/// checkpoint (step 500, with lines logged up to at least 700) writes each step once.
#[test]
fn a_killed_run_stays_readable_and_resumes_without_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let logdir = tmp.path().join("runs");
    let run = logdir.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_relaxflow"))
        .args(["train", "realnvp-moons", "--steps", "100000", "--device", "cpu", "--out", run.to_str().unwrap()])
        .args(["--set", "train.log_every=10", "--set", "train.checkpoint_every=500", "--set", "train.sample_every=0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 70 {
        assert!(start.elapsed().as_secs() < 120, "the run did not reach step 700 in two minutes");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let files = relaxflow::tracking::writer::event_files(&run).unwrap();
    let (records, _) = relaxflow::tracking::record::read(&files[0]).unwrap();
    assert!(records.len() >= 70, "{} whole records survive the kill", records.len());
    ok(&["train", "--resume", run.to_str().unwrap(), "--steps", "1000", "--device", "cpu"]);
    let images = tmp.path().join("images");
    let all = tensorboard(&logdir, &images);
    let tb = &all["killed/tb"];
    scalars_match(&run, tb);
    let loss_steps: Vec<i64> = tb["scalars"]["loss"].as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
    assert_eq!(loss_steps, (1..=100).map(|k| 10 * k).collect::<Vec<i64>>());
}
