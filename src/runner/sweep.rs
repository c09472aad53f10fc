//! `relaxflow sweep NAME --set key=v1,v2,... --seeds K`: one experiment trained over a grid of values (the cartesian
//! product of every `--set` list) and seeds, one run folder each, one after the other in this process, or `--jobs N`
//! at a time as child processes (`pool`). Resumable:
//! a finished run (summary.json) is kept, an unfinished one continues (`train --resume`), after checking that its
//! config is the one this sweep would make (other fixed settings, steps or experiment file: an error naming the
//! key, never a stale run reported as new). A run that fails (e.g. a NaN loss at an extreme setting) is recorded
//! and the sweep goes on; if every run fails the sweep fails. The sweep deletes nothing: a folder that is not a
//! relaxflow run is left alone with an error, and links inside --out are not followed. `sweep.json` lists every
//! point and run; `report::sweep` turns it into a table and a plot.
use super::rundir::{self, FolderLock};
use super::train::{train, TrainOptions};
use crate::experiment::Experiment;
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
    /// "done" or "failed: \<error>".
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
    /// Runs at a time; above 1 each run is a child process (see `pool`); 0 counts as 1.
    pub jobs: usize,
    pub workspace: crate::workspace::Workspace,
    /// Write `sweep.sbatch` (a Slurm array job, one task per run) into the sweep folder instead of training.
    pub slurm_array: bool,
    /// Train only task K (0-based, grid points slowest, then seeds), as a Slurm array task does; sweep.json is left
    /// to the plain sweep command run afterwards, which keeps every finished run.
    pub array_task: Option<usize>,
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

/// Refuses a symbolic link at `dir` (a sweep writes only inside its own folder).
fn no_link(dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!("{} is a symbolic link; a sweep writes only real folders inside --out (remove the link or choose another --out)", dir.display());
    }
    Ok(())
}

/// Numbers compare by value (a resolved config writes `1` as `1.0`); tables and arrays element by element.
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    use toml::Value::*;
    match (a, b) {
        (Integer(x), Float(y)) | (Float(y), Integer(x)) => (*x as f64 - y).abs() <= 1e-12 * y.abs().max(1.0),
        (Float(x), Float(y)) => (x - y).abs() <= 1e-12 * y.abs().max(1.0),
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Table(x), Table(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w))),
        _ => a == b,
    }
}

/// The first key where the run's config differs from `expected` (every [data], [train], [eval] key; the [model] keys
/// the experiment sets), as "key: run has A, this sweep asks B".
fn difference(run: &Experiment, expected: &Experiment) -> Result<Option<String>> {
    let (r, e) = (toml::Value::try_from(run)?, toml::Value::try_from(expected)?);
    for section in ["data", "train", "eval"] {
        let (rs, es) = (r.get(section).and_then(|v| v.as_table()), e.get(section).and_then(|v| v.as_table()));
        let (Some(rs), Some(es)) = (rs, es) else { continue };
        for key in rs.keys().chain(es.keys()) {
            match (rs.get(key), es.get(key)) {
                (Some(a), Some(b)) if same(a, b) => {}
                (a, b) => return Ok(Some(format!("{section}.{key}: the run has {}, this sweep asks {}", show(a), show(b)))),
            }
        }
    }
    for (key, b) in &expected.model {
        let a = run.model.get(key);
        if !a.is_some_and(|a| same(a, b)) {
            return Ok(Some(format!("model.{key}: the run has {}, this sweep asks {}", show(a), show(Some(b)))));
        }
    }
    Ok(None)
}

fn show(v: Option<&toml::Value>) -> String {
    v.map_or("nothing".into(), |v| v.to_string())
}

/// What a sweep does with one run folder, decided (and checked) before anything is trained.
enum Plan {
    /// Finished and of this sweep: kept.
    Kept,
    Train(TrainOptions),
}

