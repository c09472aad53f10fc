//! Training the classifier (`relaxflow train mnist-classifier`): cross-entropy with the runner's flat Adam on
//! dequantized images (pixel + u)/256, u ~ U(0, 1) drawn afresh per batch, so the classifier has seen continuous
//! inputs like a model's samples rather than only the 256 pixel levels.
//!
//! It follows the generative runner (`runner::train`): step k draws its batch and noise after
//! `manual_seed(seed * 1000003 + k + 1)`, so `--resume` retraces an uninterrupted run; atomic checkpoints; the same
//! run folder (config.toml, run.json, metrics.jsonl, loss.png, checkpoint.pt, summary.json). The summary is a
//! [`ClassifierSummary`]: test accuracy and cross-entropy on the 10k test images, dequantized with the same fixed
//! draw as the generative models' test set.
use super::data::{self as labelled, Labelled};
use super::net::{Classifier, ClassifierParams};
use super::summary::{self as csummary, ClassifierSummary};
use crate::data::idx::Split;
use crate::experiment::config::{self, resolve_file};
use crate::experiment::Experiment;
use crate::runner::checkpoint::{self, Progress};
use crate::runner::metrics::MetricsLog;
use crate::runner::optim::Adam;
use crate::runner::rundir::FolderLock;
use crate::runner::train::{
    adam_config, create_run, due, fresh_experiment, lr_at, origin_json, progress_bar, resume_experiment, resume_hint, resume_state, step_seed,
    write_run_json, TrainOptions,
};
use crate::runner::{files, interrupt, parse_device, pictures, summary, sync};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// The `model.kind` of classifier experiments.
pub const KIND: &str = "classifier";

/// Whether `opts` trains or resumes a classifier experiment (the one dispatch in `runner::train::train`). Anything
/// unreadable is "no": the generative path then reports the problem.
pub fn is_classifier(opts: &TrainOptions) -> bool {
    let table = match (&opts.resume, &opts.experiment) {
        (Some(run), _) => read_table(&run.join("config.toml"), &[]),
        (None, Some(name)) => resolve_file(name).ok().and_then(|(_, file)| read_table(&file, &opts.overrides)),
        (None, None) => None,
    };
    table.and_then(|t| Some(t.get("model")?.get("kind")?.as_str()? == KIND)).unwrap_or(false)
}

fn read_table(path: &Path, overrides: &[String]) -> Option<toml::Table> {
    let mut table: toml::Table = std::fs::read_to_string(path).ok()?.parse().ok()?;
    for o in overrides {
        config::apply_override(&mut table, o).ok()?;
    }
    Some(table)
}

/// A classifier built from an experiment, with its data.
struct Setup {
    /// The experiment with `[model]` resolved (defaults filled in).
    exp: Experiment,
    params: ClassifierParams,
    vs: nn::VarStore,
    net: Classifier,
    train: Labelled,
    /// Test images dequantized once with the data seed's fixed draw, and their labels.
    test: Labelled,
    device: Device,
}

impl Setup {
    fn open(mut exp: Experiment, origin: &str, device: Device) -> Result<Setup> {
        let params = parse_params(&exp.model, origin)?;
        let mut resolved = toml::Table::try_from(&params)?;
        resolved.insert("kind".into(), toml::Value::String(KIND.into()));
        exp.model = resolved;
        let d = &exp.data;
        let Some(name) = d.name.as_deref() else { bail!("{origin}: a classifier needs data.name = \"mnist\" or \"fashion-mnist\"") };
        labelled::check_name(name).with_context(|| format!("{origin}: data.name"))?;
        if d.path.is_some() || d.binarize {
            bail!("{origin}: a classifier reads {name}'s IDX files; data.path and data.binarize do not apply");
        }
        let dir = d.dir.join(name);
        let train = labelled::load(&dir, Split::Train)?;
        let test = labelled::load(&dir, Split::Test)?;
        // The generative models' test set: the same fixed dequantization draw as `data::load`.
        tch::manual_seed(d.seed * 2 + 2);
        let test = Labelled { pixels: crate::data::dequantize(&test.pixels), labels: test.labels };
        tch::manual_seed(exp.train.seed);
        let vs = nn::VarStore::new(device);
        let net = Classifier::new(&vs.root(), &params).with_context(|| format!("{origin}: [model]"))?;
        Ok(Setup { exp, params, vs, net, train, test, device })
    }

