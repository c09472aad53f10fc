//! A generative experiment (`Session`) in the run lifecycle: its batches, its log lines' test NLL, its pictures, and
//! the final evaluation (test NLL with its kind, sampler timing and quality, pictures, summary.json).
use super::checkpoint;
use super::evaluate::{test_nll_sharded, timed_samples_sharded, Evaluation};
use super::replicas::Replicas;
use super::session::Session;
use super::summary::{self, Summary};
use super::train::{resume_hint, Trainable};
use super::{interrupt, pictures, quality};
use crate::experiment::Experiment;
use anyhow::Result;
use indicatif::ProgressBar;
use serde_json::json;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

impl Trainable for Session {
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
        self.model.family()
    }
    fn shape(&self) -> Vec<i64> {
        self.data.shape.clone()
    }
    fn context_spec(&self) -> Option<crate::ContextSpec> {
        self.model.context_spec()
    }
    fn n_train(&self) -> i64 {
        self.data.train.size()[0]
    }
    fn prepare(&mut self) {
        self.data.train = self.data.train.to_device(self.device);
    }
    /// ActNorm and friends, from a batch of up to max(batch_size, 4096) training rows.
    fn data_init(&self) {
        let n_train = self.n_train();
        let idx = Tensor::randint(n_train, [n_train.min(self.exp.train.batch_size.max(4096))], (Kind::Int64, Device::Cpu));
        let x = self.data.batch(&idx, self.device);
        match self.data.context {
            Some(_) => self.model.data_init_given(&x, &self.data.context_batch(&idx, self.device)),
            None => self.model.data_init(&x),
        }
    }
    fn loss_backward(&self, idx: &Tensor, step: i64) -> Tensor {
        let x = self.data.batch(idx, self.device);
        self.model.set_training(true);
        let loss = match self.data.context {
            Some(_) => self.model.loss_backward_given(&x, &self.data.context_batch(idx, self.device), step),
            None => self.model.loss_backward(&x, step),
        };
        self.model.set_training(false);
        loss
    }
    fn not_capturable(&self) -> Option<String> {
        (!self.model.capturable()).then(|| {
            format!("a {} step is not capturable (per-step schedules, host-side draws or changing shapes); only the flows' is", self.model.family())
        })
    }
    /// The test NLL on `eval.n_eval` points when due.
    fn log(&self, line: &mut serde_json::Value, eval_now: bool, bar: &ProgressBar, name: &str, replicas: &Replicas) -> Result<()> {
        for (key, value) in self.model.train_stats().into_iter().flatten() {
            line[key] = value;
        }
        if eval_now {
            let e = test_nll_sharded(&*self.model, &self.data, Some(self.exp.eval.n_eval), self.exp.eval.batch_size, self.device, replicas)?;
            add_eval(line, &e);
            bar.set_message(format!("{name} test nll {:.4}", e.nll_nats));
        }
        Ok(())
    }
    fn picture(&self, run: &Path, step: i64) -> Result<()> {
        picture(self, run, step)
    }
    fn finish(&self, run: &Path, name: &str, replicas: &Replicas) -> Result<()> {
        finish(self, run, name, replicas)
    }
}

fn add_eval(line: &mut serde_json::Value, e: &Evaluation) {
    line["test_nll"] = json!(e.nll_nats);
    line["test_nll_kind"] = json!(e.kind.label());
    if let Some(b) = e.bits_per_dim {
        line["test_bpd"] = json!(b);
    }
}

fn picture(s: &Session, run: &Path, step: i64) -> Result<()> {
    let path = run.join("samples").join(format!("step-{step:06}.png"));
    pictures::draw(&*s.model, &s.data, &s.exp.eval, s.device, &path)
}

