//! The run lifecycle, one for every experiment: open a fresh run folder or resume one, seed, step, log, checkpoint,
//! evaluate, finish. The training loop is seeded per step (so a resumed run retraces an uninterrupted one exactly),
//! keeps device-side loss and NaN bookkeeping (one host sync per logged step) and writes atomic checkpoints. What
//! differs between experiments is behind [`Trainable`]: a generative experiment (`Session`, in `generative.rs`)
//! and the classifier (`classifier_run.rs`) implement it, and `open` chooses between them once, from `model.kind`.
use super::checkpoint::{self, Progress};
use super::metrics::MetricsLog;
use crate::tracking::EventWriter;
use super::graph_step::GraphStep;
use super::optim::{Adam, AdamConfig};
use super::replicas::Replicas;
use super::session::Session;
use super::summary;
use super::rundir::{self, FolderLock, Staging};
use super::{files, interrupt, parse_device, sync};
use crate::experiment::config::{self, resolve_file};
use crate::workspace::Workspace;
use crate::experiment::{Experiment, LrSchedule, TrainConfig};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// What `relaxflow train` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Experiment name or path to a .toml (None when resuming).
    pub experiment: Option<String>,
    pub overrides: Vec<String>,
    pub steps: Option<i64>,
    pub seed: Option<i64>,
    pub device: Option<String>,
    /// The run folder to write (default runs/NAME/\<timestamp>).
    pub out: Option<PathBuf>,
    /// A run folder to continue from its last checkpoint.
    pub resume: Option<PathBuf>,
    /// Testing aid: stop (as if killed) right after this step.
    pub halt_after: Option<i64>,
    /// Where named experiments are read and new runs written.
    pub workspace: Workspace,
}

/// Trains and returns the run folder.
///
/// Nothing is written until the config, the data and the model have been checked; the run folder appears complete
/// (config, run.json, step-0 checkpoint) or not at all, and stays locked by this process until it returns.
///
/// Launched as several processes (torchrun, srun, or the variables of `relaxflow::parallel::env`), it trains data
/// parallel: every rank checks that all have the same config and executable, takes rank 0's weights, and computes
/// its slice of each step's batch; rank 0 alone writes the run folder (see `replicas`).
pub fn train(opts: &TrainOptions) -> Result<PathBuf> {
    interrupt::install();
    let device = parse_device(opts.device.as_deref())?;
    let (replicas, device) = Replicas::from_env(device)?;
    let (mut job, run, name, start, mut adam, _lock) = match &opts.resume {
        Some(run) => resume(opts, run, device, &replicas)?,
        None => fresh(opts, device, &replicas)?,
    };
    let (step, elapsed_s) = replicas.sync_state(job.vs(), &mut adam, start.step, start.elapsed_s)?;
    if device.is_cuda() && job.exp().train.cudnn_benchmark {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    job.prepare();
    let mut tb = open_tensorboard(&*job, &run, step, &replicas)?;
    run_loop(&*job, &mut adam, &run, &name, Progress { step, elapsed_s }, opts.halt_after, &replicas, &mut tb)?;
    if replicas.size() > 1 {
        let digest = replicas.check_same_weights(job.vs())?;
        if replicas.is_main() {
            eprintln!("{name}: trained on {} ranks ({}); weights bit-identical on every rank (digest {digest:016x})",
                replicas.size(), replicas.world.backend().map_or("none", |b| b.name()));
        }
    }
    // The final evaluation uses the weight average where the run keeps one: rank 0 reloads it from the checkpoint,
    // and every rank holds the same average (the same updates of the same weights), which it now adopts.
    adam.adopt_ema();
    job.finish(&run, &name, &replicas)?;
    if let Some(tb) = tb.as_mut() {
        finish_tensorboard(tb, &run)?;
    }
    Ok(run)
}

/// Rank 0's TensorBoard file when `train.tensorboard` is on, with the resolved config as text the first time.
fn open_tensorboard(job: &dyn Trainable, run: &Path, step: i64, replicas: &Replicas) -> Result<Option<EventWriter>> {
    if !replicas.is_main() || !job.exp().train.tensorboard {
        return Ok(None);
    }
    let mut tb = EventWriter::create(run)?;
    if !tb.resumed() {
        let config = std::fs::read_to_string(run.join("config.toml")).with_context(|| format!("reading {}/config.toml", run.display()))?;
        tb.text(step, "config", &format!("```toml\n{config}```"))?;
    }
    Ok(Some(tb))
}

/// The final picture and summary.json, at the run's last step.
fn finish_tensorboard(tb: &mut EventWriter, run: &Path) -> Result<()> {
    let text = std::fs::read_to_string(run.join("summary.json")).with_context(|| format!("reading {}/summary.json", run.display()))?;
    let summary: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}/summary.json: not JSON", run.display()))?;
    let step = summary["steps"].as_i64().unwrap_or(0);
    let png = run.join("samples").join(format!("step-{step:06}.png"));
    if png.exists() {
        tb.picture(step, "samples", &png)?;
    }
    tb.text(step, "summary", &format!("```json\n{text}\n```"))
}

