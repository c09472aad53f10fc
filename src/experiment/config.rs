//! The experiment config: `[data]`, `[model]`, `[train]`, `[eval]`, with `--set key=value` overrides.
//! Unknown keys, wrong types and missing keys are errors naming the key and the file.
use crate::data::DataConfig;
use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One named experiment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// One line for `relaxflow list`.
    #[serde(default)]
    pub description: String,
    pub data: DataConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    /// `kind` plus that kind's hyper-parameters; checked by the registry.
    pub model: toml::Table,
}

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    Constant,
    /// Cosine decay from `lr` to 0 over the run (after warm-up).
    Cosine,
}

/// How Adam's update runs on the flat parameter buffer (`runner::optim::Adam`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerImpl {
    /// Tensor operations on the flat buffers (about 9 kernels a step, whatever the parameter count).
    #[default]
    Flat,
    /// ATen's fused Adam/AdamW kernel (`at::_fused_adamw_`, through the C++ shim): one kernel a step, the same
    /// arithmetic as torch.optim.AdamW(fused=True); equal to `flat` to ~1e-7 (tested), and interchangeable with it on
    /// resume (the moments are the same tensors).
    Fused,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_schedule() -> LrSchedule {
    LrSchedule::Constant
}
fn default_log_every() -> i64 {
    50
}
fn default_checkpoint_every() -> i64 {
    500
}
fn default_sample_every() -> i64 {
    1000
}

/// The `[train]` section: Adam on the model's loss.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: i64,
    pub steps: i64,
    pub lr: f64,
    #[serde(default)]
    pub seed: i64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay (AdamW).
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// `flat` (default) or `fused`: how Adam's update runs.
    #[serde(default)]
    pub optimizer_impl: OptimizerImpl,
    /// `fp32` (default), `tf32` (TF32 matmuls on CUDA) or `bf16` (the image networks -- U-Net, the flows' ResNet
    /// conditioners -- under bf16 autocast with f32 weights and outputs; log-determinants, likelihoods and losses stay
    /// f32). Applies to training, evaluation and sampling of the run (`eval --set train.precision=...` changes it).
    /// The classifier's network (the instrument of image sample quality) stays f32; `bf16` gives it TF32 only.
    #[serde(default)]
    pub precision: crate::native::amp::Precision,
    /// On CUDA, let cuDNN time its convolution algorithms and keep the fastest (`torch.backends.cudnn.benchmark`).
    /// Off by default: algorithms chosen by timing can differ between processes, so a resumed run would no longer
    /// retrace the uninterrupted one bit for bit. Does nothing on the CPU.
    #[serde(default)]
    pub cudnn_benchmark: bool,
    /// On CUDA (a build with the feature `cuda-graphs`), capture the whole training step -- batch draw, loss,
    /// backward, clipping, Adam -- as one CUDA graph after 3 eager warm-up steps and replay it: one launch instead of
    /// hundreds, for small launch-bound models. Only models whose step is capturable (the flows; one process) use
    /// it; elsewhere the same step runs eagerly and the run says why. Adam then reads its learning rate and step
    /// count from device tensors (`optimizer_impl` is not used).
    #[serde(default)]
    pub cuda_graph: bool,
    /// Keep an exponential moving average of the weights with this decay (e.g. 0.9999 as DDPM; warm-up
    /// min(decay, (1 + k)/(10 + k))); saved in the checkpoint and used by the final evaluation, eval and sample
    /// unless `--weights raw`. 0 turns it off (`--set train.ema_decay=0` on an experiment that sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// Lay out convolution weights (and so the activations of the image networks) channels-last (NHWC) during
    /// training: what cuDNN's bf16/TF32 tensor-core kernels prefer. Off by default: on the CPU it is slower for the
    /// U-Net (0.19 vs 0.18 s a step, PyTorch on 2 cores); its gain on a GPU is for `make gpu-check` to measure.
    #[serde(default)]
    pub channels_last: bool,
    #[serde(default = "default_schedule")]
    pub lr_schedule: LrSchedule,
    /// Linear warm-up steps.
    #[serde(default)]
    pub warmup: i64,
    /// Steps between metrics lines (and NaN checks).
    #[serde(default = "default_log_every")]
    pub log_every: i64,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: i64,
    /// Steps between pictures (0: only at the end).
    #[serde(default = "default_sample_every")]
    pub sample_every: i64,
    /// A budget of training time in minutes (wall-clock of training steps, carried across resumes): at the first log
    /// step past it the run checkpoints and ends training there, then evaluates as a finished run; summary.json says
    /// it stopped by time (`time_limit`). The learning-rate schedule stays planned on `steps`. For GPU windows and
    /// goals such as "bits/dim within 10 minutes".
    #[serde(default)]
    pub time_limit_min: Option<f64>,
    /// Write TensorBoard event files in `RUN/tb/` (scalars of every metrics line, the pictures, the config and the
    /// summary as text; `tracking::writer`). `false` writes nothing there.
    #[serde(default = "default_true")]
    pub tensorboard: bool,
}