/// `samples.npy` (final model samples, n_samples of them) and, for low-dimensional data, `reference.npy` (as many
/// test points): what `compare` and `figure` draw without loading the model.
fn save_arrays(s: &Session, run: &Path, samples: &Tensor) -> Result<()> {
    let n = samples.size()[0];
    crate::data::npy::write(&run.join("samples.npy"), samples, Kind::Float)?;
    if s.data.dim() <= 16 {
        let m = n.min(s.data.test.size()[0]);
        crate::data::npy::write(&run.join("reference.npy"), &s.data.test.narrow(0, 0, m), Kind::Float)?;
    }
    Ok(())
}

/// The SBI measures of a run on a simulation-based-inference task (`eval.sbi_*` settings), else None.
/// The first observation's reference and model posteriors are drawn into `posterior.png` in `run`.
fn sbi_measures(s: &Session, run: &Path) -> Option<super::sbi::SbiResult> {
    let task = s.data.context.as_ref()?.task?;
    let settings = super::c2st::C2stSettings { folds: s.exp.eval.c2st_folds.unwrap_or(5), seed: s.exp.train.seed, ..Default::default() };
    let (n_obs, n) = (s.exp.eval.sbi_observations.unwrap_or(10), s.exp.eval.sbi_samples.unwrap_or(10_000));
    let bar = super::train::progress_bar(n_obs, 0);
    bar.set_message(format!("{}: posteriors at {n_obs} observations (then their C2ST classifiers, trained together)", task.name()));
    let mut each = |j: i64, reference: &Tensor, q: &Tensor| {
        if j == 0 {
            if let Err(e) = pictures::posterior_panels(reference, q, &run.join("posterior.png")) {
                eprintln!("warning: drawing posterior.png: {e:#}");
            }
        }
        bar.inc(1);
    };
    let r = super::sbi::evaluate(&*s.model, task, s.data.train.size()[0], n_obs, n, &settings, s.device, &mut each);
    bar.finish_and_clear();
    eprintln!("{}: C2ST {:.3} (0.5 is perfect) over {n_obs} observations; NLL of the true θ {:.3} nats", task.name(), r.c2st_mean, r.nll_true_theta);
    Some(r)
}