    fn n_params(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}

/// The classifier's parameters from a `[model]` table (with `kind`), naming `model.<key>` and the file on error.
pub fn parse_params(model: &toml::Table, origin: &str) -> Result<ClassifierParams> {
    let mut table = model.clone();
    table.remove("kind");
    config::parse_value(toml::Value::Table(table), origin, "model")
}

/// Trains (or resumes) a classifier experiment and returns the run folder.
pub fn train(opts: &TrainOptions) -> Result<PathBuf> {
    let device = parse_device(opts.device.as_deref())?;
    interrupt::install();
    let (s, run, name, start, mut adam, _lock) = match &opts.resume {
        Some(run) => resume(opts, run, device)?,
        None => fresh(opts, device)?,
    };
    run_loop(&s, &mut adam, &run, &name, start, opts.halt_after)?;
    finish(&s, &run, &name)?;
    Ok(run)
}

type Started = (Setup, PathBuf, String, Progress, Adam, FolderLock);

fn fresh(opts: &TrainOptions, device: Device) -> Result<Started> {
    let (name, file, exp, target) = fresh_experiment(opts)?;
    let s = Setup::open(exp, &file.display().to_string(), device)?;
    let adam = Adam::new(&s.vs, adam_config(&s.exp.train))?;
    let start = Progress { step: 0, elapsed_s: 0.0 };
    let (run, lock) = create_run(opts, &target, |dir| {
        write_run_json(dir, &name, KIND, &[1, 28, 28], device, origin_json(opts, &file))?;
        files::write_atomic(&dir.join("config.toml"), toml::to_string(&s.exp)?.as_bytes())?;
        checkpoint::save(&dir.join(checkpoint::FILE), &s.vs, &adam, start)
    })?;
    Ok((s, run, name, start, adam, lock))
}

fn resume(opts: &TrainOptions, run: &Path, device: Device) -> Result<Started> {
    let (lock, config_path, exp) = resume_experiment(opts, run)?;
    let s = Setup::open(exp, &config_path.display().to_string(), device)?;
    let (adam, progress, name) = resume_state(opts, run, &s.vs, &s.exp)?;
    Ok((s, run.to_path_buf(), name, progress.unwrap_or(Progress { step: 0, elapsed_s: 0.0 }), adam, lock))
}

fn run_loop(s: &Setup, adam: &mut Adam, run: &Path, name: &str, start: Progress, halt_after: Option<i64>) -> Result<()> {
    let (t, device) = (&s.exp.train, s.device);
    let (pixels, labels) = (s.train.pixels.to_device(device), s.train.labels.to_device(device));
    let n_train = s.train.len();
    let metrics = MetricsLog::new(run);
    let bar = progress_bar(t.steps, start.step);
    bar.set_message(name.to_string());
    // Device-side sums since the last log line: no host sync on ordinary steps.
    let (mut loss_sum, mut correct) = (Tensor::zeros([], (Kind::Double, device)), Tensor::zeros([], (Kind::Int64, device)));
    let mut count = 0;
    let mut elapsed = start.elapsed_s;
    let mut clock = Instant::now();
    let mut log_clock = (start.elapsed_s, start.step);
    for step in start.step..t.steps {
        tch::manual_seed(step_seed(t.seed, step));
        let idx = Tensor::randint(n_train, [t.batch_size], (Kind::Int64, device));
        let x = crate::data::dequantize(&pixels.index_select(0, &idx));
        let y = labels.index_select(0, &idx);
        adam.zero_grad();
        let logits = s.net.logits(&x);
        let loss = logits.cross_entropy_for_logits(&y);
        loss.backward();
        if let Some(c) = t.grad_clip {
            let _ = adam.clip_grad_norm(c);
        }
        let lr = lr_at(t, step);
        adam.step(lr);
        let _ = loss_sum.g_add_(&loss.detach().to_kind(Kind::Double));
        let _ = correct.g_add_(&logits.detach().argmax(-1, false).eq_tensor(&y).sum(Kind::Int64));
        count += 1;
        bar.inc(1);
        let done = step + 1;
        let log_now = due(t.log_every, done) || done == t.steps;
        let stop_now = interrupt::pending().is_some();
        let checkpoint_now = due(t.checkpoint_every, done) || done == t.steps || stop_now;
        let halt_now = halt_after == Some(done);
        if !(log_now || checkpoint_now || halt_now) {
            continue;
        }
        // Out-of-loop work below is not training time.
        sync(device);
        elapsed += clock.elapsed().as_secs_f64();
        let mean_loss = loss_sum.double_value(&[]) / count.max(1) as f64;
        if !mean_loss.is_finite() {
            bail!("loss is NaN or infinite between steps {} and {done}; stopped (the last checkpoint in {} is kept); check train.lr", done - count + 1, run.display());
        }
        if log_now {
            let mut line = json!({
                "step": done, "loss": mean_loss, "train_accuracy": correct.int64_value(&[]) as f64 / (count * t.batch_size) as f64,
                "lr": lr, "wall_time_s": elapsed, "steps_per_s": (done - log_clock.1) as f64 / (elapsed - log_clock.0).max(1e-9),
            });
            if due(s.exp.eval.every, done) {
                let n = s.exp.eval.n_eval.min(s.test.len());
                let (acc, nll) = evaluate(&s.net, &s.test.pixels.narrow(0, 0, n), &s.test.labels.narrow(0, 0, n), s.exp.eval.batch_size, device);
                line["test_accuracy"] = json!(acc);
                line["test_nll"] = json!(nll);
                bar.set_message(format!("{name} test accuracy {acc:.4}"));
            }
            metrics.append(&line)?;
            log_clock = (elapsed, done);
            let _ = loss_sum.zero_();
            let _ = correct.zero_();
            count = 0;
        }
        if checkpoint_now {
            checkpoint::save(&run.join(checkpoint::FILE), &s.vs, adam, Progress { step: done, elapsed_s: elapsed })?;
        }
        if stop_now {
            bar.abandon();
            interrupt::check(|| resume_hint(run, done))?;
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

/// (accuracy, mean cross-entropy in nats) of `net` on images [N, 1, 28, 28] in [0, 1] with labels [N], in batches.
pub fn evaluate(net: &Classifier, images: &Tensor, labels: &Tensor, batch_size: i64, device: Device) -> (f64, f64) {
    let n = labels.size()[0];
    let (mut correct, mut nll) = (0i64, 0.0);
    tch::no_grad(|| {
        for start in (0..n).step_by(batch_size.max(1) as usize) {
            let len = batch_size.min(n - start);
            let logits = net.logits(&images.narrow(0, start, len).to_device(device));
            let y = labels.narrow(0, start, len).to_device(device);
            correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
            nll += logits.cross_entropy_for_logits(&y).double_value(&[]) * len as f64;
        }
    });
    (correct as f64 / n.max(1) as f64, nll / n.max(1) as f64)
}

/// Reloads the saved weights, measures the test set and writes summary.json and loss.png.
fn finish(s: &Setup, run: &Path, name: &str) -> Result<()> {
    let progress = checkpoint::load_weights(&run.join(checkpoint::FILE), &s.vs)?;
    let n = s.exp.eval.n_final.unwrap_or(i64::MAX).clamp(1, s.test.len());
    let (acc, nll) = evaluate(&s.net, &s.test.pixels.narrow(0, 0, n), &s.test.labels.narrow(0, 0, n), s.exp.eval.batch_size, s.device);
    pictures::loss_curve(run)?;
    let summary = ClassifierSummary {
        experiment: name.to_string(),
        family: KIND.into(),
        dataset: s.exp.data.name.clone().unwrap_or_default(),
        test_accuracy: acc,
        test_nll_nats: nll,
        test_n: n,
        steps: progress.step,
        train_time_s: progress.elapsed_s,
        steps_per_s: progress.step as f64 / progress.elapsed_s.max(1e-9),
        params: s.n_params(),
        feature_dim: s.params.feature_dim,
        device: format!("{:?}", s.device),
        threads: tch::get_num_threads(),
        seed: s.exp.train.seed,
        versions: summary::versions(),
        git_commit: summary::git_commit(),
        finished_at: chrono::Local::now().to_rfc3339(),
    };
    summary::write_json(&run.join("summary.json"), &summary)?;
    eprintln!(
        "{name}: test accuracy {acc:.4}, cross-entropy {nll:.4} nats ({n} test images) in {:.1}s ({:.2} steps/s)",
        progress.elapsed_s, summary.steps_per_s
    );
    Ok(())
}

/// A finished classifier run, loaded for use.
pub struct Trained {
    pub vs: nn::VarStore,
    pub net: Classifier,
    pub summary: ClassifierSummary,
}

/// Opens a finished classifier run folder (summary.json, config.toml, checkpoint.pt) with its weights on `device`.
pub fn open_run(run: &Path, device: Device) -> Result<Trained> {
    let summary = csummary::read(run)?;
    let config_path = run.join("config.toml");
    let exp = config::load(&config_path, &[]).with_context(|| format!("{}: classifier run without a readable config", run.display()))?;
    let params = parse_params(&exp.model, &config_path.display().to_string())?;
    let vs = nn::VarStore::new(device);
    let net = Classifier::new(&vs.root(), &params)?;
    checkpoint::load_weights(&run.join(checkpoint::FILE), &vs).with_context(|| format!("{}: loading the classifier", run.display()))?;
    Ok(Trained { vs, net, summary })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small classifier on real MNIST: `steps` steps of batch 64.
    pub(crate) fn tiny(out: &Path, steps: i64, halt_after: Option<i64>) -> Result<PathBuf> {
        let overrides = ["model.channels=[8, 16]", "model.feature_dim=32", "train.batch_size=64", "train.lr_schedule=\"constant\"", "train.lr=2e-3", "train.log_every=10", "train.checkpoint_every=10", "eval.every=20", "eval.n_eval=500"];
        train(&TrainOptions {
            experiment: Some("mnist-classifier".into()),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            steps: Some(steps),
            device: Some("cpu".into()),
            out: Some(out.to_path_buf()),
            halt_after,
            ..Default::default()
        })
    }

    fn mnist_present() -> bool {
        let dir = Path::new("data/mnist");
        let present = dir.join("train-images-idx3-ubyte.gz").exists() || dir.join("train-images-idx3-ubyte").exists();
        if !present {
            eprintln!("skipped: no MNIST in {} (run `make data`)", dir.display());
        }
        present
    }

    #[test]
    fn learns_mnist_and_resume_retraces_the_uninterrupted_run() {
        if !mnist_present() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let whole = tiny(&dir.path().join("whole"), 100, None).unwrap();
        let s = csummary::read(&whole).unwrap();
        assert_eq!((s.family.as_str(), s.dataset.as_str(), s.steps, s.test_n, s.feature_dim), ("classifier", "mnist", 100, 10_000, 32));
        assert!(s.test_accuracy > 0.85, "100 steps are far above chance (0.1): {}", s.test_accuracy);
        assert!(s.test_nll_nats < 1.2 && s.test_nll_nats > 0.0, "{}", s.test_nll_nats);
        let lines = crate::runner::metrics::read(&whole.join("metrics.jsonl")).unwrap();
        assert_eq!(lines.len(), 10);
        assert!(lines[1]["test_accuracy"].as_f64().is_some() && lines[1]["train_accuracy"].as_f64().is_some());
        assert!(whole.join("loss.png").exists() && whole.join("run.json").exists());

        let halted = dir.path().join("halted");
        let err = tiny(&halted, 100, Some(50)).unwrap_err().to_string();
        assert!(err.contains("halted after step 50"), "{err}");
        assert!(tiny(&halted, 100, None).unwrap_err().to_string().contains("already holds a run"));
        train(&TrainOptions { resume: Some(halted.clone()), device: Some("cpu".into()), ..Default::default() }).unwrap();
        let (a, b) = (open_run(&whole, Device::Cpu).unwrap(), open_run(&halted, Device::Cpu).unwrap());
        for (name, w) in a.vs.variables() {
            assert!(w.equal(&b.vs.variables()[&name]), "{name} differs after resume");
        }
        assert_eq!(csummary::read(&halted).unwrap().test_accuracy, s.test_accuracy);
    }

    #[test]
    fn dispatch_recognises_classifier_experiments_and_runs() {
        let opts = |name: &str| TrainOptions { experiment: Some(name.into()), ..Default::default() };
        assert!(is_classifier(&opts("mnist-classifier")) && is_classifier(&opts("fashion-classifier")));
        assert!(!is_classifier(&opts("realnvp-moons")) && !is_classifier(&opts("no-such-experiment")));
        let set = TrainOptions { overrides: vec!["model.kind=realnvp".into()], ..opts("mnist-classifier") };
        assert!(!is_classifier(&set), "--set model.kind counts");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), "[model]\nkind = \"classifier\"\n").unwrap();
        assert!(is_classifier(&TrainOptions { resume: Some(dir.path().to_path_buf()), ..Default::default() }));
    }

    #[test]
    fn config_errors_name_the_key() {
        let opts = |set: &str| TrainOptions { experiment: Some("mnist-classifier".into()), overrides: vec![set.into()], steps: Some(1), ..Default::default() };
        let err = format!("{:#}", train(&opts("model.chanels=[4]")).unwrap_err());
        assert!(err.contains("model.chanels") && err.contains("unknown field"), "{err}");
        let err = format!("{:#}", train(&opts("data.name=moons")).unwrap_err());
        assert!(err.contains("mnist or fashion-mnist") && err.contains("moons"), "{err}");
        let err = format!("{:#}", train(&opts("data.binarize=true")).unwrap_err());
        assert!(err.contains("data.binarize"), "{err}");
    }
}
