//! `relaxflow sweep NAME --set key=v1,v2,... --seeds K`: one experiment trained over a grid of values (the cartesian
//! product of every `--set` list) and seeds, one run folder each, in one process, one after the other. Resumable:
//! a finished run (summary.json) is kept, an interrupted one (checkpoint.pt) continues, one that never reached a
//! checkpoint starts again. A run that fails (e.g. a NaN loss at an extreme setting) is recorded and the sweep goes
//! on. `sweep.json` lists every point and run; `report::sweep` turns it into a table and a plot.
use super::train::{train, TrainOptions};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One swept key and its values (TOML literals, as on the command line).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

/// One run of the sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRun {
    pub seed: i64,
    /// Relative to the sweep folder.
    pub dir: PathBuf,
    /// "done" or "failed: <error>".
    pub status: String,
}

/// One grid point: a value per axis, and its runs over seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub values: Vec<(String, String)>,
    pub runs: Vec<SweepRun>,
}

/// `sweep.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sweep {
    pub experiment: String,
    /// Keys with several values (the grid) and keys given one value (applied to every run, not in folder names).
    pub axes: Vec<Axis>,
    #[serde(default)]
    pub fixed: Vec<String>,
    pub seeds: Vec<i64>,
    pub steps: Option<i64>,
    pub points: Vec<Point>,
    /// The command that made it.
    pub command: String,
}

/// What `relaxflow sweep` was asked.
#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    pub experiment: String,
    /// `key=v1,v2,...` each (a single value fixes a key for every run).
    pub grid: Vec<String>,
    pub seeds: i64,
    pub steps: Option<i64>,
    pub device: Option<String>,
    pub out: Option<PathBuf>,
}

/// Splits `v1,v2,...` at commas outside brackets and quotes, so `[64, 64],[32]` is two values.
pub fn split_values(list: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quote) = (Vec::new(), String::new(), 0i32, false);
    for ch in list.chars() {
        match ch {
            '"' => quote = !quote,
            '[' | '{' if !quote => depth += 1,
            ']' | '}' if !quote => depth -= 1,
            ',' if !quote && depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur.trim().to_string());
    out
}

/// Parses every `key=v1,v2,...`.
pub fn parse_grid(grid: &[String]) -> Result<Vec<Axis>> {
    grid.iter()
        .map(|g| {
            let Some((key, list)) = g.split_once('=') else { bail!("--set `{g}`: expected KEY=V1,V2,... (e.g. model.g=0.01,0.1,1)") };
            let values = split_values(list);
            if key.trim().is_empty() || values.iter().any(|v| v.is_empty()) {
                bail!("--set `{g}`: empty key or value");
            }
            Ok(Axis { key: key.trim().to_string(), values })
        })
        .collect()
}

/// Every combination of one value per axis, first axis slowest.
pub fn points(axes: &[Axis]) -> Vec<Vec<(String, String)>> {
    axes.iter().fold(vec![Vec::new()], |acc, axis| {
        acc.iter()
            .flat_map(|p| axis.values.iter().map(move |v| [p.clone(), vec![(axis.key.clone(), v.clone())]].concat()))
            .collect()
    })
}

/// A folder name for a point: `key=value` joined by `+`, characters outside [A-Za-z0-9._=+-] replaced by `-`.
pub fn point_dir(values: &[(String, String)]) -> String {
    if values.is_empty() {
        return "default".into();
    }
    let name = values.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("+");
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "._=+-".contains(c) { c } else { '-' }).collect()
}

