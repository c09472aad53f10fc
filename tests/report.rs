//! compare, sweep and report on tiny real runs: the files exist, the notebook is valid nbformat 4 with every image it
//! references embedded, and the numbers printed are the numbers in the runs' summary.json.
use base64::Engine;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_relaxflow")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "relaxflow {args:?} failed:\n{stderr}\n{stdout}");
    stdout.to_string()
}

fn summary(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Small, fast settings for a 2D experiment (30 steps).
const SMALL: [&str; 8] = [
    "data.n_train=2000", "data.n_test=500", "eval.every=10", "train.log_every=10", "eval.n_samples=500", "eval.grid=24",
    "eval.n_eval=200", "train.checkpoint_every=10",
];

/// `args` followed by every SMALL setting and `--steps 30`.
fn small<'a>(mut args: Vec<&'a str>) -> Vec<&'a str> {
    for s in SMALL {
        args.extend(["--set", s]);
    }
    args.extend(["--steps", "30"]);
    args
}

fn train(name: &str, out: &Path, extra: &[&str]) {
    let mut args = small(vec!["train", name, "--device", "cpu", "--out", out.to_str().unwrap()]);
    args.extend(extra);
    ok(&args);
}

#[test]
fn sweep_compare_and_report_write_what_they_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repro");
    let runs = dir.join("runs");
    let flow = runs.join("realnvp-checkerboard");
    train("realnvp-checkerboard", &flow, &["--set", "model.n_layers=2", "--set", "model.hidden=[8]"]);
    let gauss = runs.join("planar-8gaussians");
    train("planar-8gaussians", &gauss, &["--set", "model.n_layers=4"]);
    let s = summary(&flow);
    // The new per-run measures are in summary.json.
    assert_eq!(s["support_region"], "support");
    assert!(s["convergence"]["steps"].as_i64().unwrap() <= 30 && s["convergence"]["n_evals"] == 3, "{}", s["convergence"]);
    assert_eq!(s["sampling"][0]["setting"], "as trained");
    let g = summary(&gauss);
    assert_eq!(g["mode_coverage"]["modes"], 8);
    let shares: f64 = g["mode_coverage"]["shares"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((shares + g["mode_coverage"]["unassigned"].as_f64().unwrap() - 1.0).abs() < 1e-9, "every sample is counted once");
    assert!(g["true_entropy_nats"].as_f64().is_some() && g["support_region"].as_str().unwrap().contains("99%"));

    // compare: markdown, CSV and a contact sheet; the CSV's NLL cell is the summary's number.
    let prefix = tmp.path().join("cmp");
    ok(&["compare", flow.to_str().unwrap(), gauss.to_str().unwrap(), "--out", prefix.to_str().unwrap()]);
    let csv = std::fs::read_to_string(prefix.with_extension("csv")).unwrap();
    let nll = format!("{:.4} ± {:.4}", s["test_nll_nats"].as_f64().unwrap(), s["test_nll_stderr"].as_f64().unwrap());
    assert!(csv.contains(&nll), "{csv}");
    assert!(std::fs::read(prefix.with_extension("png")).unwrap().starts_with(b"\x89PNG"));

    // A sweep over two values and two seeds: folders, table, plot; a second call keeps the finished runs.
    let sw = dir.join("sweeps").join("layers");
    let sw_s = sw.to_str().unwrap();
    let args = small(vec!["sweep", "realnvp-checkerboard", "--set", "model.n_layers=2,4", "--set", "model.hidden=[8]", "--seeds", "2", "--out", sw_s]);
    let table = ok(&args);
    for point in ["model.n_layers=2", "model.n_layers=4"] {
        for seed in [0, 1] {
            assert!(sw.join(point).join(format!("seed-{seed}")).join("summary.json").exists(), "{point} seed {seed}");
        }
    }
    let a = summary(&sw.join("model.n_layers=2/seed-0"));
    let b = summary(&sw.join("model.n_layers=2/seed-1"));
    let (x, y) = (a["test_nll_nats"].as_f64().unwrap(), b["test_nll_nats"].as_f64().unwrap());
    assert_ne!(x, y, "seeds differ");
    let mean = (x + y) / 2.0;
    let sd = ((x - mean).powi(2) + (y - mean).powi(2)).sqrt();
    assert!(table.contains(&format!("{mean:.4} ± {sd:.4}")), "sweep mean ± sd over seeds:\n{table}");
    assert!(sw.join("sweep.png").exists() && sw.join("sweep.csv").exists());
    let stamp = std::fs::metadata(sw.join("model.n_layers=2/seed-0/summary.json")).unwrap().modified().unwrap();
    ok(&args);
    assert_eq!(std::fs::metadata(sw.join("model.n_layers=2/seed-0/summary.json")).unwrap().modified().unwrap(), stamp, "kept, not retrained");

    // report: the sweep read against a one-point baseline sweep.
    let base = dir.join("sweeps").join("base");
    ok(&small(vec!["sweep", "realnvp-checkerboard", "--set", "model.n_layers=2", "--set", "model.hidden=[8]", "--out", base.to_str().unwrap()]));
    std::fs::write(
        dir.join("ablations.json"),
        r#"[{"title": "layers", "sweep": "sweeps/layers", "baseline": "sweeps/base", "xlabel": "couplings"}]"#,
    )
    .unwrap();
    std::fs::write(dir.join("commands.sh"), "relaxflow train realnvp-checkerboard\n").unwrap();
    // The SNF paper's table: one row's sweep over two trainings, at the paper's metric.
    let amc = dir.join("sweeps").join("snf-paper-rnvp-amc");
    ok(&[
        "sweep", "snf-paper-rnvp-amc", "--seeds", "2", "--steps", "20", "--out", amc.to_str().unwrap(), "--set", "eval.diag_samples=3000",
        "--set", "eval.diag_repeats=3", "--set", "model.mc_steps=2", "--set", "eval.n_samples=300", "--set", "eval.grid=16",
    ]);
    let rw: Vec<f64> = (0..2)
        .map(|k| summary(&amc.join(format!("default/seed-{k}")))["diagnostics"]["paper_free_energy_error"]["reweighted"]["combined_kT"].as_f64().unwrap())
        .collect();
    let (amc_mean, amc_sd) = ((rw[0] + rw[1]) / 2.0, (rw[0] - rw[1]).abs() / 2.0);
    let out = tmp.path().join("export");
    ok(&["report", dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let md = std::fs::read_to_string(out.join("survey-comparison.md")).unwrap();
    for run in [&flow, &gauss] {
        let s = summary(run);
        let nll = format!("{:.4} ± {:.4}", s["test_nll_nats"].as_f64().unwrap(), s["test_nll_stderr"].as_f64().unwrap());
        let row = md.lines().find(|l| l.contains(&format!("| {} |", s["experiment"].as_str().unwrap()))).unwrap();
        assert!(row.contains(&nll), "{row} lacks {nll}");
        if let Some(gap) = s["nll_gap_nats"].as_f64() {
            assert!(row.contains(&format!("{gap:.4}")), "{row}");
        }
    }
    assert!(md.contains(&format!("{mean:.4} ± {sd:.4}")), "the ablation table holds the sweep's numbers");
    assert!(md.contains("relaxflow train realnvp-checkerboard") && md.contains("Figure 1"));
    let row = md.lines().find(|l| l.starts_with("| RNVP + adaptive MC |")).expect("the SNF table's adaptive row");
    assert!(row.contains(&format!("{amc_mean:.3} ± {amc_sd:.3}")) && row.contains("0.419 ± 0.045") && row.contains("| 2 |"), "{row}");
    // Every image the markdown references exists beside it.
    for part in md.split("](survey-comparison-files/").skip(1) {
        let name = part.split(')').next().unwrap();
        assert!(out.join("survey-comparison-files").join(name).exists(), "{name}");
    }

    // The notebook: nbformat 4 JSON whose markdown cells attach every image they reference, as PNGs.
    let nb: Value = serde_json::from_str(&std::fs::read_to_string(out.join("survey-comparison.ipynb")).unwrap()).unwrap();
    assert_eq!(nb["nbformat"], 4);
    assert!(nb["metadata"].is_object());
    let cells = nb["cells"].as_array().unwrap();
    let mut images = 0;
    for c in cells {
        assert!(c["cell_type"] == "markdown" && c["id"].is_string() && c["metadata"].is_object());
        let source: String = c["source"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        for part in source.split("(attachment:").skip(1) {
            let name = part.split(')').next().unwrap();
            let data = c["attachments"][name]["image/png"].as_str().unwrap_or_else(|| panic!("{name} not attached"));
            let png = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
            assert!(png.starts_with(b"\x89PNG"), "{name}");
            images += 1;
        }
    }
    // Speed plot, contact sheets per dataset, Figure 1, the ablation plot and the loss curves.
    assert!(images >= 6, "{images} images");
    let text: String = cells.iter().flat_map(|c| c["source"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string())).collect();
    assert!(text.contains(&format!("{mean:.4} ± {sd:.4}")), "the notebook holds the same numbers");
}