fn default_true() -> bool {
    true
}

impl TrainConfig {
    /// The decay of the weight average when the run keeps one (`train.ema_decay` set and not 0).
    pub fn ema(&self) -> Option<f64> {
        self.ema_decay.filter(|d| *d > 0.0)
    }
}

/// The `[eval]` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Steps between test-NLL evaluations during training, on `n_eval` test points (0: only at the end).
    pub every: i64,
    pub n_eval: i64,
    /// Test points of the final evaluation (default: the whole test set; expensive likelihoods cap it and the
    /// summary says how many were used).
    pub n_final: Option<i64>,
    /// Test points per evaluation batch.
    pub batch_size: i64,
    /// Samples drawn for pictures and for timing the sampler.
    pub n_samples: i64,
    /// Resolution of 2D density heat maps.
    pub grid: i64,
    /// Family diagnostics (e.g. importance weights against an energy): samples per repeat, and repeats.
    pub diag_samples: i64,
    pub diag_repeats: i64,
    /// Plot window [xmin, xmax, ymin, ymax] for 2D pictures (default [-4, 4]² for toy sets, else from the data).
    pub bounds: Option<[f64; 4]>,
    /// Other sampler settings to time and score at the end, each a list of `--set` overrides of keys that keep the
    /// weights, e.g. `[["model.sample_steps=10"], ["model.sampler=\"ddim\"", "model.ddim_steps=20"]]`.
    pub sampler_settings: Vec<Vec<String>>,
    /// Images: the classifier run whose features score sample quality (default: the newest finished
    /// runs/mnist-classifier or runs/fashion-classifier run), and how many samples it scores.
    pub classifier: Option<PathBuf>,
    pub quality_samples: i64,
    /// Simulation-based-inference tasks: reference observations (default 10, as sbibm), posterior samples per side
    /// of each C2ST (default 10,000, as sbibm) and its folds (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbi_observations: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbi_samples: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub c2st_folds: Option<i64>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every: 500,
            n_eval: 5000,
            n_final: Default::default(),
            batch_size: 10_000,
            n_samples: 20_000,
            grid: 256,
            diag_samples: 100_000,
            diag_repeats: 20,
            bounds: Default::default(),
            sampler_settings: Default::default(),
            classifier: Default::default(),
            quality_samples: 1000,
            sbi_observations: None,
            sbi_samples: None,
            c2st_folds: None,
        }
    }
}

/// Names of every experiment in `dir`, sorted.
pub fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the experiments folder {} (set --experiments or $RELAXFLOW_EXPERIMENTS)", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".toml")).map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// The file an experiment name (in `dir`) or a path to a .toml refers to. A name is a plain word (letters, digits,
/// `-`, `_`, `.`): it names the run folder runs/NAME, so it may not climb out of runs/.
pub fn resolve_file(name: &str, dir: &Path) -> Result<(String, PathBuf)> {
    if name.ends_with(".toml") {
        let path = PathBuf::from(name);
        if !path.exists() {
            bail!("experiment file {} not found", path.display());
        }
        let stem = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
        check_name(&stem).with_context(|| format!("experiment file {}", path.display()))?;
        return Ok((stem, path));
    }
    check_name(name)?;
    let path = dir.join(format!("{name}.toml"));
    if !path.exists() {
        let known = list_names(dir).unwrap_or_default().join(", ");
        bail!("unknown experiment `{name}` (no {}); known: {known}", path.display());
    }
    Ok((name.to_string(), path))
}