/// Checks one run folder against the config this sweep would make and says what to do with it.
fn plan(o: &SweepOptions, file: &Path, overrides: &[String], seed: i64, dir: &Path) -> Result<Plan> {
    no_link(dir.parent().unwrap_or(dir))?;
    no_link(dir)?;
    let mut all: Vec<String> = overrides.to_vec();
    all.extend(o.steps.map(|n| format!("train.steps={n}")));
    all.push(format!("train.seed={seed}"));
    let mut expected = crate::experiment::config::load(file, &all)?;
    super::train::absolute_data_paths(&mut expected.data);
    let base = TrainOptions { device: o.device.clone(), steps: o.steps, workspace: o.workspace.clone(), ..Default::default() };
    if rundir::is_run(dir) || dir.join("config.toml").exists() {
        let config = dir.join("config.toml");
        let run = crate::experiment::config::load(&config, &[])
            .with_context(|| format!("{} holds a config that is not a relaxflow run of this sweep; move it away or choose another --out", dir.display()))?;
        if let Some(diff) = difference(&run, &expected)? {
            bail!("{} is a different run ({diff}); use another --out for other settings, or move that run away", dir.display());
        }
        if dir.join("summary.json").exists() {
            eprintln!("{}: finished, kept", dir.display());
            return Ok(Plan::Kept);
        }
        return Ok(Plan::Train(TrainOptions { resume: Some(dir.to_path_buf()), ..base }));
    }
    if !rundir::is_free(dir) {
        bail!("{} holds files but no relaxflow run; move them away or choose another --out", dir.display());
    }
    Ok(Plan::Train(TrainOptions { experiment: Some(o.experiment.clone()), overrides: overrides.to_vec(), seed: Some(seed), out: Some(dir.to_path_buf()), ..base }))
}

/// The command line of `relaxflow train` that does what `t` asks.
fn train_args(t: &TrainOptions) -> Vec<String> {
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    let ws = &t.workspace;
    let mut a = vec!["--experiments".to_string(), path(&ws.experiments), "--runs".into(), path(&ws.runs), "train".into()];
    match (&t.resume, &t.experiment) {
        (Some(dir), _) => a.extend(["--resume".into(), path(dir)]),
        (None, Some(exp)) => a.push(exp.clone()),
        (None, None) => {}
    }
    let opt = |flag: &str, v: Option<String>| v.map(|v| vec![flag.to_string(), v]).unwrap_or_default();
    a.extend(opt("--out", t.out.as_ref().map(path)));
    a.extend(opt("--seed", t.seed.map(|s| s.to_string())));
    a.extend(opt("--steps", t.steps.map(|s| s.to_string())));
    a.extend(opt("--device", t.device.clone()));
    t.overrides.iter().for_each(|kv| a.extend(["--set".to_string(), kv.clone()]));
    a
}

/// One run of the sweep: its grid point, seed and folder (relative to the sweep's).
struct Task {
    point: usize,
    seed: i64,
    dir: PathBuf,
    overrides: Vec<String>,
}

/// sweep.json's points from the runs that have ended so far, in grid order.
fn record(base: &Sweep, grid: &[Vec<(String, String)>], tasks: &[Task], status: &[Option<String>]) -> Sweep {
    let mut sweep = base.clone();
    sweep.points = grid
        .iter()
        .enumerate()
        .filter_map(|(i, values)| {
            let runs: Vec<SweepRun> = tasks
                .iter()
                .zip(status)
                .filter(|(t, s)| t.point == i && s.is_some())
                .map(|(t, s)| SweepRun { seed: t.seed, dir: t.dir.clone(), status: s.clone().unwrap_or_default() })
                .collect();
            (!runs.is_empty()).then(|| Point { values: values.clone(), runs })
        })
        .collect();
    sweep
}

fn failed(name: &str, dir: &Path, msg: &str) -> String {
    eprintln!("sweep {name}: {} failed: {msg}", dir.display());
    format!("failed: {msg}")
}

/// Runs the tasks one after the other in this process, recording each as it ends.
fn run_here(o: &SweepOptions, file: &Path, out: &Path, tasks: &[Task], save: &mut dyn FnMut(&[Option<String>]) -> Result<()>) -> Result<Vec<Option<String>>> {
    let mut status = vec![None; tasks.len()];
    let total = tasks.len();
    for (k, t) in tasks.iter().enumerate() {
        let stop = || format!("sweep {} stopped before run {} of {total}; run the same command again to continue", out.display(), k + 1);
        if let Err(e) = super::interrupt::check(stop) {
            save(&status)?;
            return Err(e);
        }
        eprintln!("sweep {}: run {} of {total}: {}", o.experiment, k + 1, t.dir.display());
        let result = plan(o, file, &t.overrides, t.seed, &out.join(&t.dir)).and_then(|p| match p {
            Plan::Kept => Ok(()),
            Plan::Train(opts) => train(&opts).map(|_| ()),
        });
        status[k] = Some(match result {
            Ok(()) => "done".to_string(),
            Err(e) if super::interrupt::is_interrupted(&e).is_some() => {
                save(&status)?;
                return Err(e.context(format!("sweep {} stopped; run the same command again to continue", out.display())));
            }
            Err(e) => failed(&o.experiment, &t.dir, &crate::errors::describe(&e)),
        });
        save(&status)?;
    }
    Ok(status)
}