/// What the run lifecycle needs from an experiment: its weights and config, one step's loss, what a log line adds,
/// pictures and the final evaluation.
pub trait Trainable {
    fn vs(&self) -> &nn::VarStore;
    fn exp(&self) -> &Experiment;
    fn device(&self) -> Device;
    /// run.json's family.
    fn family(&self) -> crate::model::Family;
    /// The shape of one example, for run.json.
    fn shape(&self) -> Vec<i64>;
    /// A conditional model's context (kind and width or classes), for run.json.
    fn context_spec(&self) -> Option<crate::ContextSpec> {
        None
    }
    /// Rows of training data the step's batch indices are drawn from.
    fn n_train(&self) -> i64;
    /// Puts the training data on the device, once, before the loop.
    fn prepare(&mut self) {}
    /// Data-dependent initialisation (ActNorm and friends) before step 0, after `manual_seed(train.seed)`.
    fn data_init(&self) {}
    /// The loss of the training rows `idx` at `step`, after backward (gradients accumulated in `vs`).
    fn loss_backward(&self, idx: &Tensor, step: i64) -> Tensor;
    /// Why `loss_backward` cannot be captured in a CUDA graph (`train.cuda_graph`), or None when it can.
    fn not_capturable(&self) -> Option<String> {
        Some("this family's training step is not capturable".into())
    }
    /// What a log line adds (tallies since the last line; a test evaluation when `eval_now`), and the bar's message.
    /// Every rank calls it at the same step: an evaluation is sharded over the ranks.
    fn log(&self, line: &mut serde_json::Value, eval_now: bool, bar: &ProgressBar, name: &str, replicas: &Replicas) -> Result<()>;
    /// A picture at `step` (`train.sample_every`).
    fn picture(&self, _run: &Path, _step: i64) -> Result<()> {
        Ok(())
    }
    /// The final evaluation with the saved weights, and summary.json (written by rank 0; every rank calls it and
    /// takes its share of the sharded parts).
    fn finish(&self, run: &Path, name: &str, replicas: &Replicas) -> Result<()>;
}

/// The experiment behind `exp`, built on `device`: the classifier for `model.kind = "classifier"`, else a generative
/// model from the registry. The one place the two kinds of run part.
pub fn open(exp: Experiment, origin: &str, device: Device, ws: &Workspace) -> Result<Box<dyn Trainable>> {
    let kind = exp.model.get("kind").and_then(|k| k.as_str());
    if kind == Some(super::classifier_run::KIND) {
        return Ok(Box::new(super::classifier_run::ClassifierRun::open(exp, origin, device)?));
    }
    let mut s = Session::open(exp, origin, device)?;
    s.runs = ws.runs.clone();
    Ok(Box::new(s))
}

fn adam_config(t: &TrainConfig) -> AdamConfig {
    AdamConfig { beta1: t.beta1, beta2: t.beta2, eps: t.eps, weight_decay: t.weight_decay }
}

/// The run's optimizer: its constants, update implementation, parameter layout and weight average from `[train]`.
fn new_adam(vs: &nn::VarStore, t: &TrainConfig) -> Result<Adam> {
    Ok(Adam::with_layout(vs, adam_config(t), t.channels_last)?.with_impl(t.optimizer_impl)?.with_ema(t.ema()))
}

