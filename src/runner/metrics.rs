//! `metrics.jsonl`: one JSON object per logged step. Each line goes out in one `write` (a full disk can at worst
//! leave one torn last line), a torn line is dropped with a warning when read, and a resume rewrites the file
//! atomically.
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
        if !self.path.exists() {
            return Ok(());
        }
        let kept: Vec<String> = read(&self.path)?
            .into_iter()
            .filter(|v| v.get("step").and_then(Value::as_i64).is_some_and(|s| s <= step))
            .map(|v| v.to_string())
            .collect();
        if step > 0 && !kept.iter().any(|l| l.contains("\"step\"")) {
            eprintln!("warning: {}: no metrics lines up to step {step} survive; the history before it is missing", self.path.display());
        }
        let text = kept.iter().map(|l| format!("{l}\n")).collect::<String>();
        super::files::write_atomic(&self.path, text.as_bytes())
    }

    pub fn append(&self, line: &Value) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        // One write of the whole line: never interleaved with another line, never ~40 small pieces.
        f.write_all(format!("{line}\n").as_bytes()).with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Every line of a metrics file (an absent file has none).
pub fn read(path: &Path) -> Result<Vec<Value>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => out.push(v),
            _ => eprintln!("warning: {}: line {} is torn or not JSON (a full disk or a kill mid-write?); skipped", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// (steps, values) of one key across the log, skipping lines without it.
pub fn series(lines: &[Value], key: &str) -> (Vec<f64>, Vec<f64>) {
    lines
        .iter()
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get(key)?.as_f64()?)))
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_lines_are_skipped_and_truncation_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let log = MetricsLog::new(dir.path());
        for step in [10, 20, 30] {
            log.append(&serde_json::json!({ "step": step, "loss": 1.0 })).unwrap();
        }
        let path = dir.path().join("metrics.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"step\": 40, \"lo");
        std::fs::write(&path, text).unwrap();
        assert_eq!(read(&path).unwrap().len(), 3, "the torn last line is dropped");
        log.truncate_after(20).unwrap();
        let steps: Vec<i64> = read(&path).unwrap().iter().map(|v| v["step"].as_i64().unwrap()).collect();
        assert_eq!(steps, vec![10, 20]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
    }
}