/// Runs the tasks as `jobs` child processes at a time (`pool`), every folder checked here first.
fn run_children(o: &SweepOptions, file: &Path, out: &Path, tasks: &[Task], save: &mut dyn FnMut(&[Option<String>]) -> Result<()>) -> Result<Vec<Option<String>>> {
    let mut status = vec![None; tasks.len()];
    let mut jobs = Vec::new();
    let mut index = Vec::new();
    for (k, t) in tasks.iter().enumerate() {
        match plan(o, file, &t.overrides, t.seed, &out.join(&t.dir)) {
            Ok(Plan::Kept) => status[k] = Some("done".to_string()),
            Ok(Plan::Train(opts)) => {
                jobs.push(super::pool::Job { label: t.dir.display().to_string(), args: train_args(&opts) });
                index.push(k);
            }
            Err(e) => status[k] = Some(failed(&o.experiment, &t.dir, &crate::errors::describe(&e))),
        }
    }
    save(&status)?;
    eprintln!("sweep {}: {} runs to train, {} at a time ({} threads each)", o.experiment, jobs.len(), o.jobs, super::pool::threads_per_job(o.jobs));
    let mut stopped = 0;
    let mut save_err = None;
    super::pool::run(jobs, o.jobs, |j, outcome| {
        let k = index[j];
        match outcome {
            super::pool::Outcome::Done => status[k] = Some("done".to_string()),
            super::pool::Outcome::Stopped => stopped += 1,
            super::pool::Outcome::Failed(msg) => status[k] = Some(failed(&o.experiment, &tasks[k].dir, &msg)),
        }
        if let Err(e) = save(&status) {
            save_err.get_or_insert(e);
        }
    })
    .context("starting a sweep's child process")?;
    if let Some(e) = save_err {
        return Err(e);
    }
    super::interrupt::check(|| format!("sweep {} stopped ({stopped} runs checkpointed); run the same command again to continue", out.display()))?;
    Ok(status)
}