/// The job, its run folder, the experiment's name, where it starts, the optimizer and (rank 0) the folder's lock.
type Started = (Box<dyn Trainable>, PathBuf, String, Progress, Adam, Option<FolderLock>);

/// A fresh run's experiment (name, file, config with --set, --steps and --seed applied) and the folder it writes
/// (--out, else runs/NAME/<stamp>), refusing a folder that already holds a run (`main`: the rank that writes it).
fn fresh_experiment(opts: &TrainOptions, main: bool) -> Result<(String, PathBuf, Experiment, PathBuf)> {
    let Some(experiment) = opts.experiment.as_deref() else { bail!("name an experiment to train (see `relaxflow list`)") };
    let (name, file) = resolve_file(experiment, &opts.workspace.experiments)?;
    let mut overrides = opts.overrides.clone();
    overrides.extend(opts.steps.map(|n| format!("train.steps={n}")));
    overrides.extend(opts.seed.map(|n| format!("train.seed={n}")));
    let exp = config::load(&file, &overrides)?;
    let run = match &opts.out {
        Some(dir) => dir.clone(),
        None => new_run_dir(&opts.workspace.runs, &name)?,
    };
    if !main {
        return Ok((name, file, exp, run));
    }
    if rundir::is_run(&run) || run.join("config.toml").exists() {
        bail!("{} already holds a run; continue it with --resume {}", run.display(), run.display());
    }
    if !rundir::is_free(&run) {
        bail!("{} already holds files; choose an empty or new folder for --out", run.display());
    }
    Ok((name, file, exp, run))
}

/// What a fresh run is made from, recorded in run.json for provenance: the experiment file, its digest and every
/// override. (A sweep decides whether an existing run is its own by comparing configs key by key, which also works
/// for runs made before this field existed.)
fn origin_json(opts: &TrainOptions, file: &Path) -> serde_json::Value {
    let digest = std::fs::read(file).map(|b| {
        use sha2::Digest;
        sha2::Sha256::digest(&b).iter().map(|x| format!("{x:02x}")).collect::<String>()
    });
    json!({
        "experiment_file": file, "experiment_sha256": digest.ok(), "overrides": opts.overrides,
        "steps": opts.steps, "seed": opts.seed,
    })
}

