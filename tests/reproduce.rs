//! `scripts/reproduce.sh`'s logic, with a stand-in binary (tests/fixtures/stub-relaxflow.sh) that only records its
//! commands: which runs each profile makes, on which device and with which time budget, and that WINDOW_MIN stops a
//! profile part-way (exit 3) so that the same command later resumes the interrupted runs and keeps the finished ones.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `bash scripts/reproduce.sh PROFILE` in `dir` with the stand-in; returns its output and the commands it ran.
fn reproduce(dir: &Path, profile: &str, env: &[(&str, &str)]) -> (Output, Vec<String>) {
    let log = dir.join("commands.log");
    let _ = std::fs::remove_file(&log);
    let mut c = Command::new("bash");
    c.arg(root().join("scripts/reproduce.sh")).arg(profile).current_dir(dir);
    c.env("BIN", root().join("tests/fixtures/stub-relaxflow.sh")).env("STUB_LOG", &log).env_remove("WINDOW_MIN").env_remove("DEVICE");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("bash runs");
    let lines = std::fs::read_to_string(&log).unwrap_or_default().lines().map(String::from).collect();
    (out, lines)
}

fn line<'a>(lines: &'a [String], start: &str) -> &'a str {
    lines.iter().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no command `{start} ...` in:\n{}", lines.join("\n")))
}

#[test]
fn the_gpu_profile_trains_images_on_cuda_with_budgets_and_2d_on_the_cpu_cores() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, lines) = reproduce(tmp.path(), "gpu", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let glow = line(&lines, "train glow-mnist ");
    assert!(glow.contains("--device cuda") && glow.contains("train.time_limit_min=10 "), "{glow}");
    for exp in ["realnvp-mnist", "vae-mnist", "maf-mnist", "ddpm-mnist", "scoresde-mnist", "diffflow-mnist", "survae-maxpool-mnist", "iwae-binary-mnist", "diffflow-checkerboard"] {
        let l = line(&lines, &format!("train {exp} "));
        assert!(l.contains("--device cuda") && l.contains("train.time_limit_min="), "{l}");
    }
    let budget: f64 = lines.iter().filter_map(|l| l.split("train.time_limit_min=").nth(1)).map(|v| v.split(' ').next().unwrap().parse::<f64>().unwrap()).sum();
    assert!(budget <= 50.0, "{budget} minutes of training budgets leave too little of the hour for evaluation");
    for exp in ["realnvp-checkerboard", "nsf-checkerboard", "snf-rings", "snf-doublewell"] {
        let l = line(&lines, &format!("train {exp} "));
        assert!(l.contains("--device cpu") && l.ends_with("OMP=4") && !l.contains("time_limit"), "2D runs at the paper's size on the CPU: {l}");
    }
    assert!(line(&lines, "sweep snf-paper-rnvp-hmc ").contains("--device cpu"));
    assert!(line(&lines, "report ").contains("--out notebooks-export/gpu"), "the committed CPU report stays");
    assert!(!lines.iter().any(|l| l.contains("--steps")), "no CPU-profile shortening in the GPU profile");
}

#[test]
fn the_cpu_profile_is_unchanged_by_the_lanes() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, lines) = reproduce(tmp.path(), "cpu", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!lines.iter().any(|l| l.contains("--device") || l.contains("time_limit")), "{lines:?}");
    assert!(line(&lines, "train glow-mnist ").contains("--steps 4000"));
    assert!(line(&lines, "train diffflow-checkerboard ").contains("model.net.hidden=[64,64]"));
    assert!(line(&lines, "report ").ends_with("--out notebooks-export | OMP="), "{}", line(&lines, "report "));
    let (out, _) = reproduce(tmp.path(), "tpu", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown PROFILE=tpu"));
}

#[test]
fn a_window_stops_every_lane_and_the_same_command_continues() {
    let tmp = tempfile::tempdir().unwrap();
    // Every training takes 30 s, the window 9 s: the first run of each lane is stopped by SIGTERM.
    let (out, lines) = reproduce(tmp.path(), "gpu", &[("WINDOW_MIN", "0.15"), ("STUB_SLEEP", "30")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("window of 0.15 minutes over"), "{err}");
    assert!(line(&lines, "train mnist-classifier ").contains("--device cuda"));
    let runs = tmp.path().join("runs/reproduce/gpu/runs");
    assert!(runs.join("mnist-classifier/config.toml").exists() && !runs.join("mnist-classifier/summary.json").exists());
    // Without a window the same command resumes the interrupted runs (on their lane's device) and finishes.
    let (out, lines) = reproduce(tmp.path(), "gpu", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resumed = line(&lines, "train --resume runs/reproduce/gpu/runs/mnist-classifier");
    assert!(resumed.contains("--device cuda"), "{resumed}");
    assert!(line(&lines, "train --resume runs/reproduce/gpu/runs/realnvp-checkerboard").contains("--device cpu"));
    assert!(!lines.iter().any(|l| l.starts_with("train mnist-classifier ")), "an interrupted run is resumed, not restarted");
    let bad = reproduce(tmp.path(), "gpu", &[("WINDOW_MIN", "soon")]).0;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("WINDOW_MIN must be a positive number"));
}