/// Runs the sweep and returns its folder (holding sweep.json). Fails when every run failed.
pub fn sweep(o: &SweepOptions) -> Result<PathBuf> {
    super::interrupt::install();
    anyhow::ensure!(o.seeds >= 1, "--seeds must be at least 1");
    let (axes, single): (Vec<Axis>, Vec<Axis>) = parse_grid(&o.grid)?.into_iter().partition(|a| a.values.len() > 1);
    let fixed: Vec<String> = single.iter().map(|a| format!("{}={}", a.key, a.values[0])).collect();
    let (name, file) = crate::experiment::config::resolve_file(&o.experiment, &o.workspace.experiments)?;
    let grid = points(&axes);
    let overrides_of = |values: &[(String, String)]| -> Vec<String> { fixed.iter().cloned().chain(values.iter().map(|(k, v)| format!("{k}={v}"))).collect() };
    // Every grid point's config must load before anything is trained or written.
    for values in &grid {
        crate::experiment::config::load(&file, &overrides_of(values)).with_context(|| format!("grid point {}", point_dir(values)))?;
    }
    let out = o.out.clone().unwrap_or_else(|| o.workspace.runs.join("sweeps").join(&name));
    no_link(&out)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let seeds: Vec<i64> = (0..o.seeds).collect();
    let tasks: Vec<Task> = grid
        .iter()
        .enumerate()
        .flat_map(|(i, values)| {
            let overrides = overrides_of(values);
            seeds.iter().map(move |&seed| Task { point: i, seed, dir: PathBuf::from(point_dir(values)).join(format!("seed-{seed}")), overrides: overrides.clone() })
        })
        .collect();
    if o.slurm_array {
        write_array_job(o, &name, &out, tasks.len())?;
        return Ok(out);
    }
    if let Some(k) = o.array_task {
        // Array tasks run side by side: each locks only its own run folder, and none writes sweep.json.
        let Some(task) = tasks.get(k) else { bail!("--array-task {k}: the sweep has {} runs (tasks 0..={})", tasks.len(), tasks.len().saturating_sub(1)) };
        let status = run_here(o, &file, &out, std::slice::from_ref(task), &mut |_| Ok(()))?;
        if let Some(Some(msg)) = status.first().filter(|s| s.as_deref() != Some("done")) {
            bail!("array task {k} ({}): {msg}", task.dir.display());
        }
        return Ok(out);
    }
    let _lock = FolderLock::acquire(&out)?;
    if out.join("sweep.json").exists() {
        let old = read(&out)?;
        if old.experiment != name {
            bail!("{} holds a sweep of `{}`, not `{name}`; choose another --out", out.display(), old.experiment);
        }
    }
    let base = Sweep {
        experiment: name.clone(),
        axes: axes.clone(),
        fixed: fixed.clone(),
        seeds: seeds.clone(),
        steps: o.steps,
        points: Vec::new(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let mut save = |status: &[Option<String>]| super::summary::write_json(&out.join("sweep.json"), &record(&base, &grid, &tasks, status));
    let status = if o.jobs <= 1 { run_here(o, &file, &out, &tasks, &mut save)? } else { run_children(o, &file, &out, &tasks, &mut save)? };
    let total = tasks.len();
    let failed = status.iter().filter(|s| s.as_deref() != Some("done")).count();
    if failed == total {
        bail!("every one of the {total} runs of sweep {} failed (see {}/sweep.json)", name, out.display());
    }
    if failed > 0 {
        eprintln!("warning: {failed} of {total} runs of sweep {name} failed; the table marks them (see {}/sweep.json)", out.display());
    }
    Ok(out)
}

/// A shell word, quoted when it needs to be.
fn shell_quote(w: &str) -> String {
    if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        return w.to_string();
    }
    format!("'{}'", w.replace('\'', "'\\''"))
}

/// The `relaxflow sweep` command line of this sweep (absolute paths, so it runs from any folder), without the
/// array flags.
fn sweep_command(o: &SweepOptions, out: &Path) -> Result<Vec<String>> {
    let abs = |p: &Path| -> Result<String> { Ok(std::path::absolute(p).with_context(|| format!("{}", p.display()))?.to_string_lossy().into_owned()) };
    let exe = std::env::current_exe().context("locating the relaxflow executable")?;
    let mut a = vec![abs(&exe)?, "--experiments".into(), abs(&o.workspace.experiments)?, "--runs".into(), abs(&o.workspace.runs)?];
    a.extend(["sweep".to_string(), o.experiment.clone()]);
    for g in &o.grid {
        a.extend(["--set".to_string(), g.clone()]);
    }
    a.extend(["--seeds".to_string(), o.seeds.to_string(), "--out".into(), abs(out)?]);
    a.extend(o.steps.map(|s| vec!["--steps".to_string(), s.to_string()]).unwrap_or_default());
    a.extend(o.device.clone().map(|d| vec!["--device".to_string(), d]).unwrap_or_default());
    Ok(a)
}

/// `sweep.sbatch`: a Slurm array job with one task per run of the sweep (`--array-task $SLURM_ARRAY_TASK_ID`), the
/// same folders and resume rules as the sweep itself; resubmitting continues unfinished runs and keeps finished ones.
fn write_array_job(o: &SweepOptions, name: &str, out: &Path, n: usize) -> Result<()> {
    let cmd = sweep_command(o, out)?;
    let line = cmd.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ");
    let logs = std::path::absolute(out)?.join("slurm-%A_%a.out");
    let script = format!(
        "#!/bin/bash\n\
         # Written by `relaxflow sweep --slurm-array`: sweep `{name}`, one run (grid point x seed) per array task.\n\
         # Submit: sbatch {script}\n\
         # Then, when every task has ended, write the sweep's table (finished runs are kept, not retrained):\n\
         #   {line}\n\
         # Add your cluster's resources (--partition, --gres=gpu:1, --cpus-per-task, --time) below.\n\
         #SBATCH --job-name=relaxflow-{name}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --ntasks=1\n\
         #SBATCH --output={logs}\n\
         set -euo pipefail\n\
         exec {line} --array-task \"${{SLURM_ARRAY_TASK_ID:?run this script as a Slurm array task (sbatch), or set SLURM_ARRAY_TASK_ID}}\"\n",
        script = std::path::absolute(out)?.join("sweep.sbatch").display(),
        last = n.saturating_sub(1),
        logs = logs.display(),
    );
    let path = out.join("sweep.sbatch");
    crate::files::write_atomic(&path, script.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).with_context(|| format!("making {} executable", path.display()))?;
    eprintln!("wrote {} ({n} array tasks); submit it with `sbatch {}`", path.display(), path.display());
    Ok(())
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