/// Makes a fresh run's folder complete before it exists: run.json, config.toml, samples/ and the step-0 checkpoint
/// are written into a hidden staging folder, which is then renamed to `target` (or, with no --out, the first free
/// runs/NAME/<stamp>[-k]). A kill at any moment leaves either no run folder or one that `--resume` continues.
fn create_run(opts: &TrainOptions, target: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<(PathBuf, FolderLock)> {
    let target = match std::fs::canonicalize(target) {
        Ok(real) => real, // an existing (empty) folder, or the folder a link points to
        Err(_) => target.to_path_buf(),
    };
    let parent = target.parent().map(Path::to_path_buf).unwrap_or_default();
    let staging = Staging::new(&parent)?;
    write(staging.dir())?;
    let candidates: Box<dyn Iterator<Item = PathBuf>> = if opts.out.is_some() {
        Box::new(std::iter::once(target.clone()))
    } else {
        let stem = target.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        Box::new(std::iter::once(target.clone()).chain((2..).map(move |k| parent.join(format!("{stem}-{k}")))))
    };
    staging.publish(candidates)
}

/// `run.json`, written when a run starts.
fn write_run_json(run: &Path, name: &str, job: &dyn Trainable, device: Device, origin: serde_json::Value) -> Result<()> {
    let mut info = json!({
        "experiment": name, "family": job.family(), "shape": job.shape(), "device": format!("{device:?}"),
        "created": chrono::Local::now().to_rfc3339(), "git_commit": summary::git_commit(), "versions": summary::versions(),
        "origin": origin,
    });
    if let Some(spec) = job.context_spec() {
        info["context"] = serde_json::to_value(spec)?;
    }
    summary::write_json(&run.join("run.json"), &info)
}

/// A resumed run, locked (by the `main` rank), with its config path and experiment (--steps applied); nothing but
/// --steps and --device may change. Nothing is written here.
fn resume_experiment(opts: &TrainOptions, run: &Path, main: bool) -> Result<(Option<FolderLock>, PathBuf, Experiment)> {
    if opts.experiment.is_some() || !opts.overrides.is_empty() || opts.seed.is_some() || opts.out.is_some() {
        bail!("--resume continues a run with its own config; only --steps (and --device) may change");
    }
    if !run.is_dir() {
        bail!("{}: no such run folder", run.display());
    }
    let config_path = run.join("config.toml");
    if !config_path.exists() {
        bail!("{}: not a run folder (no config.toml)", run.display());
    }
    let lock = if main { Some(FolderLock::acquire(run)?) } else { None };
    let overrides: Vec<String> = opts.steps.map(|n| format!("train.steps={n}")).into_iter().collect();
    let exp = config::load(&config_path, &overrides)?;
    Ok((lock, config_path, exp))
}

/// Once the model of a resumed run is built: Adam and progress loaded from the checkpoint (None: the run has no
/// checkpoint and starts again from step 0, which retraces the same run), everything checked, and only then the new
/// step count saved, metrics after the checkpoint dropped and an old summary set aside. Returns them with the
/// experiment's name.
fn resume_state(opts: &TrainOptions, run: &Path, vs: &tch::nn::VarStore, exp: &Experiment) -> Result<(Adam, Option<Progress>, String)> {
    let info_path = run.join("run.json");
    let text = std::fs::read_to_string(&info_path).with_context(|| format!("{}: not a relaxflow run (cannot read run.json)", run.display()))?;
    let info: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: malformed", info_path.display()))?;
    let name = info["experiment"].as_str().with_context(|| format!("{}: lacks `experiment`", info_path.display()))?.to_string();
    let mut adam = new_adam(vs, &exp.train)?;
    let ckpt = run.join(checkpoint::FILE);
    let progress = if ckpt.exists() { Some(checkpoint::load_all(&ckpt, vs, &mut adam)?) } else { None };
    let step = progress.map_or(0, |p| p.step);
    let finished = run.join("summary.json").exists();
    if exp.train.steps < step {
        bail!("{}: the run has reached step {step}; --steps {} would go back (give at least {step})", run.display(), exp.train.steps);
    }
    if finished && exp.train.steps == step {
        bail!("{} is finished (step {step}, summary.json); to train it further pass --steps N with N > {step}", run.display());
    }
    // Checked; now write.
    if opts.steps.is_some() {
        files::write_atomic(&run.join("config.toml"), toml::to_string(exp)?.as_bytes())?;
    }
    MetricsLog::new(run).truncate_after(step)?;
    crate::tracking::writer::truncate_after(run, step)?;
    if finished {
        std::fs::rename(run.join("summary.json"), run.join("summary.prev.json")).context("setting the old summary.json aside")?;
        eprintln!("{}: training further; the old summary is kept as summary.prev.json", run.display());
    }
    match progress {
        Some(p) => eprintln!("resuming {} from step {}", run.display(), p.step),
        None => eprintln!("{}: no checkpoint yet; starting again from step 0 (the same run)", run.display()),
    }
    Ok((adam, progress, name))
}

/// Data-dependent initialisation from the training seed: the same on a fresh start and on a restart of a run that
/// never reached a checkpoint.
fn data_init(job: &dyn Trainable) {
    tch::manual_seed(job.exp().train.seed);
    job.data_init();
}

fn fresh(opts: &TrainOptions, device: Device, replicas: &Replicas) -> Result<Started> {
    let (name, file, mut exp, target) = fresh_experiment(opts, replicas.is_main())?;
    absolute_data_paths(&mut exp.data);
    // The folder is made only once the data loads and the model builds, so a bad config leaves nothing behind.
    let job = open(exp, &file.display().to_string(), device, &opts.workspace)?;
    replicas.check_same_job(&toml::to_string(job.exp())?)?;
    let adam = new_adam(job.vs(), &job.exp().train)?;
    data_init(&*job);
    let start = Progress { step: 0, elapsed_s: 0.0 };
    if !replicas.is_main() {
        return Ok((job, target, name, start, adam, None));
    }
    let (run, lock) = create_run(opts, &target, |dir| {
        write_run_json(dir, &name, &*job, device, origin_json(opts, &file))?;
        files::write_atomic(&dir.join("config.toml"), toml::to_string(job.exp())?.as_bytes())?;
        std::fs::create_dir_all(dir.join("samples")).context("creating samples/")?;
        checkpoint::save(&dir.join(checkpoint::FILE), job.vs(), &adam, start)
    })?;
    Ok((job, run, name, start, adam, Some(lock)))
}

fn resume(opts: &TrainOptions, run: &Path, device: Device, replicas: &Replicas) -> Result<Started> {
    let (lock, config_path, exp) = resume_experiment(opts, run, replicas.is_main())?;
    let job = open(exp, &config_path.display().to_string(), device, &opts.workspace)?;
    replicas.check_same_job(&toml::to_string(job.exp())?)?;
    if !replicas.is_main() {
        // Weights, moments and progress come from rank 0 (`Replicas::sync_state`); this rank writes nothing.
        let adam = new_adam(job.vs(), &job.exp().train)?;
        let start = Progress { step: 0, elapsed_s: 0.0 };
        return Ok((job, run.to_path_buf(), String::new(), start, adam, None));
    }
    let (adam, progress, name) = resume_state(opts, run, job.vs(), job.exp())?;
    if progress.is_none() {
        data_init(&*job);
    }
    std::fs::create_dir_all(run.join("samples")).with_context(|| format!("creating {}/samples", run.display()))?;
    Ok((job, run.to_path_buf(), name, progress.unwrap_or(Progress { step: 0, elapsed_s: 0.0 }), adam, lock))
}

/// A user's data files, made absolute so the run's config works from any folder (eval, sample, resume).
pub(crate) fn absolute_data_paths(data: &mut crate::data::DataConfig) {
    for p in [&mut data.path, &mut data.test_path].into_iter().flatten() {
        if let Ok(abs) = std::fs::canonicalize(&*p) {
            *p = abs;
        }
    }
}

/// RUNS/NAME/<YYYYmmdd-HHMMSS> (publishing adds a suffix if that is taken by then).
fn new_run_dir(runs: &Path, name: &str) -> Result<PathBuf> {
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let base = runs.join(name);
    let mut dir = base.join(&stamp);
    let mut k = 2;
    while dir.exists() {
        dir = base.join(format!("{stamp}-{k}"));
        k += 1;
    }
    Ok(dir)
}

/// The message a run stopped by a signal leaves.
pub(crate) fn resume_hint(run: &Path, step: i64) -> String {
    format!("checkpoint at step {step} written; continue with `relaxflow train --resume {}`", run.display())
}

/// The seed of step `step`: every step draws its batch and noise from its own seed.
pub(crate) fn step_seed(seed: i64, step: i64) -> i64 {
    seed.wrapping_mul(1_000_003).wrapping_add(step + 1)
}

/// Learning rate at `step`: linear warm-up, then constant or cosine decay to 0.
pub fn lr_at(t: &TrainConfig, step: i64) -> f64 {
    if step < t.warmup {
        return t.lr * (step + 1) as f64 / t.warmup as f64;
    }
    match t.lr_schedule {
        LrSchedule::Constant => t.lr,
        LrSchedule::Cosine => {
            let p = (step - t.warmup) as f64 / (t.steps - t.warmup).max(1) as f64;
            0.5 * t.lr * (1.0 + (std::f64::consts::PI * p).cos())
        }
    }
}

pub fn progress_bar(total: i64, start: i64) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("valid template"),
    );
    bar.set_position(start as u64);
    bar
}