/// Final evaluation on the whole test set, sampler timing, pictures and summary.json. With several ranks the test
/// likelihood and the samples are sharded over them; the rest is rank 0's, which writes.
fn finish(s: &Session, run: &Path, name: &str, replicas: &Replicas) -> Result<()> {
    let device = s.device;
    // Rank 0 reloads what it saved; the other ranks hold the same weights (same updates of the same gradients).
    // The moving average of the weights where the run keeps one (train.ema_decay; one process only).
    let (progress, weights) = if replicas.is_main() {
        let (p, used) = checkpoint::load_weights_as(&run.join(checkpoint::FILE), &s.vs, checkpoint::Weights::Default)?;
        (p, s.exp.train.ema().map(|_| used.to_string()))
    } else {
        (checkpoint::Progress { step: s.exp.train.steps, elapsed_s: 0.0 }, None)
    };
    let stopped = || format!("{}; the final evaluation runs again on resume", resume_hint(run, progress.step));
    interrupt::check(stopped)?;
    let e = test_nll_sharded(&*s.model, &s.data, s.exp.eval.n_final, s.exp.eval.batch_size, device, replicas)?;
    let (samples, sample_ms) = timed_samples_sharded(&*s.model, s.exp.eval.n_samples.max(1), device, replicas)?;
    if !replicas.is_main() {
        return Ok(());
    }
    if e.n_nonfinite > 0 {
        eprintln!("warning: {name}: {} of {} test points have a non-finite log-density; the mean NLL is not finite", e.n_nonfinite, e.n);
    }
    interrupt::check(stopped)?;
    let path = run.join("samples").join(format!("step-{:06}.png", progress.step));
    pictures::draw_with(&*s.model, &s.data, &s.exp.eval, device, &path, &samples)?;
    pictures::loss_curve(run)?;
    save_arrays(s, run, &samples)?;
    let cost = s.model.sampling_cost();
    let support = quality::outside_support(s, &samples);
    let image_quality = quality::image_quality(s, &samples);
    let mut sampling = vec![super::sampling::measure(s, "as trained", &samples, sample_ms, image_quality.clone())];
    sampling.extend(super::sampling::alternatives(s, run, device)?);
    let summary = Summary {
        experiment: name.to_string(),
        family: s.model.family().to_string(),
        model_kind: s.exp.model.get("kind").and_then(|k| k.as_str()).unwrap_or("?").into(),
        dataset: s.data.name.clone(),
        dim: s.data.dim(),
        test_nll_nats: e.nll_nats,
        test_nll_stderr: e.nll_stderr,
        nll_kind: e.kind.label().into(),
        test_n: e.n,
        test_nonfinite: e.n_nonfinite,
        bits_per_dim: e.bits_per_dim,
        likelihood_note: summary::likelihood_note(&e),
        bits_per_dim_check: super::evaluate::bits_per_dim_check(&*s.model, &s.data, s.exp.eval.n_final, s.exp.eval.batch_size, device),
        estimator: s.model.estimator(),
        true_entropy_nats: s.data.true_entropy,
        nll_gap_nats: s.data.true_entropy.map(|h| e.nll_nats - h),
        steps: progress.step,
        planned_steps: (progress.step < s.exp.train.steps).then_some(s.exp.train.steps),
        train_time_s: progress.elapsed_s,
        steps_per_s: progress.step as f64 / progress.elapsed_s.max(1e-9),
        sample_ms_per_1000: sample_ms,
        log_prob_ms_per_1000: Some(super::evaluate::timed_log_prob(&*s.model, &s.data, s.exp.eval.n_final, s.exp.eval.batch_size, device)),
        sample_mmd: sampling[0].sample_mmd,
        sample_outside_support: support.as_ref().map(|o| o.0),
        support_region: support.map(|o| o.1),
        mode_coverage: quality::mode_coverage(s, &samples),
        convergence: super::convergence::of_run(run, s.data.dim()),
        sampling,
        image_quality,
        nfe_per_sample: cost.nfe_per_sample,
        sampler_steps: cost.steps,
        params: s.n_params(),
        device: format!("{device:?}"),
        world_size: replicas.size(),
        backend: replicas.world.backend().map(|b| b.name().to_string()),
        threads: tch::get_num_threads(),
        seed: s.exp.train.seed,
        versions: summary::versions(),
        git_commit: summary::git_commit(),
        finished_at: chrono::Local::now().to_rfc3339(),
        context: s.data.context_spec(),
        weights,
        sbi: sbi_measures(s, run),
        diagnostics: tch::no_grad(|| {
            let test = s.data.test.narrow(0, 0, e.n.min(2000)).to_device(device);
            s.model.diagnostics(s.exp.eval.diag_samples, s.exp.eval.diag_repeats).or_else(|| s.model.test_diagnostics(&test))
        }),
    };
    summary::write_json(&run.join("summary.json"), &summary)?;
    if let Some(c) = summary.diagnostics.as_ref().and_then(|d| d.get("collapse")) {
        if c["active_units"].as_i64() == Some(0) {
            eprintln!(
                "warning: {name}: no active latent unit (total KL {:.2e} nats): the posterior collapsed and the decoder ignores z; \
                 try model.kl_warmup, model.free_bits or objective = \"iwae\"",
                c["kl_total_nats"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    eprintln!(
        "{name}: test NLL {:.4} ± {:.4} nats ({}, {} test points){} in {:.1}s ({:.3} steps/s)",
        e.nll_nats,
        e.nll_stderr,
        e.kind.label(),
        e.n,
        e.bits_per_dim.map(|b| format!(", {b:.4} bits/dim")).unwrap_or_default(),
        progress.elapsed_s,
        summary.steps_per_s
    );
    Ok(())
}
