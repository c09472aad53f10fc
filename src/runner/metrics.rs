//! `metrics.jsonl`: one JSON object per logged step.
use anyhow::{Context, Result};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends metric lines to a run's `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    pub fn new(run_dir: &Path) -> Self {
        MetricsLog { path: run_dir.join("metrics.jsonl") }
    }

    /// Keeps only lines with `step <= step` (on resume, the lines after the checkpoint are redone).
    pub fn truncate_after(&self, step: i64) -> Result<()> {
        let kept: Vec<String> = read(&self.path)?
            .into_iter()
            .filter(|v| v.get("step").and_then(Value::as_i64).is_some_and(|s| s <= step))
            .map(|v| v.to_string())
            .collect();
        let text = kept.iter().map(|l| format!("{l}\n")).collect::<String>();
        std::fs::write(&self.path, text).with_context(|| format!("rewriting {}", self.path.display()))
    }

    pub fn append(&self, line: &Value) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Every line of a metrics file (an absent file has none).
pub fn read(path: &Path) -> Result<Vec<Value>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}: line {} is not JSON", path.display(), i + 1)))
        .collect()
}

/// (steps, values) of one key across the log, skipping lines without it.
pub fn series(lines: &[Value], key: &str) -> (Vec<f64>, Vec<f64>) {
    lines
        .iter()
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get(key)?.as_f64()?)))
        .unzip()
}