/// Device-side bookkeeping: loss sum since the last log and the first step whose loss was not finite.
struct Tally {
    loss_sum: Tensor,
    count: i64,
    first_bad: Tensor,
}

const NO_BAD_STEP: i64 = i64::MAX;

impl Tally {
    fn new(device: Device) -> Self {
        Tally {
            loss_sum: Tensor::zeros([], (Kind::Double, device)),
            count: 0,
            first_bad: Tensor::full([], NO_BAD_STEP, (Kind::Int64, device)),
        }
    }

    /// This rank's loss at `step`, weighted by its share of the batch.
    fn add(&mut self, loss: &Tensor, step: i64, weight: f64) {
        let _ = self.loss_sum.g_add_(&(loss.detach().to_kind(Kind::Double) * weight));
        self.count += 1;
        let here = Tensor::where_scalar(&loss.isfinite(), NO_BAD_STEP, step + 1);
        self.first_bad = self.first_bad.minimum(&here);
    }

    /// Errors when a loss was NaN/inf since the start (on any rank), naming the step and the checkpoint kept.
    fn check(&self, run: &Path, last_ckpt: i64, replicas: &Replicas) -> Result<()> {
        let bad = replicas.min_over_ranks(&self.first_bad)?;
        if bad == NO_BAD_STEP {
            return Ok(());
        }
        let kept = if run.join(checkpoint::FILE).exists() {
            format!("the last good checkpoint (step {last_ckpt}) is kept in {}", run.display())
        } else {
            "no checkpoint had been written yet".to_string()
        };
        bail!("loss is NaN or infinite at step {bad}; stopped. {kept}; check the data scale and train.lr")
    }