/// An experiment name that is safe as a folder name under runs/.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("`{name}` is not an experiment name (letters, digits, `-`, `_`, `.`; not starting with `.`); give a file as PATH.toml");
    }
    Ok(())
}

/// Reads an experiment file, applies `key=value` overrides, and checks every key and type.
pub fn load(path: &Path, overrides: &[String]) -> Result<Experiment> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut table: toml::Table = text.parse().map_err(|e| anyhow!("{}: {e}", path.display()))?;
    migrate_model(&mut table, &path.display().to_string());
    for o in overrides {
        apply_override(&mut table, o).with_context(|| format!("--set {o}"))?;
    }
    migrate_model(&mut table, "--set");
    let origin = if overrides.is_empty() { path.display().to_string() } else { format!("{} (with --set)", path.display()) };
    from_table(table, &origin)
}

/// Moves the old flat spelling of nested model keys to the nested tables (`super::legacy`), saying so on stderr.
fn migrate_model(table: &mut toml::Table, origin: &str) {
    if let Some(toml::Value::Table(model)) = table.get_mut("model") {
        let moved = super::legacy::migrate(model);
        if !moved.is_empty() {
            eprintln!("note: {origin}: read in the older flat layout ({}); it still loads", moved.join(", "));
        }
    }
}

/// Parses a whole config table; `origin` names it in errors.
pub fn from_table(table: toml::Table, origin: &str) -> Result<Experiment> {
    let exp: Experiment = parse_value(toml::Value::Table(table), origin, "")?;
    validate(&exp).map_err(|e| anyhow!("{origin}: {e}"))?;
    Ok(exp)
}

/// Deserializes `value` reporting the full key path on error, e.g. "f.toml: `train.steps`: invalid type ...".
pub fn parse_value<T: DeserializeOwned>(value: toml::Value, origin: &str, prefix: &str) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let key = match (prefix.is_empty(), inner == ".") {
            (true, true) => "top level".to_string(),
            (true, false) => format!("`{inner}`"),
            (false, true) => format!("`{prefix}`"),
            (false, false) => format!("`{prefix}.{inner}`"),
        };
        anyhow!("{origin}: {key}: {}", e.inner())
    })
}

/// Upper bounds that keep a typo from asking for terabytes: larger values are refused with the key named.
const MAX_BATCH: i64 = 1_000_000;
const MAX_POINTS: i64 = 50_000_000;
const MAX_GRID: i64 = 4096;

