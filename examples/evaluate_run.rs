//! Evaluate a run folder from code: train a short run with the library's run lifecycle (the same as
//! `relaxflow train`), reopen the folder with its weights, and measure the test NLL and samples yourself.
//!
//! `cargo run --release --example evaluate_run [RUN]` (without RUN it trains a small realnvp-moons run first)
use anyhow::Result;
use relaxflow::runner::evaluate::test_nll;
use relaxflow::{open_run, train, TrainOptions, Workspace};
use std::path::{Path, PathBuf};
use tch::Device;

/// A `steps`-step realnvp-moons run in `out` (experiments from `ws`).
fn small_run(out: &Path, steps: i64, ws: &Workspace) -> Result<PathBuf> {
    let overrides = ["model.n_layers=4", "model.hidden=[32]", "eval.n_samples=500", "eval.grid=32"].map(String::from).to_vec();
    train(&TrainOptions { experiment: Some("realnvp-moons".into()), overrides, steps: Some(steps), out: Some(out.into()), device: Some("cpu".into()), workspace: ws.clone(), ..Default::default() })
}

/// The run's test NLL (nats) and its kind, recomputed from the reopened folder.
fn evaluate(run: &Path) -> Result<(f64, String)> {
    let s = open_run(run, Device::Cpu)?;
    let e = test_nll(&*s.model, &s.data, s.exp.eval.n_final, s.exp.eval.batch_size, Device::Cpu);
    let samples = tch::no_grad(|| s.model.sample(5));
    println!("{}: test NLL {:.4} nats ({}), 5 samples of shape {:?}", run.display(), e.nll_nats, e.kind.label(), samples.size());
    Ok((e.nll_nats, e.kind.label().to_string()))
}

fn main() -> Result<()> {
    let ws = Workspace::resolve(None, None);
    match std::env::args().nth(1) {
        Some(run) => evaluate(Path::new(&run)).map(|_| ()),
        None => {
            let dir = tempfile::tempdir()?;
            let run = small_run(&dir.path().join("moons"), 500, &ws)?;
            evaluate(&run).map(|_| ())
        }
    }
}

#[test]
fn a_reopened_run_gives_the_number_its_summary_holds() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace { experiments: Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments"), runs: dir.path().join("runs") };
    let run = small_run(&dir.path().join("moons"), 50, &ws).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let (nll, kind) = evaluate(&run).unwrap();
    assert_eq!(kind, "exact");
    let recorded = summary["test_nll_nats"].as_f64().unwrap();
    assert!((nll - recorded).abs() < 1e-6, "reopened {nll} vs summary {recorded}");
    assert!(nll.is_finite(), "{nll}");
}