/// Trains (or finishes) one run folder; Ok(()) when it has a summary.
fn run_one(o: &SweepOptions, fixed: &[String], values: &[(String, String)], seed: i64, dir: &Path) -> Result<()> {
    if dir.join("summary.json").exists() {
        eprintln!("{}: finished, kept", dir.display());
        return Ok(());
    }
    let base = TrainOptions { device: o.device.clone(), steps: o.steps, ..Default::default() };
    if dir.join(super::checkpoint::FILE).exists() {
        train(&TrainOptions { resume: Some(dir.to_path_buf()), ..base })?;
        return Ok(());
    }
    if dir.join("config.toml").exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {} (it never reached a checkpoint)", dir.display()))?;
    } else if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} holds files but no run; move them away or choose another --out", dir.display());
    }
    let overrides = fixed.iter().cloned().chain(values.iter().map(|(k, v)| format!("{k}={v}"))).collect();
    train(&TrainOptions {
        experiment: Some(o.experiment.clone()),
        overrides,
        seed: Some(seed),
        out: Some(dir.to_path_buf()),
        ..base
    })?;
    Ok(())
}

/// Runs the sweep and returns its folder (holding sweep.json).
pub fn sweep(o: &SweepOptions) -> Result<PathBuf> {
    anyhow::ensure!(o.seeds >= 1, "--seeds must be at least 1");
    let (axes, single): (Vec<Axis>, Vec<Axis>) = parse_grid(&o.grid)?.into_iter().partition(|a| a.values.len() > 1);
    let fixed: Vec<String> = single.iter().map(|a| format!("{}={}", a.key, a.values[0])).collect();
    let (name, _) = crate::experiment::config::resolve_file(&o.experiment)?;
    let out = o.out.clone().unwrap_or_else(|| Path::new("runs").join("sweeps").join(&name));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let seeds: Vec<i64> = (0..o.seeds).collect();
    let mut sweep = Sweep {
        experiment: name.clone(),
        axes: axes.clone(),
        fixed: fixed.clone(),
        seeds: seeds.clone(),
        steps: o.steps,
        points: Vec::new(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let grid = points(&axes);
    let total = grid.len() * seeds.len();
    for (i, values) in grid.into_iter().enumerate() {
        let mut runs = Vec::new();
        for (j, &seed) in seeds.iter().enumerate() {
            let dir = PathBuf::from(point_dir(&values)).join(format!("seed-{seed}"));
            eprintln!("sweep {name}: run {} of {total}: {} seed {seed}", i * seeds.len() + j + 1, point_dir(&values));
            let status = match run_one(o, &fixed, &values, seed, &out.join(&dir)) {
                Ok(()) => "done".to_string(),
                Err(e) => {
                    eprintln!("sweep {name}: {} failed: {e:#}", dir.display());
                    format!("failed: {e:#}")
                }
            };
            runs.push(SweepRun { seed, dir, status });
        }
        sweep.points.push(Point { values, runs });
        super::summary::write_json(&out.join("sweep.json"), &sweep)?;
    }
    Ok(out)
}

/// Reads a sweep folder's sweep.json.
pub fn read(dir: &Path) -> Result<Sweep> {
    let path = dir.join("sweep.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: not a sweep folder (no sweep.json)", dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: malformed sweep.json", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_outside_brackets_and_quotes() {
        assert_eq!(split_values("0.01,0.1, 1"), vec!["0.01", "0.1", "1"]);
        assert_eq!(split_values("[64, 64],[32]"), vec!["[64, 64]", "[32]"]);
        assert_eq!(split_values("\"a,b\",\"c\""), vec!["\"a,b\"", "\"c\""]);
    }

    #[test]
    fn grid_is_the_cartesian_product() {
        let axes = parse_grid(&["model.g=0.1,1".into(), "model.steps=5,10,20".into()]).unwrap();
        let p = points(&axes);
        assert_eq!(p.len(), 6);
        assert_eq!(p[0], vec![("model.g".to_string(), "0.1".to_string()), ("model.steps".to_string(), "5".to_string())]);
        assert_eq!(point_dir(&p[5]), "model.g=1+model.steps=20");
        assert_eq!(point_dir(&[("model.sampler".into(), "\"ddim\"".into())]), "model.sampler=-ddim-");
        assert!(parse_grid(&["model.g".into()]).unwrap_err().to_string().contains("KEY=V1,V2"));
        assert_eq!(points(&[]), vec![Vec::<(String, String)>::new()]);
    }
}
