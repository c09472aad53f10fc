//! `relaxflow compare RUN...`: one row per run, markdown on stdout and CSV beside it.
use crate::runner::summary::{self, Summary};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

const HEADER: [&str; 14] = [
    "run", "experiment", "family", "test NLL (nats)", "kind", "NLL - true entropy", "bits/dim", "steps", "train time (s)", "steps/s",
    "ms / 1000 log p", "ms / 1000 samples", "NFE / sample", "params",
];

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into())
}

/// The cells of one row.
fn row(run: &Path, s: &Summary) -> Vec<String> {
    vec![
        run.display().to_string(),
        s.experiment.clone(),
        s.family.clone(),
        format!("{:.4} ± {:.4}", s.test_nll_nats, s.test_nll_stderr),
        s.nll_kind.clone(),
        fmt_opt(s.nll_gap_nats, 4),
        fmt_opt(s.bits_per_dim, 4),
        s.steps.to_string(),
        format!("{:.1}", s.train_time_s),
        format!("{:.1}", s.steps_per_s),
        fmt_opt(s.log_prob_ms_per_1000, 2),
        format!("{:.2}", s.sample_ms_per_1000),
        s.nfe_per_sample.to_string(),
        s.params.to_string(),
    ]
}

/// The comparison as (markdown, csv).
pub fn tables(runs: &[PathBuf]) -> Result<(String, String)> {
    let rows: Vec<Vec<String>> = runs.iter().map(|r| Ok(row(r, &summary::read(r)?))).collect::<Result<_>>()?;
    let mut md = format!("| {} |\n|{}\n", HEADER.join(" | "), "---|".repeat(HEADER.len()));
    for r in &rows {
        md += &format!("| {} |\n", r.join(" | "));
    }
    md += "\nkind: exact = exact NLL; bound = upper bound on NLL (lower bound on log p); estimate = stochastic estimate.\n";
    md += "bits/dim (8-bit images only): data (pixel + u)/256 on [0,1]^D, bits/dim = NLL / (D ln 2) + 8.\n";
    let csv_cell = |c: &String| if c.contains(',') || c.contains('"') { format!("\"{}\"", c.replace('"', "\"\"")) } else { c.clone() };
    let mut csv = HEADER.join(",") + "\n";
    for r in &rows {
        csv += &(r.iter().map(csv_cell).collect::<Vec<_>>().join(",") + "\n");
    }
    Ok((md, csv))
}

/// Prints the markdown table and writes `<out>.md`, `<out>.csv` and the contact sheet `<out>.png`; returns the CSV path.
pub fn compare(runs: &[PathBuf], out: &Path) -> Result<PathBuf> {
    anyhow::ensure!(!runs.is_empty(), "name at least one run folder to compare");
    let (md, csv) = tables(runs)?;
    print!("{md}");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (md_path, csv_path) = (out.with_extension("md"), out.with_extension("csv"));
    crate::runner::files::write_atomic(&md_path, md.as_bytes())?;
    crate::runner::files::write_atomic(&csv_path, csv.as_bytes())?;
    // The contact sheet shows the runs that drew a final picture (every run of this version does).
    let pictured: Vec<PathBuf> = runs.iter().filter(|r| super::contact::final_picture(r).is_ok()).cloned().collect();
    if pictured.len() < runs.len() {
        eprintln!("note: {} run(s) without a final picture left off the contact sheet", runs.len() - pictured.len());
    }
    if !pictured.is_empty() {
        crate::plot::save_png(&super::contact::sheet(&pictured, 480, 3)?, &out.with_extension("png"))?;
    }
    Ok(csv_path)
}
