//! Every named experiment trains for a few steps on the CPU and writes a complete run folder.
mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn every_experiment_takes_steps_on_cpu() {
    let root = env!("CARGO_MANIFEST_DIR");
    let tmp = tempfile::tempdir().unwrap();
    let names = std::fs::read_dir(format!("{root}/experiments")).unwrap();
    // CIFAR-10 experiments read generated batch files in the real format (tests never need the real data set).
    let cifar = tmp.path().join("cifar-data");
    common::write_cifar10(&cifar.join("cifar10").join("cifar-10-batches-bin"));
    let cifar_dir = format!("data.dir={:?}", cifar.to_str().unwrap());
    let mut count = 0;
    for entry in names {
        let file = entry.unwrap().file_name().to_string_lossy().to_string();
        let Some(name) = file.strip_suffix(".toml") else { continue };
        let out = tmp.path().join(name);
        let small = [
            "data.n_train=512", "data.n_test=256", "eval.n_samples=256", "eval.grid=16", "eval.diag_samples=2000",
            "eval.diag_repeats=2", "eval.every=2", "train.log_every=1", "train.sample_every=2",
        ];
        let mut args = vec!["train", name, "--steps", "3", "--device", "cpu", "--out", out.to_str().unwrap()];
        for s in &small {
            args.extend(["--set", s]);
        }
        // Image data: tiny batches; then the smoke-test settings the model kind declares in the registry.
        let exp = relaxflow::experiment::config::load(&Path::new(root).join("experiments").join(&file), &[]).unwrap();
        let entry = relaxflow::experiment::registry::entry_for(&exp.model, &file).unwrap();
        let image = matches!(exp.data.name.as_deref(), Some("mnist" | "fashion-mnist" | "cifar10"));
        let mut extra: Vec<&str> = entry.smoke.to_vec();
        if exp.data.name.as_deref() == Some("cifar10") {
            extra.push(&cifar_dir);
        }
        if image {
            extra.extend(["train.batch_size=4", "eval.n_final=2", "eval.n_eval=2", "eval.batch_size=2", "eval.n_samples=2", "eval.quality_samples=8"]);
            extra.extend(entry.smoke_image);
        }
        // Simulation-based inference: one observation, a small reference and two C2ST folds.
        let sbi = exp.data.name.as_deref().and_then(relaxflow::data::sbi::Task::from_name).is_some();
        if sbi {
            extra.extend(["eval.sbi_observations=1", "eval.sbi_samples=200", "eval.c2st_folds=2"]);
        }
        let classifier = entry.family == relaxflow::Family::Classifier;
        for s in &extra {
            args.extend(["--set", s]);
        }
        let o = Command::new(env!("CARGO_BIN_EXE_relaxflow")).args(&args).current_dir(root).output().unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        if classifier {
            let accuracy = summary["test_accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&accuracy), "{name}: test accuracy {accuracy}");
            assert!(summary["test_nll_nats"].as_f64().unwrap().is_finite(), "{name}: cross-entropy not finite");
            assert_eq!((summary["family"].as_str(), summary["steps"].as_i64()), (Some("classifier"), Some(3)), "{name}");
            assert!(out.join("checkpoint.pt").exists() && out.join("metrics.jsonl").exists(), "{name}");
            count += 1;
            continue;
        }
        assert!(summary["test_nll_nats"].as_f64().unwrap().is_finite(), "{name}: NLL not finite");
        assert!(summary["log_prob_ms_per_1000"].as_f64().unwrap() > 0.0, "{name}: likelihood cost not timed");
        assert!(out.join("samples.npy").exists() && out.join("samples/step-000002.png").exists(), "{name}");
        // Image flows: bits/dim from the model's log p(x) and by hand from the logit space agree (where the model has
        // a logit space to check: not after variational dequantization).
        let c = &summary["bits_per_dim_check"];
        if c.is_object() {
            let (by_hand, from_model) = (c["bits_per_dim_by_hand"].as_f64().unwrap(), c["bits_per_dim_from_model"].as_f64().unwrap());
            assert!((by_hand - from_model).abs() < 1e-3, "{name}: bits/dim {from_model} vs by hand {by_hand}");
            assert!((from_model - summary["bits_per_dim"].as_f64().unwrap()).abs() < 1e-9, "{name}");
        }
        if sbi {
            let c2st = summary["sbi"]["c2st_mean"].as_f64().unwrap_or(f64::NAN);
            assert!((0.0..=1.0).contains(&c2st), "{name}: C2ST {c2st} in {}", summary["sbi"]);
        }
        // Energy targets (the data is an energy's exact samples) report importance-sampling diagnostics.
        if summary["family"] == "snf" || summary["dataset"] == "doublewell" || summary["dataset"] == "gmm" {
            let d = &summary["diagnostics"];
            assert!(d["log_z_estimate"]["mean"].as_f64().unwrap().is_finite(), "{name}: no log Z estimate");
        }
        count += 1;
    }
    assert!(count >= 12, "found {count} experiments");
}