/// Range checks of every `[data]`, `[train]` and `[eval]` value (the model's keys are checked by its kind).
fn validate(e: &Experiment) -> Result<()> {
    let (t, v, d) = (&e.train, &e.eval, &e.data);
    let within = |key: &str, x: i64, lo: i64, hi: i64| -> Result<()> {
        if x < lo || x > hi {
            bail!("`{key}` must be between {lo} and {hi}, got {x}");
        }
        Ok(())
    };
    within("train.batch_size", t.batch_size, 1, MAX_BATCH)?;
    within("train.steps", t.steps, 0, i64::MAX / 2)?;
    within("train.log_every", t.log_every, 1, i64::MAX)?;
    within("train.checkpoint_every", t.checkpoint_every, 0, i64::MAX)?;
    within("train.sample_every", t.sample_every, 0, i64::MAX)?;
    within("train.warmup", t.warmup, 0, i64::MAX)?;
    if let Some(d) = t.ema_decay {
        if !(0.0..1.0).contains(&d) {
            bail!("`train.ema_decay` must be in [0, 1) (e.g. 0.9999; 0 = no average), got {d}");
        }
        if t.cuda_graph && d > 0.0 {
            bail!("`train.ema_decay` with `train.cuda_graph`: the captured step has no weight average yet; turn one of them off");
        }
    }
    within("eval.every", v.every, 0, i64::MAX)?;
    within("eval.n_eval", v.n_eval, 1, MAX_POINTS)?;
    if let Some(n) = v.n_final {
        within("eval.n_final", n, 1, MAX_POINTS)?;
    }
    within("eval.batch_size", v.batch_size, 1, MAX_BATCH)?;
    within("eval.n_samples", v.n_samples, 1, MAX_POINTS)?;
    within("eval.grid", v.grid, 2, MAX_GRID)?;
    within("eval.diag_samples", v.diag_samples, 1, MAX_POINTS)?;
    within("eval.diag_repeats", v.diag_repeats, 1, 10_000)?;
    within("eval.quality_samples", v.quality_samples, 1, MAX_POINTS)?;
    within("data.n_train", d.n_train, 1, MAX_POINTS)?;
    within("data.n_test", d.n_test, 1, MAX_POINTS)?;
    if let Some(dim) = d.dim {
        within("data.dim", dim, 1, 100_000)?;
    }
    if !(t.lr > 0.0 && t.lr.is_finite()) {
        bail!("`train.lr` must be a positive number, got {}", t.lr);
    }
    for (key, x) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
        if !(0.0..1.0).contains(&x) {
            bail!("`{key}` must be in [0, 1), got {x}");
        }
    }
    if !(t.eps > 0.0 && t.eps.is_finite()) {
        bail!("`train.eps` must be a positive number, got {}", t.eps);
    }
    if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
        bail!("`train.weight_decay` must be a non-negative number, got {}", t.weight_decay);
    }
    if let Some(c) = t.grad_clip {
        if !(c > 0.0 && c.is_finite()) {
            bail!("`train.grad_clip` must be a positive number, got {c}");
        }
    }
    if let Some(m) = t.time_limit_min {
        if !(m > 0.0 && m.is_finite()) {
            bail!("`train.time_limit_min` must be a positive number of minutes, got {m}");
        }
    }
    if !(d.test_fraction > 0.0 && d.test_fraction < 1.0) {
        bail!("`data.test_fraction` must be in (0, 1), got {}", d.test_fraction);
    }
    if let Some([x0, x1, y0, y1]) = v.bounds {
        if ![x0, x1, y0, y1].iter().all(|b| b.is_finite()) || x0 >= x1 || y0 >= y1 {
            bail!("`eval.bounds` must be finite [xmin, xmax, ymin, ymax] with xmin < xmax and ymin < ymax, got {:?}", [x0, x1, y0, y1]);
        }
    }
    if !e.model.contains_key("kind") {
        bail!("`model.kind` is missing (one of: {})", crate::experiment::registry::kinds().join(", "));
    }
    check_finite(&toml::Value::Table(e.model.clone()), "model")
}

/// Model keys that are sizes or counts (layers, widths, steps, samples): at least 1, at most a million.
const SIZE_KEYS: &[&str] = &[
    "hidden", "n_layers", "bins", "latent", "k", "eval_k", "steps", "sample_steps", "ddim_steps", "timesteps", "blocks",
    "levels", "hidden_channels", "unet_ch", "emb_dim", "n_blocks", "leapfrog", "couplings_per_block", "components",
    "hutchinson_probes", "sign_hidden", "unet_groups", "unet_mults", "channels",
    "feature_dim",
];

/// Every float in the model table is finite (TOML allows `nan` and `inf`; no hyper-parameter means them), no
/// integer is negative, and sizes and counts are positive and not absurd.
fn check_finite(v: &toml::Value, key: &str) -> Result<()> {
    let leaf = key.rsplit('.').next().unwrap_or(key).split('[').next().unwrap_or(key);
    match v {
        toml::Value::Float(x) if !x.is_finite() => bail!("`{key}` must be a finite number, got {x}"),
        toml::Value::Integer(i) if SIZE_KEYS.contains(&leaf) && !(1..=1_000_000).contains(i) => {
            bail!("`{key}` is a size or count and must be between 1 and 1000000, got {i}")
        }
        toml::Value::Integer(i) if *i < 0 => bail!("`{key}` must not be negative, got {i}"),
        toml::Value::Array(a) => a.iter().enumerate().try_for_each(|(i, x)| check_finite(x, &format!("{key}[{i}]"))),
        toml::Value::Table(t) => t.iter().try_for_each(|(k, x)| check_finite(x, &format!("{key}.{k}"))),
        _ => Ok(()),
    }
}

