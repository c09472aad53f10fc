//! The classifier (`relaxflow train mnist-classifier`, `fashion-classifier`, `cifar10-classifier`) in the run
//! lifecycle: cross-entropy on dequantized images (pixel + u)/256, u ~ U(0, 1) drawn afresh per batch, so the
//! classifier has seen continuous inputs like a model's samples rather than only the 256 pixel levels (and, with
//! `model.flip`, each image mirrored left-right with probability 1/2). The loop, seeding, checkpoints and resume are `train`'s, as for
//! every experiment; the summary is a [`ClassifierSummary`]: test accuracy and cross-entropy on the 10k test images,
//! dequantized with the same fixed draw as the generative models' test set. `open_run` loads a finished run for the
//! image-quality service (`classifier::image_quality`).
use super::checkpoint;
use super::classifier_summary::{self as csummary, ClassifierSummary};
use super::replicas::Replicas;
use super::summary;
use super::train::Trainable;
use crate::classifier::data::{self as labelled, Labelled};
use crate::classifier::{evaluate, Classifier, ClassifierParams, Trained};
use crate::experiment::{config, Experiment};
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use serde_json::json;
use std::cell::RefCell;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// The `model.kind` of classifier experiments.
pub const KIND: &str = "classifier";

/// A classifier built from an experiment, with its data and the training accuracy tally since the last log line.
pub struct ClassifierRun {
    /// The experiment with `[model]` resolved (defaults filled in).
    exp: Experiment,
    params: ClassifierParams,
    vs: nn::VarStore,
    net: Classifier,
    train: Labelled,
    /// Test images dequantized once with the data seed's fixed draw, and their labels.
    test: Labelled,
    /// The image shape [C, H, W].
    shape: [i64; 3],
    device: Device,
    /// Correct predictions and batches since the last log line (device-side: no host sync per step).
    tally: RefCell<(Tensor, i64)>,
}

