//! A sweep's table and plot, from its sweep.json and its runs' summary.json: per grid point, the mean and standard
//! deviation over seeds of the test NLL, its gap to the true entropy, the mass outside the support and mode coverage.
use crate::plot::{ErrorPanel, ErrorPlot, ErrorSeries, Figure};
use crate::runner::summary::{self, Summary};
use crate::runner::sweep::{self, Sweep};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Mean and sample standard deviation (NaN for fewer than two values; None when there are none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub sd: f64,
    pub n: usize,
}

pub fn stat(values: &[f64]) -> Option<Stat> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { f64::NAN };
    Some(Stat { mean, sd, n })
}

fn fmt_stat(s: Option<Stat>, digits: usize) -> String {
    match s {
        Some(s) if s.sd.is_finite() => format!("{:.digits$} ± {:.digits$}", s.mean, s.sd),
        Some(s) => format!("{:.digits$}", s.mean),
        None => "-".into(),
    }
}

/// One grid point's finished runs.
pub struct PointRuns {
    pub label: String,
    pub runs: Vec<(PathBuf, Summary)>,
    pub failed: usize,
    /// Why runs failed (a NaN loss at an extreme setting, say), one line each.
    pub errors: Vec<String>,
}

impl PointRuns {
    fn over(&self, f: impl Fn(&Summary) -> Option<f64>) -> Option<Stat> {
        stat(&self.runs.iter().filter_map(|(_, s)| f(s)).collect::<Vec<_>>())
    }
    pub fn nll(&self) -> Option<Stat> {
        self.over(|s| Some(s.test_nll_nats))
    }
    pub fn gap(&self) -> Option<Stat> {
        self.over(|s| s.nll_gap_nats)
    }
    pub fn outside(&self) -> Option<Stat> {
        self.over(|s| s.sample_outside_support)
    }
    pub fn modes(&self) -> Option<Stat> {
        self.over(|s| s.mode_coverage.as_ref().map(|m| m.covered as f64))
    }
    pub fn kinds(&self) -> String {
        let mut k: Vec<&str> = self.runs.iter().map(|(_, s)| s.nll_kind.as_str()).collect();
        k.dedup();
        k.join("/")
    }
}

/// The label of a point: its values (keys shortened to their last part) or "default".
fn label(values: &[(String, String)]) -> String {
    if values.is_empty() {
        return "default".into();
    }
    values.iter().map(|(k, v)| format!("{}={}", k.rsplit('.').next().unwrap_or(k), v.trim_matches('"'))).collect::<Vec<_>>().join(" ")
}

/// Every point of a sweep folder with its finished runs' summaries.
pub fn load(dir: &Path) -> Result<(Sweep, Vec<PointRuns>)> {
    let sw = sweep::read(dir)?;
    let points = sw
        .points
        .iter()
        .map(|p| {
            let mut runs = Vec::new();
            let mut errors = Vec::new();
            for r in &p.runs {
                let run = dir.join(&r.dir);
                match summary::read(&run) {
                    Ok(s) if r.status == "done" => runs.push((run, s)),
                    Ok(_) => errors.push(format!("seed {}: {}", r.seed, r.status)),
                    Err(e) => errors.push(format!("seed {}: {}", r.seed, if r.status == "done" { format!("{e:#}") } else { r.status.clone() })),
                }
            }
            PointRuns { label: label(&p.values), runs, failed: errors.len(), errors }
        })
        .collect();
    Ok((sw, points))
}

const HEADER: [&str; 11] = [
    "setting", "seeds done", "test NLL (nats)", "kind", "NLL - true entropy", "outside support", "modes covered", "steps/s",
    "train time (s)", "ms / 1000 samples", "NFE / sample",
];

/// The sweep's table as (markdown, csv): mean ± sd over seeds per point.
pub fn table(points: &[&PointRuns]) -> (String, String) {
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            let first = p.runs.first().map(|(_, s)| s);
            vec![
                p.label.clone(),
                format!("{}/{}", p.runs.len(), p.runs.len() + p.failed),
                fmt_stat(p.nll(), 4),
                p.kinds(),
                fmt_stat(p.gap(), 4),
                fmt_stat(p.outside(), 4),
                fmt_stat(p.modes(), 1),
                fmt_stat(p.over(|s| Some(s.steps_per_s)), 1),
                fmt_stat(p.over(|s| Some(s.train_time_s)), 1),
                fmt_stat(p.over(|s| Some(s.sample_ms_per_1000)), 1),
                first.map_or("-".into(), |s| s.nfe_per_sample.to_string()),
            ]
        })
        .collect();
    let mut md = format!("| {} |\n|{}\n", HEADER.join(" | "), "---|".repeat(HEADER.len()));
    for r in &rows {
        md += &format!("| {} |\n", r.join(" | "));
    }
    md += "\nmean ± standard deviation over seeds. kind: exact = exact NLL; bound = upper bound on NLL; estimate = stochastic estimate.\n";
    for p in points.iter().filter(|p| !p.errors.is_empty()) {
        md += &format!("\nfailed at {}: {}\n", p.label, p.errors.join("; "));
    }
    let cell = |c: &String| if c.contains(',') || c.contains('"') { format!("\"{}\"", c.replace('"', "\"\"")) } else { c.clone() };
    let mut csv = HEADER.join(",") + "\n";
    for r in &rows {
        csv += &(r.iter().map(cell).collect::<Vec<_>>().join(",") + "\n");
    }
    (md, csv)
}

