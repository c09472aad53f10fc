//! The CNF family end to end: adjoint training logs forward and backward function evaluations on every metrics line
//! and in the summary, a halted-then-resumed run equals an uninterrupted one, `eval` re-solves the likelihood at
//! another tolerance (an inference key), and the report puts the CNF's checkerboard gap beside the flow's with the
//! ODE-training table.
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relaxflow")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env("OMP_NUM_THREADS", "1").output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "relaxflow {args:?}:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn summary(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const SMALL: [&str; 12] = [
    "data.n_train=2000", "data.n_test=300", "eval.every=10", "train.log_every=5", "eval.n_samples=300", "eval.grid=16",
    "eval.n_eval=200", "train.checkpoint_every=10", "model.train_rtol=1e-3", "model.ode.rtol=1e-4", "model.net.hidden=[16, 16]",
    "train.batch_size=128",
];

fn train_args<'a>(name: &'a str, out: &'a str, steps: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", name, "--device", "cpu", "--out", out, "--steps", steps];
    for s in SMALL.iter().chain(extra) {
        args.extend(["--set", s]);
    }
    args
}

#[test]
fn adjoint_training_logs_nfe_resumes_exactly_and_reaches_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repro");
    let cnf = dir.join("runs").join("cnf-checkerboard");
    let adjoint = ["model.gradient=\"adjoint\""];
    ok(&train_args("cnf-checkerboard", cnf.to_str().unwrap(), "20", &adjoint));

    // Every line has the evaluations of both solves; the summary averages them and labels the likelihood exact.
    let lines = metrics(&cnf);
    assert_eq!(lines.len(), 4);
    for l in &lines {
        let (f, b) = (l["nfe_forward"].as_f64().unwrap(), l["nfe_backward"].as_f64().unwrap());
        assert!(f >= 7.0 && b >= 7.0, "{l}");
        assert!(l["kinetic"].as_f64().unwrap() > 0.0 && l["jacobian"].as_f64().unwrap() > 0.0, "{l}");
    }
    let s = summary(&cnf);
    assert_eq!((s["family"].as_str(), s["nll_kind"].as_str()), (Some("cnf"), Some("exact")));
    let t = &s["estimator"]["training"];
    assert_eq!((t["gradient"].as_str(), t["steps_counted"].as_i64()), (Some("adjoint"), Some(20)));
    let mean_forward = lines.iter().map(|l| l["nfe_forward"].as_f64().unwrap()).sum::<f64>() / 4.0;
    assert!((t["nfe_forward_per_step"].as_f64().unwrap() - mean_forward).abs() < 1e-9, "{t}");
    assert!(s["nfe_per_sample"].as_i64().unwrap() >= 7 && s["nll_gap_nats"].as_f64().is_some());

    // Halted at step 10 and resumed: the same weights' numbers as the uninterrupted run.
    let halted = tmp.path().join("halted");
    let mut args = train_args("cnf-checkerboard", halted.to_str().unwrap(), "20", &adjoint);
    args.extend(["--halt-after", "10"]);
    let o = run(&args);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("halted after step 10"));
    ok(&["train", "--resume", halted.to_str().unwrap(), "--device", "cpu"]);
    let r = summary(&halted);
    assert_eq!(r["test_nll_nats"], s["test_nll_nats"], "resumed vs uninterrupted");
    assert_eq!(metrics(&halted).last().unwrap()["loss"], lines.last().unwrap()["loss"]);

    // eval at a looser tolerance re-solves the ODE: another number, the same kind.
    let e: Value = serde_json::from_str(&ok(&["eval", cnf.to_str().unwrap(), "--device", "cpu", "--set", "model.ode.rtol=1e-2"])).unwrap();
    assert_eq!(e["kind"].as_str(), Some("exact"), "{e}");
    assert!(e["estimator"]["solver"].as_str().unwrap().contains("0.01"), "{e}");

    // The report: the CNF's row beside RealNVP's on the checkerboard, and the ODE-training table with its NFE.
    let flow = dir.join("runs").join("realnvp-checkerboard");
    let mut args = vec!["train", "realnvp-checkerboard", "--device", "cpu", "--out", flow.to_str().unwrap(), "--steps", "20"];
    for s in SMALL.iter().filter(|s| !s.starts_with("model.")).chain(&["model.n_layers=2", "model.hidden=[8]"]) {
        args.extend(["--set", s]);
    }
    ok(&args);
    std::fs::write(dir.join("commands.sh"), "relaxflow train cnf-checkerboard\n").unwrap();
    let out = tmp.path().join("export");
    ok(&["report", dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let md = std::fs::read_to_string(out.join("survey-comparison.md")).unwrap();
    let rows: Vec<&str> = md.lines().filter(|l| l.contains("| cnf-checkerboard |")).collect();
    assert_eq!(rows.len(), 2, "a survey row and an ODE-training row:\n{md}");
    assert!(rows[0].starts_with("| cnf |") && rows[0].contains(&format!("{:.4}", s["nll_gap_nats"].as_f64().unwrap())), "{}", rows[0]);
    let flow_at = md.find("| flow | realnvp-checkerboard |").expect("the flow's row");
    assert!(flow_at < md.find(rows[0]).unwrap(), "families in the survey's order: the flow first");
    let nfe = format!("| adjoint | 0.001 | {:.1} | {:.1} |", t["nfe_forward_per_step"].as_f64().unwrap(), t["nfe_backward_per_step"].as_f64().unwrap());
    assert!(rows[1].contains(&nfe), "{} lacks {nfe}", rows[1]);
}