/// `a.b.c=value`: the value is read as TOML (number, bool, array, quoted string), else taken as a bare string.
///
/// ```
/// use relaxflow::experiment::config::apply_override;
///
/// let mut t: toml::Table = "[model]\nkind = \"ddpm\"".parse()?;
/// apply_override(&mut t, "model.net.hidden=[64,64]")?;
/// apply_override(&mut t, "model.sampler=ddim")?;
/// assert_eq!(t["model"]["net"]["hidden"].as_array().unwrap().len(), 2);
/// assert_eq!(t["model"]["sampler"].as_str(), Some("ddim"));
/// assert!(apply_override(&mut t, "model..x=1").is_err());
/// # anyhow::Ok(())
/// ```
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| anyhow!("expected key=value"))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("malformed key `{key}`");
    }
    let value = parse_scalar(raw.trim());
    let (last, sections) = parts.split_last().expect("split gives at least one part");
    let mut node = table;
    for s in sections {
        let entry = node.entry(s.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| anyhow!("`{s}` in `{key}` is not a section"))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

fn parse_scalar(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[data]\nname = \"moons\"\n[model]\nkind = \"realnvp\"\n[train]\nbatch_size = 8\nsteps = 10\nlr = 1e-3\n";

    fn parse(text: &str, overrides: &[&str]) -> Result<Experiment> {
        let mut t: toml::Table = text.parse().unwrap();
        for o in overrides {
            apply_override(&mut t, o)?;
        }
        from_table(t, "x.toml")
    }

    #[test]
    fn names_cannot_climb_out_of_runs() {
        for bad in ["../../x", "a/b", ".hidden", ""] {
            assert!(resolve_file(bad, Path::new("experiments")).unwrap_err().to_string().contains("is not an experiment name"), "{bad}");
        }
    }

    #[test]
    fn overrides_reach_any_key_with_the_right_type() {
        let e = parse(BASE, &["train.steps=25", "data.path=pts.npy", "model.hidden=[8,8]", "eval.bounds=[-1,1,-2,2]"]).unwrap();
        assert_eq!(e.train.steps, 25);
        assert_eq!(e.data.path.unwrap(), PathBuf::from("pts.npy"));
        assert_eq!(e.model["hidden"].as_array().unwrap().len(), 2);
        assert_eq!(e.eval.bounds, Some([-1.0, 1.0, -2.0, 2.0]));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let err = parse(BASE, &["train.stpes=3"]).unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("`train`") && err.contains("unknown field `stpes`"), "{err}");
        let err = parse(BASE, &["train.steps=\"many\""]).unwrap_err().to_string();
        assert!(err.contains("`train.steps`") && err.contains("invalid type"), "{err}");
        let err = parse(&BASE.replace("lr = 1e-3\n", ""), &[]).unwrap_err().to_string();
        assert!(err.contains("missing field `lr`"), "{err}");
        let err = parse(BASE, &["train.lr=-1"]).unwrap_err().to_string();
        assert!(err.contains("`train.lr` must be a positive number"), "{err}");
        let err = parse(BASE, &["extra=1"]).unwrap_err().to_string();
        assert!(err.contains("unknown field `extra`"), "{err}");
        assert!(parse(BASE, &["train.steps"]).unwrap_err().to_string().contains("expected key=value"));
        for (o, want) in [
            ("eval.n_final=0", "`eval.n_final` must be between 1"),
            ("eval.n_final=-3", "`eval.n_final` must be between 1"),
            ("eval.n_eval=0", "`eval.n_eval` must be between 1"),
            ("eval.grid=100000", "`eval.grid` must be between 2 and 4096"),
            ("train.batch_size=100000000", "`train.batch_size` must be between 1 and 1000000"),
            ("train.lr=inf", "`train.lr` must be a positive number"),
            ("train.beta2=1.5", "`train.beta2` must be in [0, 1)"),
            ("model.hidden=nan", "`model.hidden` must be a finite number"),
            ("model.hidden=[64,0]", "`model.hidden[1]` is a size"),
            ("model.n_layers=-2", "`model.n_layers` is a size"),
            ("eval.bounds=[1,0,0,1]", "`eval.bounds`"),
            ("data.test_fraction=1.0", "`data.test_fraction`"),
        ] {
            let err = parse(BASE, &[o]).unwrap_err().to_string();
            assert!(err.contains("x.toml") && err.contains(want), "{o}: {err}");
        }
        assert!(parse(BASE, &["train.steps.x=1"]).unwrap_err().to_string().contains("is not a section"));
    }
}
