//! The moving average of the weights (`train.ema_decay`) end to end: kept in the checkpoint, resumed exactly, used by
//! the final evaluation, `eval` and `sample` unless `--weights raw`, and named wherever a number came from it.
mod common;

use std::path::Path;
use std::process::Output;
use tch::Tensor;

fn relaxflow(args: &[&str]) -> Output {
    common::relaxflow().args(args).output().expect("the relaxflow binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = relaxflow(args);
    assert!(out.status.success(), "relaxflow {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A small exact-likelihood run (RealNVP on moons), so raw and averaged weights give different, exact NLLs.
fn train(out: &Path, decay: &str, extra: &[&str]) -> Output {
    let steps = extra.iter().position(|a| *a == "--steps").map_or("60", |i| extra[i + 1]);
    let extra: Vec<&str> = extra.iter().enumerate().filter(|(i, a)| **a != "--steps" && (*i == 0 || extra[i - 1] != "--steps")).map(|(_, a)| *a).collect();
    let mut args = vec![
        "train", "realnvp-moons", "--steps", steps, "--out", out.to_str().unwrap(), "--set", "model.n_layers=4", "--set", "model.hidden=[16,16]",
        "--set", "data.n_train=2000", "--set", "data.n_test=500", "--set", "train.checkpoint_every=20", "--set", "eval.every=20",
        "--set", "train.log_every=10", "--set", "eval.n_samples=300", "--set", "eval.grid=16", "--set", "train.lr=3e-3",
    ];
    let set = format!("train.ema_decay={decay}");
    args.extend(["--set", set.as_str()]);
    args.extend(&extra);
    relaxflow(&args)
}

fn summary(run: &Path) -> serde_json::Value {
    json(&std::fs::read_to_string(run.join("summary.json")).unwrap())
}

fn nll(eval: &serde_json::Value) -> f64 {
    eval["nll_nats"].as_f64().unwrap()
}

#[test]
fn the_average_is_used_by_default_resumes_exactly_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let out = train(&a, "0.9", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&a);
    assert_eq!(s["weights"], "ema", "the summary says which weights its numbers are of");
    let run = a.to_str().unwrap();

    // eval: the average by default (the summary's number), the raw weights on request, both named.
    let default = json(&ok(&["eval", run]));
    assert_eq!(default["weights"], "ema");
    assert!((nll(&default) - s["test_nll_nats"].as_f64().unwrap()).abs() < 1e-9, "{default} vs {s}");
    let raw = json(&ok(&["eval", run, "--weights", "raw"]));
    assert_eq!(raw["weights"], "raw");
    assert!((nll(&raw) - nll(&default)).abs() > 1e-6, "decay 0.9 after 60 steps must move the weights: {} vs {}", nll(&raw), nll(&default));
    let ema = json(&ok(&["eval", run, "--weights", "ema"]));
    assert_eq!(nll(&ema), nll(&default));

    // The test NLL logged during training is of the averaged weights too, and says so.
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = metrics.lines().map(json).filter(|l| l.get("test_nll").is_some_and(|v| !v.is_null())).collect();
    assert!(!evals.is_empty(), "{metrics}");
    assert!(evals.iter().all(|l| l["eval_weights"] == "ema"), "{metrics}");

    // The checkpoint holds the average by name, beside the raw weights and the optimizer's flat copy.
    let named = Tensor::load_multi(a.join("checkpoint.pt")).unwrap();
    let averaged: Vec<&String> = named.iter().map(|(k, _)| k).filter(|k| k.starts_with("ema.model.")).collect();
    let weights = named.iter().filter(|(k, _)| k.starts_with("model.")).count();
    assert!(!averaged.is_empty() && averaged.len() <= weights, "{averaged:?}");
    assert!(named.iter().any(|(k, _)| k == "ema.flat") && named.iter().any(|(k, _)| k == "ema.updates"));

    // sample draws with the average by default: the same seed gives the --weights ema samples, not the raw ones.
    let draw = |w: &str| {
        let f = tmp.path().join(format!("s-{w}.npy"));
        ok(&["sample", run, "-n", "50", "--seed", "3", "--out", f.to_str().unwrap(), "--weights", w]);
        Tensor::read_npy(&f).unwrap()
    };
    let (d, e, r) = (draw("default"), draw("ema"), draw("raw"));
    assert!(d.equal(&e));
    assert!(!d.equal(&r));

    // Killed after step 50 (checkpoint at 40) and resumed: the average resumes with the moments, to the same digits.
    let b = tmp.path().join("b");
    let halted = train(&b, "0.9", &["--halt-after", "50"]);
    assert!(!halted.status.success() && String::from_utf8_lossy(&halted.stderr).contains("halted after step 50"));
    ok(&["train", "--resume", b.to_str().unwrap()]);
    assert_eq!(summary(&b)["test_nll_nats"], s["test_nll_nats"], "resumed average differs from the uninterrupted one");
    assert_eq!(nll(&json(&ok(&["eval", b.to_str().unwrap(), "--weights", "raw"]))), nll(&raw));
}

#[test]
fn decay_zero_is_no_average_and_asking_for_one_that_is_not_there_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let out = train(&a, "0", &["--steps", "10"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&a);
    assert!(s.get("weights").is_none(), "no average, no `weights` key: {s}");
    let run = a.to_str().unwrap();
    let e = json(&ok(&["eval", run]));
    assert!(e.get("weights").is_none(), "{e}");
    let err = relaxflow(&["eval", run, "--weights", "ema"]);
    assert!(!err.status.success());
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("--weights ema") && msg.contains("train.ema_decay") && msg.contains("checkpoint.pt"), "{msg}");
    assert_eq!(json(&ok(&["eval", run, "--weights", "raw"]))["weights"], "raw");

    for bad in ["1", "-0.1", "1.5"] {
        let out = train(&tmp.path().join(format!("bad{bad}")), bad, &[]);
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && msg.contains("train.ema_decay") && msg.contains(bad), "{msg}");
    }
    let out = train(&tmp.path().join("graph"), "0.99", &["--set", "train.cuda_graph=true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("train.cuda_graph"));
}

/// A tiny average (decay 1e-9) is the raw weights to rounding: the average and the raw weights then give one NLL, so
/// the average really is of these weights (not of some other copy).
#[test]
fn a_vanishing_decay_averages_to_the_raw_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let out = train(&a, "1e-9", &["--steps", "20"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = a.to_str().unwrap();
    let (raw, ema) = (json(&ok(&["eval", run, "--weights", "raw"])), json(&ok(&["eval", run, "--weights", "ema"])));
    assert!((nll(&raw) - nll(&ema)).abs() < 1e-6 * nll(&raw).abs().max(1.0), "{raw} vs {ema}");
}