    /// Mean loss (over the whole batch, all ranks) since the last call.
    fn take_mean(&mut self, replicas: &Replicas) -> Result<f64> {
        let mean = replicas.sum_over_ranks(&self.loss_sum)?.double_value(&[]) / self.count.max(1) as f64;
        let _ = self.loss_sum.zero_();
        self.count = 0;
        Ok(mean)
    }
}

/// Whether `elapsed_s` seconds of training have used up `train.time_limit_min`.
fn time_is_up(t: &TrainConfig, elapsed_s: f64) -> bool {
    t.time_limit_min.is_some_and(|m| elapsed_s >= m * 60.0)
}

pub(crate) fn due(every: i64, step: i64) -> bool {
    every > 0 && step % every == 0
}

#[allow(clippy::too_many_arguments)]
fn run_loop(job: &dyn Trainable, adam: &mut Adam, run: &Path, name: &str, start: Progress, halt_after: Option<i64>, replicas: &Replicas, tb: &mut Option<EventWriter>) -> Result<()> {
    let (exp, device) = (job.exp(), job.device());
    let t = &exp.train;
    let n_train = job.n_train();
    let metrics = MetricsLog::new(run);
    let bar = progress_bar(t.steps, start.step);
    if !replicas.is_main() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let main = replicas.is_main();
    let split = replicas.split(t.batch_size);
    bar.set_message(name.to_string());
    let mut tally = Tally::new(device);
    let mut last_ckpt = start.step;
    let mut elapsed = start.elapsed_s;
    let mut clock = Instant::now();
    let mut log_clock = (start.elapsed_s, start.step);
    if start.step > 0 && start.step < t.steps && time_is_up(t, start.elapsed_s) {
        // A run resumed after its time limit ended training (e.g. stopped during its final evaluation).
        return Ok(());
    }
    let mut graphed = GraphStep::new(job, adam, replicas.size());
    if let Some(note) = graphed.as_ref().and_then(|g| g.note()).filter(|_| main) {
        eprintln!("{name}: {note}");
    }
    for step in start.step..t.steps {
        tch::manual_seed(step_seed(t.seed, step));
        let done = step + 1;
        let log_now = due(t.log_every, done) || done == t.steps;
        let lr = lr_at(t, step);
        let (loss, grad_norm) = match graphed.as_mut() {
            Some(g) => {
                let (was_captured, had_note) = (g.is_captured(), g.note().is_some());
                let (loss, norm) = g.step(job, adam, step, lr)?;
                if main && !was_captured && g.is_captured() {
                    eprintln!("{name}: train.cuda_graph: the training step was captured at step {done}; later steps replay it");
                }
                if let Some(note) = g.note().filter(|_| main && !had_note) {
                    eprintln!("{name}: {note}");
                }
                (loss, Some(norm))
            }
            None => {
                let idx = Tensor::randint(n_train, [t.batch_size], (Kind::Int64, device));
                adam.zero_grad();
                let loss = crate::rows::with_split(split, || job.loss_backward(&split.rows_of(&idx), step));
                replicas.reduce_grads(adam, split)?;
                let grad_norm = match t.grad_clip {
                    Some(c) => Some(adam.clip_grad_norm(c)),
                    None => log_now.then(|| adam.grad_norm()),
                };
                adam.try_step(lr)?;
                (loss, grad_norm)
            }
        };
        tally.add(&loss, step, split.weight());
        bar.inc(1);
        let stop_now = replicas.any(interrupt::pending().is_some())?;
        let out_of_time = log_now && done < t.steps && replicas.any(time_is_up(t, elapsed + clock.elapsed().as_secs_f64()))?;
        let checkpoint_now = due(t.checkpoint_every, done) || done == t.steps || stop_now || out_of_time;
        let halt_now = halt_after == Some(done);
        if !(log_now || checkpoint_now || halt_now || due(exp.eval.every, done) || due(t.sample_every, done)) {
            continue;
        }
        // Out-of-loop work below is not training time.
        sync(device);
        elapsed += clock.elapsed().as_secs_f64();
        tally.check(run, last_ckpt, replicas)?;
        if log_now {
            let mut line = json!({
                "step": done, "loss": tally.take_mean(replicas)?, "lr": lr,
                "grad_norm": grad_norm.map(|g| g.double_value(&[])), "wall_time_s": elapsed,
                "steps_per_s": (done - log_clock.1) as f64 / (elapsed - log_clock.0).max(1e-9),
            });
            if let Some(g) = &graphed {
                line["cuda_graph"] = json!(if g.is_captured() { "replayed" } else { "eager" });
            }
            // The test likelihood of a run with train.ema_decay is of the averaged weights, as the final one is.
            let eval_now = due(exp.eval.every, done);
            if eval_now && adam.ema.is_some() {
                line["eval_weights"] = json!("ema");
            }
            if eval_now {
                adam.swapped_in_ema(|| job.log(&mut line, eval_now, &bar, name, replicas))?;
            } else {
                job.log(&mut line, eval_now, &bar, name, replicas)?;
            }
            if main {
                metrics.append(&line)?;
                if let Some(tb) = tb.as_mut() {
                    tb.metrics_line(&line)?;
                }
            }
            log_clock = (elapsed, done);
        }
        if checkpoint_now {
            replicas.average_buffers(job.vs())?;
        }
        if checkpoint_now && main {
            checkpoint::save(&run.join(checkpoint::FILE), job.vs(), adam, Progress { step: done, elapsed_s: elapsed })?;
        }
        if checkpoint_now {
            last_ckpt = done;
        }
        if stop_now {
            bar.abandon();
            interrupt::check(|| resume_hint(run, done))?;
        }
        if due(t.sample_every, done) && done != t.steps && main {
            adam.swapped_in_ema(|| job.picture(run, done))?;
            let png = run.join("samples").join(format!("step-{done:06}.png"));
            if let (Some(tb), true) = (tb.as_mut(), png.exists()) {
                tb.picture(done, "samples", &png)?;
            }
        }
        if out_of_time {
            bar.finish_and_clear();
            if main {
                eprintln!("{name}: train.time_limit_min = {} reached after step {done} of {}; training ends here", t.time_limit_min.unwrap_or(0.0), t.steps);
            }
            return Ok(());
        }
        if halt_now {
            bar.abandon();
            bail!("halted after step {done} (--halt-after); continue with --resume {}", run.display());
        }
        clock = Instant::now();
    }
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_reaches_zero() {
        let mut t: TrainConfig = toml::from_str("batch_size = 1\nsteps = 100\nlr = 1.0\nwarmup = 10\nlr_schedule = \"cosine\"").unwrap();
        assert!((lr_at(&t, 0) - 0.1).abs() < 1e-12);
        assert!((lr_at(&t, 10) - 1.0).abs() < 1e-12);
        assert!(lr_at(&t, 99) < 1e-3);
        t.lr_schedule = LrSchedule::Constant;
        assert_eq!(lr_at(&t, 99), 1.0);
        assert!(!t.cudnn_benchmark, "cuDNN's timed algorithm choice is opt-in");
        let on: TrainConfig = toml::from_str("batch_size = 1\nsteps = 1\nlr = 1.0\ncudnn_benchmark = true").unwrap();
        assert!(on.cudnn_benchmark);
    }
}