impl ClassifierRun {
    pub fn open(mut exp: Experiment, origin: &str, device: Device) -> Result<ClassifierRun> {
        let params = parse_params(&exp.model, origin)?;
        // The classifier measures other models' samples, so its network stays f32: `bf16` gives it TF32 matmuls only.
        crate::native::amp::set_precision(exp.train.precision).with_context(|| format!("{origin}: train.precision"))?;
        let mut resolved = toml::Table::try_from(&params)?;
        resolved.insert("kind".into(), toml::Value::String(KIND.into()));
        exp.model = resolved;
        let d = &exp.data;
        let Some(name) = d.name.as_deref() else { bail!("{origin}: a classifier needs data.name = \"mnist\", \"fashion-mnist\" or \"cifar10\"") };
        labelled::check_name(name).with_context(|| format!("{origin}: data.name"))?;
        if d.path.is_some() || d.binarize || d.channels.is_some() {
            bail!("{origin}: a classifier reads {name}'s own files; data.path, data.binarize and data.channels do not apply");
        }
        let (train, test) = labelled::load_splits(&d.dir.join(name), name, d.image_size).with_context(|| format!("{origin}: data"))?;
        let shape: [i64; 3] = train.pixels.size()[1..].try_into().context("labelled images are [N, C, H, W]")?;
        // The generative models' test set: the same fixed dequantization draw as `data::load`.
        tch::manual_seed(d.seed * 2 + 2);
        let test = Labelled { pixels: crate::data::dequantize(&test.pixels.to_kind(Kind::Float)), labels: test.labels };
        tch::manual_seed(exp.train.seed);
        let vs = nn::VarStore::new(device);
        let net = Classifier::new(&vs.root(), &params, shape).with_context(|| format!("{origin}: [model]"))?;
        let tally = RefCell::new((Tensor::zeros([], (Kind::Int64, device)), 0));
        Ok(ClassifierRun { exp, params, vs, net, train, test, shape, device, tally })
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

impl Trainable for ClassifierRun {
    fn vs(&self) -> &nn::VarStore {
        &self.vs
    }
    fn exp(&self) -> &Experiment {
        &self.exp
    }
    fn device(&self) -> Device {
        self.device
    }
    fn family(&self) -> crate::model::Family {
        crate::model::Family::Classifier
    }
    fn shape(&self) -> Vec<i64> {
        self.shape.to_vec()
    }
    fn n_train(&self) -> i64 {
        self.train.len()
    }
    fn prepare(&mut self) {
        self.train = Labelled { pixels: self.train.pixels.to_device(self.device), labels: self.train.labels.to_device(self.device) };
    }
    fn loss_backward(&self, idx: &Tensor, _step: i64) -> Tensor {
        let mut x = crate::data::dequantize(&self.train.pixels.index_select(0, idx).to_kind(Kind::Float));
        if self.params.flip {
            x = mirror_half(&x);
        }
        let y = self.train.labels.index_select(0, idx);
        let logits = self.net.logits(&x);
        let loss = logits.cross_entropy_for_logits(&y);
        loss.backward();
        let mut tally = self.tally.borrow_mut();
        let _ = tally.0.g_add_(&logits.detach().argmax(-1, false).eq_tensor(&y).sum(Kind::Int64));
        tally.1 += 1;
        loss
    }
    /// Training accuracy since the last line; test accuracy and cross-entropy on `eval.n_eval` images when due.
    /// The training accuracy counts every rank's rows; the test evaluation is rank 0's (it writes the line).
    fn log(&self, line: &mut serde_json::Value, eval_now: bool, bar: &ProgressBar, name: &str, replicas: &Replicas) -> Result<()> {
        let mut tally = self.tally.borrow_mut();
        let correct = replicas.sum_over_ranks(&tally.0)?.double_value(&[]);
        line["train_accuracy"] = json!(correct / (tally.1.max(1) * self.exp.train.batch_size) as f64);
        let _ = tally.0.zero_();
        tally.1 = 0;
        if eval_now && replicas.is_main() {
            let n = self.exp.eval.n_eval.min(self.test.len());
            let (acc, nll) = evaluate(&self.net, &self.test.pixels.narrow(0, 0, n), &self.test.labels.narrow(0, 0, n), self.exp.eval.batch_size, self.device);
            line["test_accuracy"] = json!(acc);
            line["test_nll"] = json!(nll);
            bar.set_message(format!("{name} test accuracy {acc:.4}"));
        }
        Ok(())
    }
    /// Reloads the saved weights, measures the test set and writes summary.json and loss.png.
    /// Rank 0's alone (the test set is small).
    fn finish(&self, run: &Path, name: &str, replicas: &Replicas) -> Result<()> {
        if !replicas.is_main() {
            return Ok(());
        }
        let progress = checkpoint::load_weights(&run.join(checkpoint::FILE), &self.vs)?;
        let n = self.exp.eval.n_final.unwrap_or(i64::MAX).clamp(1, self.test.len());
        let (acc, nll) = evaluate(&self.net, &self.test.pixels.narrow(0, 0, n), &self.test.labels.narrow(0, 0, n), self.exp.eval.batch_size, self.device);
        super::pictures::loss_curve(run)?;
        let summary = ClassifierSummary {
            experiment: name.to_string(),
            family: KIND.into(),
            dataset: self.exp.data.name.clone().unwrap_or_default(),
            shape: self.shape.to_vec(),
            test_accuracy: acc,
            test_nll_nats: nll,
            test_n: n,
            steps: progress.step,
            train_time_s: progress.elapsed_s,
            steps_per_s: progress.step as f64 / progress.elapsed_s.max(1e-9),
            params: self.n_params(),
            feature_dim: self.params.feature_dim,
            device: format!("{:?}", self.device),
            threads: tch::get_num_threads(),
            seed: self.exp.train.seed,
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
}

/// Images [N, C, H, W] with each one mirrored left-right (its columns reversed) with probability 1/2, drawn per row
/// (`rows`), so a data-parallel rank mirrors its rows as one process would.
fn mirror_half(x: &Tensor) -> Tensor {
    let mirror = crate::rows::rand(&[x.size()[0], 1, 1, 1], (Kind::Float, x.device())).lt(0.5);
    x.flip([3]).where_self(&mirror, x)
}

/// Opens a finished classifier run folder (summary.json, config.toml, checkpoint.pt) with its weights on `device`.
pub fn open_run(run: &Path, device: Device) -> Result<Trained> {
    let open = || -> Result<Trained> {
        let summary = csummary::read(run)?;
        let config_path = run.join("config.toml");
        let exp = config::load(&config_path, &[]).with_context(|| format!("{}: classifier run without a readable config", run.display()))?;
        let params = parse_params(&exp.model, &config_path.display().to_string())?;
        let vs = nn::VarStore::new(device);
        let shape: [i64; 3] = summary.shape.as_slice().try_into().with_context(|| format!("summary.json: shape {:?} is not [C, H, W]", summary.shape))?;
        let net = Classifier::new(&vs.root(), &params, shape)?;
        checkpoint::load_weights(&run.join(checkpoint::FILE), &vs).with_context(|| format!("{}: loading the classifier", run.display()))?;
        Ok(Trained { vs, net, run: run.to_path_buf(), dataset: summary.dataset, test_accuracy: summary.test_accuracy })
    };
    open().with_context(|| format!("opening the classifier run {}", run.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runner::train::{train, TrainOptions};
    use std::path::PathBuf;

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
    fn mirror_half_reverses_the_columns_of_about_half_the_images() {
        tch::manual_seed(3);
        let x = Tensor::rand([400, 3, 4, 5], (Kind::Float, Device::Cpu));
        let y = mirror_half(&x);
        let mut mirrored = 0;
        for i in 0..400 {
            let (a, b) = (x.get(i), y.get(i));
            if b.equal(&a.flip([2])) {
                mirrored += 1;
                assert_eq!(b.double_value(&[1, 2, 0]), a.double_value(&[1, 2, 4]), "column 0 of the mirror is column 4");
            } else {
                assert!(b.equal(&a), "image {i} is neither itself nor its mirror");
            }
        }
        assert!((160..=240).contains(&mirrored), "{mirrored} of 400 mirrored");
    }

    #[test]
    fn config_errors_name_the_key() {
        let opts = |set: &str| TrainOptions { experiment: Some("mnist-classifier".into()), overrides: vec![set.into()], steps: Some(1), ..Default::default() };
        let err = format!("{:#}", train(&opts("model.chanels=[4]")).unwrap_err());
        assert!(err.contains("model.chanels") && err.contains("unknown field"), "{err}");
        let err = format!("{:#}", train(&opts("data.name=moons")).unwrap_err());
        assert!(err.contains("mnist, fashion-mnist or cifar10") && err.contains("moons"), "{err}");
        let err = format!("{:#}", train(&opts("data.binarize=true")).unwrap_err());
        assert!(err.contains("data.binarize"), "{err}");
    }
}