/// Expressivity against the swept setting: NLL gap to the truth (or NLL where the entropy is unknown) and mass
/// outside the support, mean ± sd over seeds, with an optional baseline (another sweep's single point, e.g. a plain
/// flow) as a dashed line. Returns the two panels, to be saved (PNG + SVG) with [`Figure::save`].
pub fn plot(title: &str, xlabel: &str, points: &[PointRuns], baseline: Option<&PointRuns>) -> ErrorPlot {
    // One swept key: its values as categories; several: the whole labels.
    let single_key = points.iter().all(|p| !p.label.contains(' '));
    let cats: Vec<String> =
        points.iter().map(|p| if single_key { p.label.rsplit('=').next().unwrap_or(&p.label).to_string() } else { p.label.clone() }).collect();
    let has_gap = points.iter().any(|p| p.gap().is_some());
    let metric = |p: &PointRuns| if has_gap { p.gap() } else { p.nll() };
    let split = |f: &dyn Fn(&PointRuns) -> Option<Stat>, ps: &[&PointRuns]| -> (Vec<f64>, Vec<f64>) {
        ps.iter().map(|p| f(p).map_or((f64::NAN, f64::NAN), |s| (s.mean, s.sd))).unzip()
    };
    let all: Vec<&PointRuns> = points.iter().collect();
    let base: Vec<&PointRuns> = baseline.into_iter().collect();
    // Legends say the kind of each likelihood: a bound and an exact NLL are not the same number.
    let kinds = |ps: &[&PointRuns]| {
        let mut k: Vec<String> = ps.iter().flat_map(|p| p.runs.iter().map(|(_, s)| s.nll_kind.clone())).collect();
        k.sort();
        k.dedup();
        k.join("/")
    };
    let swept_name = format!("swept model ({})", kinds(&all));
    let base_name = format!("plain flow, baseline ({})", kinds(&base));
    let panel = |f: &dyn Fn(&PointRuns) -> Option<Stat>, what: &str, ylabel: &str| {
        let (m, e) = split(f, &all);
        let (bm, be) = split(f, &base);
        let mut series = vec![ErrorSeries { name: swept_name.clone(), means: m, errs: e }];
        if !base.is_empty() {
            series.push(ErrorSeries { name: base_name.clone(), means: bm, errs: be });
        }
        ErrorPanel { title: format!("{title}: {what}"), xlabel: xlabel.into(), ylabel: ylabel.into(), categories: cats.clone(), series }
    };
    let left = panel(&metric, if has_gap { "NLL gap" } else { "test NLL" }, if has_gap { "NLL - true entropy (nats)" } else { "test NLL (nats)" });
    let right = panel(&|p: &PointRuns| p.outside(), "mass outside", "mass outside the support (fraction)");
    ErrorPlot { panels: vec![left, right], panel_size: (460, 340) }
}

/// Writes `sweep.md`, `sweep.csv` and `sweep.png` into the sweep folder; returns the markdown.
pub fn write(dir: &Path) -> Result<String> {
    let (sw, points) = load(dir)?;
    let (md, csv) = table(&points.iter().collect::<Vec<_>>());
    let fixed = if sw.fixed.is_empty() { String::new() } else { format!("every run with: {}\n\n", sw.fixed.join(" ")) };
    crate::runner::files::write_atomic(&dir.join("sweep.md"), format!("# sweep of {}\n\n{fixed}{md}\ncommand: `{}`\n", sw.experiment, sw.command).as_bytes())
        .with_context(|| format!("writing {}", dir.join("sweep.md").display()))?;
    crate::runner::files::write_atomic(&dir.join("sweep.csv"), csv.as_bytes())?;
    let xlabel = sw.axes.iter().map(|a| a.key.as_str()).collect::<Vec<_>>().join(", ");
    plot(&sw.experiment, if xlabel.is_empty() { "setting" } else { &xlabel }, &points, None).save(&dir.join("sweep.png"))?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let s = stat(&[1.0, 2.0, 3.0, f64::NAN]).unwrap();
        assert_eq!((s.mean, s.sd, s.n), (2.0, 1.0, 3));
        assert!(stat(&[5.0]).unwrap().sd.is_nan());
        assert!(stat(&[]).is_none());
        assert_eq!(fmt_stat(Some(s), 2), "2.00 ± 1.00");
    }
}
