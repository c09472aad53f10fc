//! The relaxflow command line: list | info | train | eval | sample | sweep | compare | report | sbi-report | figure.
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use relaxflow::data::points::{load_matrix, load_points};
use relaxflow::Context as Ctx;
use relaxflow::experiment::{config, registry};
use relaxflow::runner::{self, evaluate, pictures, session, train::TrainOptions};
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::Tensor;

#[derive(Parser)]
#[command(name = "relaxflow", version, about = "Normalizing flows and the models that relax them")]
struct Cli {
    /// Folder of named experiments [default: $RELAXFLOW_EXPERIMENTS, else ./experiments, else the one shipped
    /// beside the binary].
    #[arg(long, global = true, value_name = "DIR")]
    experiments: Option<PathBuf>,
    /// Folder new runs and sweeps go to [default: $RELAXFLOW_RUNS, else ./runs].
    #[arg(long, global = true, value_name = "DIR")]
    runs: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every named experiment: name, family, dataset, description.
    List,
    /// Versions, device and threads.
    Info,
    /// Train a named experiment (experiments/NAME.toml) and print the run folder it writes.
    Train {
        /// Experiment name or path to a .toml file.
        name: Option<String>,
        /// Override any config key, e.g. --set train.lr=1e-3 --set data.path=pts.npy.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long)]
        steps: Option<i64>,
        #[arg(long)]
        seed: Option<i64>,
        /// cpu, cuda or cuda:N (default: cuda when available).
        #[arg(long)]
        device: Option<String>,
        /// The run folder to write (default runs/NAME/<timestamp>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue this run folder from its last checkpoint.
        #[arg(long, value_name = "RUN")]
        resume: Option<PathBuf>,
        /// Testing aid: stop right after this step, as if the process had been killed.
        #[arg(long, hide = true)]
        halt_after: Option<i64>,
    },
    /// Test-set metrics of a run as JSON; with --data, the log-density of each row of a .npy/.csv file.
    Eval {
        run: PathBuf,
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write log p (nats, f64, one per row of --data, same order) as .npy.
        #[arg(long)]
        logp_out: Option<PathBuf>,
        #[arg(long)]
        device: Option<String>,
        /// Change a setting that does not change the weights, e.g. --set model.sample_steps=10.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Skip the test likelihood: only sampler cost and sample quality.
        #[arg(long)]
        samples_only: bool,
        /// Which weights: `default` (the moving average where the run keeps one, train.ema_decay), `raw` or `ema`.
        #[arg(long, value_enum, default_value = "default")]
        weights: runner::checkpoint::Weights,
        /// A conditional run: the context of each row of --data (.npy/.csv, same row order; one column of class
        /// indices for a class-conditional run).
        #[arg(long, value_name = "FILE")]
        context_file: Option<PathBuf>,
    },
    /// Draw samples from a run: .npy array or .png picture.
    Sample {
        run: PathBuf,
        #[arg(short = 'n', long, default_value_t = 1000)]
        n: i64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[arg(long)]
        device: Option<String>,
        /// Change a setting that does not change the weights, e.g. --set model.sample_steps=10.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Sampling temperature: the Gaussian noise of the base (and of factored-out latents) scaled by T (flows).
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        #[command(flatten)]
        at: SampleContext,
        /// Which weights: `default` (the moving average where the run keeps one, train.ema_decay), `raw` or `ema`.
        #[arg(long, value_enum, default_value = "default")]
        weights: runner::checkpoint::Weights,
    },
    /// A survey figure from finished runs: `double-well NF_RUN SNF_RUN...` (samples beside exact samples, free-energy
    /// profiles along x1).
    Figure {
        /// Which figure: double-well.
        which: String,
        runs: Vec<PathBuf>,
        #[arg(long, default_value = "runs/figure-double-well.png")]
        out: PathBuf,
    },
    /// Train one experiment over a grid of settings and seeds (one run folder each, resumable), then write a table
    /// and a plot (mean ± sd over seeds): `sweep diffflow-checkerboard --set model.g=0.01,0.1,0.5 --seeds 3`.
    Sweep {
        name: String,
        /// KEY=V1,V2,... (commas inside [...] or quotes do not split); several give the cartesian product.
        #[arg(long = "set", value_name = "KEY=V1,V2,...")]
        set: Vec<String>,
        /// Seeds 0..K-1 per grid point.
        #[arg(long, default_value_t = 1)]
        seeds: i64,
        #[arg(long)]
        steps: Option<i64>,
        #[arg(long)]
        device: Option<String>,
        /// The sweep folder (default runs/sweeps/NAME); running again continues it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Runs at a time, each a child process with cores/JOBS threads (small models: set it to the core count).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Write a Slurm array job (OUT/sweep.sbatch, one task per run) instead of training.
        #[arg(long, conflicts_with = "array_task")]
        slurm_array: bool,
        /// Train only run K of the sweep (what each task of the --slurm-array job runs).
        #[arg(long, value_name = "K")]
        array_task: Option<usize>,
    },
    /// The SBI benchmark table (C2ST and NLL per task and simulation budget, beside sbibm's NPE) from the runs under
    /// DIR (what `make sbi` writes): sbi-benchmark.md and .ipynb in --out.
    SbiReport {
        #[arg(default_value = "runs/sbi")]
        dir: PathBuf,
        #[arg(long, default_value = "notebooks-export")]
        out: PathBuf,
    },
    /// The survey's comparison from a folder of runs and sweeps (what `make reproduce` writes): markdown and a
    /// Jupyter notebook with the images embedded, in --out.
    Report {
        #[arg(default_value = "runs/reproduce/cpu")]
        dir: PathBuf,
        #[arg(long, default_value = "notebooks-export")]
        out: PathBuf,
    },
    /// Side-by-side table of runs: markdown on stdout, CSV and markdown written to --out.{csv,md}, and a contact sheet of
    /// their final pictures to --out.png.
    Compare {
        runs: Vec<PathBuf>,
        #[arg(long, default_value = "runs/compare")]
        out: PathBuf,
    },
    /// Testing aid: join the job the environment describes (torchrun, Slurm, RANK/WORLD_SIZE), check each
    /// collective on known tensors, print one JSON line.
    #[command(hide = true)]
    DistSelftest {
        /// This rank stops answering after the checks while the others enter an allreduce.
        #[arg(long)]
        stall_rank: Option<usize>,
        /// Time this many allreduces per buffer size.
        #[arg(long, default_value_t = 0)]
        bench: usize,
    },
}

/// Where the last panic happened (for internal errors; libtorch errors are reported by their message alone).
static PANIC_AT: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Where a conditional run's samples are drawn: -n samples for each context row, in row order. Without any of
/// these a class-conditional run draws -n of every class and a vector-conditional one draws at the test set's
/// contexts (a sample of the x-marginal).
#[derive(clap::Args, Debug)]
#[group(multiple = false)]
struct SampleContext {
    /// A class-conditional run: draw from this class.
    #[arg(long)]
    class: Option<i64>,
    /// A vector-conditional run: draw at this context, e.g. --context "0.5,1.2".
    #[arg(long, allow_hyphen_values = true)]
    context: Option<String>,
    /// One context per row of a .npy/.csv file (one column of class indices for a class-conditional run).
    #[arg(long, value_name = "FILE")]
    context_file: Option<PathBuf>,
}

impl SampleContext {
    fn given(&self) -> bool {
        self.class.is_some() || self.context.is_some() || self.context_file.is_some()
    }
}

fn main() {
    let cli = Cli::parse();
    // One boundary for every failure: errors and panics (tch panics on libtorch errors) become one clean line
    // without C++ frames and exit code 1; a signal that stopped training exits 128 + signal.
    std::panic::set_hook(Box::new(|info| {
        if let Some(l) = info.location() {
            *PANIC_AT.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{}:{}", l.file(), l.line()));
        }
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    let code = match result {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("error: {}", relaxflow::errors::describe(&e));
            relaxflow::runner::interrupt::is_interrupted(&e).map_or(1, |i| i.exit_code())
        }
        Err(payload) => {
            let msg = relaxflow::errors::panic_message(&*payload);
            let from_torch = payload.downcast_ref::<String>().is_some_and(|s| s.contains("Torch("));
            match PANIC_AT.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(at) if !from_torch => eprintln!("error: {msg} (internal error at {at}; please report it)"),
                _ => eprintln!("error: {msg}"),
            }
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<()> {
    let workspace = relaxflow::Workspace::resolve(cli.experiments, cli.runs);
    match cli.command {
        Command::List => list(&workspace),
        Command::Info => info(),
        Command::Train { name, set, steps, seed, device, out, resume, halt_after } => {
            let opts = TrainOptions { experiment: name, overrides: set, steps, seed, device, out, resume, halt_after, workspace };
            let run = runner::train::train(&opts)?;
            println!("{}", run.display());
            Ok(())
        }
        Command::Eval { run, data, logp_out, device, set, samples_only, context_file, weights } => eval(run, data, logp_out, context_file, device, &set, samples_only, weights),
        Command::Sample { run, n, out, seed, device, set, temperature, at, weights } => sample(run, n, out, seed, device, &set, temperature, &at, weights),
        Command::Figure { which, runs, out } => {
            anyhow::ensure!(which == "double-well", "unknown figure `{which}` (known: double-well)");
            print!("{}", relaxflow::report::figure::double_well(&runs, &out)?);
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        Command::Sweep { name, set, seeds, steps, device, out, jobs, slurm_array, array_task } => {
            let opts = runner::sweep::SweepOptions { experiment: name, grid: set, seeds, steps, device, out, jobs, workspace, slurm_array, array_task };
            let dir = runner::sweep::sweep(&opts)?;
            if slurm_array || array_task.is_some() {
                return Ok(());
            }
            print!("{}", relaxflow::report::sweep::write(&dir)?);
            eprintln!("wrote {}/sweep.{{md,csv,png,svg,json}}", dir.display());
            Ok(())
        }
        Command::DistSelftest { stall_rank, bench } => {
            relaxflow::parallel::selftest::run(&relaxflow::parallel::selftest::Options { stall_rank, bench }, &mut std::io::stdout().lock())
        }
        Command::SbiReport { dir, out } => {
            let (md, nb) = relaxflow::report::sbi_table::report(&dir, &out)?;
            let images = relaxflow::report::notebook::validate(&nb)?;
            eprintln!("wrote {} and {} ({images} images embedded)", md.display(), nb.display());
            Ok(())
        }
        Command::Report { dir, out } => {
            let (md, nb) = relaxflow::report::survey::report(&dir, &out)?;
            let images = relaxflow::report::notebook::validate(&nb)?;
            eprintln!("wrote {} and {} ({images} images embedded)", md.display(), nb.display());
            Ok(())
        }
        Command::Compare { runs, out } => {
            let csv = relaxflow::report::compare::compare(&runs, &out)?;
            eprintln!("wrote {}, {} and {}", csv.display(), csv.with_extension("md").display(), csv.with_extension("png").display());
            Ok(())
        }
    }
}

fn list(ws: &relaxflow::Workspace) -> Result<()> {
    println!("{:<28} {:<10} {:<14} description", "experiment", "family", "dataset");
    for name in config::list_names(&ws.experiments)? {
        let (_, file) = config::resolve_file(&name, &ws.experiments)?;
        let exp = config::load(&file, &[])?;
        let family = registry::family_of(&exp.model, &file.display().to_string())?;
        println!("{:<28} {:<10} {:<14} {}", name, family, exp.data.display_name(), exp.description);
    }
    Ok(())
}

fn info() -> Result<()> {
    let v = relaxflow::runner::summary::versions();
    println!("relaxflow {}  tch {}  libtorch {}", v.relaxflow, v.tch, v.libtorch);
    println!("cuda available: {} ({} device(s)), cudnn: {}", tch::Cuda::is_available(), tch::Cuda::device_count(), tch::Cuda::cudnn_is_available());
    println!("default device: {:?}", tch::Device::cuda_if_available());
    println!("threads: {}", tch::get_num_threads());
    Ok(())
}

/// `eval.n_samples` samples: sampler cost, time and (D ≤ 16) MMD² against the test set with its train-vs-test floor,
/// mass outside the support and mode coverage (the measures the runner writes per sampler setting).
fn sample_report(s: &session::Session, device: tch::Device) -> Result<serde_json::Value> {
    tch::manual_seed(s.exp.train.seed);
    let (x, ms) = tch::no_grad(|| evaluate::timed_samples(&*s.model, s.exp.eval.n_samples.max(2), device));
    let mut v = serde_json::to_value(relaxflow::runner::sampling::measure(s, "as given", &x, ms, None))?;
    v["data_mmd_floor"] = json!(relaxflow::runner::quality::data_mmd_floor(s, x.size()[0]));
    v["mode_coverage"] = json!(relaxflow::runner::quality::mode_coverage(s, &x));
    Ok(v)
}

/// The contexts of `rows` rows of `data` from --context-file: required for a conditional run, refused for an
/// unconditional one, checked against the run's context (kind, width, classes, rows).
fn file_contexts(s: &session::Session, file: Option<&Path>, rows: i64, data: &Path) -> Result<Ctx> {
    match (s.model.context_spec(), file) {
        (None, None) => Ok(Ctx::None),
        (None, Some(f)) => bail!("--context-file {}: this run's model is unconditional; it takes no context", f.display()),
        (Some(spec), None) => bail!("this run's model is conditional ({}): give each row of {} its context with --context-file FILE", spec.describe(), data.display()),
        (Some(spec), Some(f)) => {
            let c = spec.from_matrix(&load_matrix(f)?).with_context(|| format!("--context-file {}", f.display()))?;
            spec.check(&c, rows).with_context(|| format!("--context-file {} against --data {}", f.display(), data.display()))?;
            Ok(c)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn eval(run: PathBuf, data: Option<PathBuf>, logp_out: Option<PathBuf>, context_file: Option<PathBuf>, device: Option<String>, set: &[String], samples_only: bool, weights: runner::checkpoint::Weights) -> Result<()> {
    if data.is_none() && context_file.is_some() {
        bail!("--context-file gives the contexts of the rows of --data FILE; it needs --data");
    }
    let device = runner::parse_device(device.as_deref())?;
    // Launched as several ranks, the likelihoods are sharded over them and rank 0 prints.
    let (replicas, device) = runner::replicas::Replicas::from_env(device)?;
    let (s, used) = session::open_run_as(&run, device, set, weights)?;
    let out = match (data, logp_out) {
        (None, Some(_)) => bail!("--logp-out needs --data FILE"),
        (None, _) if samples_only => json!({ "samples": sample_report(&s, device)? }),
        (Some(_), _) if samples_only => bail!("--samples-only and --data exclude each other"),
        (None, None) => {
            let e = evaluate::test_nll_sharded(&*s.model, &s.data, s.exp.eval.n_final, s.exp.eval.batch_size, device, &replicas)?;
            if !replicas.is_main() {
                return Ok(());
            }
            if e.n_nonfinite > 0 {
                eprintln!("warning: {} of {} test points have a non-finite log-density; the mean NLL is not finite", e.n_nonfinite, e.n);
            }
            let mut v = serde_json::to_value(&e)?;
            v["note"] = json!(relaxflow::runner::summary::likelihood_note(&e));
            v["estimator"] = s.model.estimator();
            if let Some(check) = evaluate::bits_per_dim_check(&*s.model, &s.data, s.exp.eval.n_final, s.exp.eval.batch_size, device) {
                v["bits_per_dim_check"] = serde_json::to_value(check)?;
            }
            if s.data.dim() <= 16 {
                v["samples"] = sample_report(&s, device)?;
            }
            v
        }
        (Some(file), logp_out) => {
            if let Some(out) = &logp_out {
                let same = std::fs::canonicalize(out).ok().is_some_and(|o| std::fs::canonicalize(&file).ok() == Some(o));
                if same {
                    bail!("--logp-out {} is the --data file itself; choose another name (your data would be overwritten)", out.display());
                }
            }
            let x = load_points(&file)?;
            if x.size()[1..] != s.data.shape[..] {
                bail!("{}: rows have {} columns, the model was trained on data of shape {:?}", file.display(), x.size()[1], s.data.shape);
            }
            let c = file_contexts(&s, context_file.as_deref(), x.size()[0], &file)?;
            let (lp, kind) = evaluate::log_prob_sharded_given(&*s.model, &x, &c, s.exp.eval.batch_size, device, &replicas)?;
            if !replicas.is_main() {
                return Ok(());
            }
            let bad = lp.isfinite().logical_not().sum(tch::Kind::Int64).int64_value(&[]);
            if bad > 0 {
                eprintln!("warning: {bad} of {} rows have a non-finite log-density", x.size()[0]);
            }
            if let Some(path) = &logp_out {
                relaxflow::data::npy::write(path, &lp, tch::Kind::Double)?;
            }
            json!({
                "data": file, "n": x.size()[0], "mean_log_prob_nats": lp.mean(None).double_value(&[]),
                "kind": kind, "logp_out": logp_out, "context_file": context_file,
            })
        }
    };
    let mut out = out;
    if s.exp.train.ema().is_some() || weights != runner::checkpoint::Weights::Default {
        out["weights"] = json!(used);
    }
    if replicas.is_main() {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Samples per block when streaming `relaxflow sample` (bounded memory for any -n).
fn sample_block(s: &session::Session, n: i64) -> i64 {
    n.min(s.exp.eval.batch_size).min(10_000).max(1)
}

/// The largest -n a .png picture takes (a picture of more points says nothing more; write .npy).
const MAX_PICTURE: i64 = 100_000;

/// The contexts `relaxflow sample` draws at (one row each, -n samples per row), or None for plain samples (an
/// unconditional run, or a vector-conditional one at the test set's contexts). Each is checked against the run.
fn sample_contexts(s: &session::Session, at: &SampleContext) -> Result<Option<Ctx>> {
    let Some(spec) = s.model.context_spec() else {
        if at.given() {
            bail!("this run's model is unconditional: --class, --context and --context-file need a conditional run");
        }
        return Ok(None);
    };
    let c = match (at.class, &at.context, &at.context_file) {
        (Some(k), _, _) => match spec {
            relaxflow::ContextSpec::Class { .. } => spec.parse_row(&k.to_string()).context("--class")?,
            _ => bail!("--class {k}: this run's model takes {}; use --context \"v1,v2,...\" or --context-file", spec.describe()),
        },
        (_, Some(text), _) => spec.parse_row(text).with_context(|| format!("--context \"{text}\""))?,
        (_, _, Some(f)) => spec.from_matrix(&load_matrix(f)?).with_context(|| format!("--context-file {}", f.display()))?,
        // Every class, in order: a class-conditional picture has one row per class.
        _ => return Ok(spec.all_classes(tch::Device::Cpu)),
    };
    Ok(Some(c))
}

/// The most context rows, and samples per row, that a .png of a conditional image run shows (one row each).
const MAX_PICTURE_ROWS: i64 = 64;

#[allow(clippy::too_many_arguments)]
fn sample(run: PathBuf, n: i64, out: PathBuf, seed: i64, device: Option<String>, set: &[String], temperature: f64, at: &SampleContext, weights: runner::checkpoint::Weights) -> Result<()> {
    anyhow::ensure!(n > 0, "-n must be positive, got {n}");
    anyhow::ensure!(temperature.is_finite() && temperature >= 0.0, "--temperature must be a finite non-negative number, got {temperature}");
    let ext = out.extension().and_then(|e| e.to_str()).map(str::to_owned);
    match ext.as_deref() {
        Some("npy") | Some("png") => {}
        _ => bail!("{}: --out must end in .npy or .png", out.display()),
    }
    let device = runner::parse_device(device.as_deref())?;
    let (s, used) = session::open_run_as(&run, device, set, weights)?;
    if used == "ema" {
        eprintln!("sampling with the moving average of the weights (train.ema_decay; --weights raw for the raw ones)");
    }
    let contexts = sample_contexts(&s, at)?;
    let rows = contexts.as_ref().and_then(Ctx::len).unwrap_or(1);
    let total = n.checked_mul(rows).context("-n times the number of context rows overflows")?;
    if ext.as_deref() == Some("png") && total > MAX_PICTURE {
        bail!("-n {n}{}: a .png picture takes at most {MAX_PICTURE} samples; write .npy for more", if rows > 1 { format!(" x {rows} contexts") } else { String::new() });
    }
    if s.model.context_spec().is_some() && temperature != 1.0 {
        bail!("--temperature: a conditional run samples at temperature 1 only");
    }
    let kind = s.exp.model.get("kind").and_then(|k| k.as_str()).unwrap_or("?").to_string();
    tch::manual_seed(seed);
    let block = sample_block(&s, n);
    // With train.cuda_graph (e.g. --set train.cuda_graph=true) full blocks replay a captured sampler on CUDA.
    let graphs = s.exp.train.cuda_graph && temperature == 1.0 && contexts.is_none();
    let mut sampler = runner::graph_sample::BlockSampler::new(&*s.model, device, block, graphs);
    let first_note = sampler.note();
    if let Some(note) = &first_note {
        eprintln!("{note}");
    }
    // The blocks to draw, in output order: (context row, samples); -n samples for each context row.
    let jobs: Vec<(Option<i64>, i64)> =
        (0..rows).flat_map(|r| (0..n).step_by(block as usize).map(move |i| (Some(r), block.min(n - i)))).map(|(r, m)| (contexts.as_ref().and(r), m)).collect();
    let contexts = contexts.map(|c| c.to_device(device));
    let mut draw = |(row, m): (Option<i64>, i64)| -> Result<Tensor> {
        let x = match (row, &contexts) {
            (Some(r), Some(c)) => tch::no_grad(|| s.model.sample_given(m, &c.narrow(r, 1, device).cycled(m))),
            _ if temperature == 1.0 => sampler.draw(m)?,
            _ => tch::no_grad(|| s.model.sample_tempered(m, temperature)).with_context(|| format!("model kind `{kind}` has no sampling temperature (flows do)"))?,
        };
        Ok(x.to_device(tch::Device::Cpu))
    };
    // Rows holding NaN or inf are counted: all of them is an error (no file), some of them a warning.
    let nonfinite = |x: &Tensor| x.isfinite().logical_not().flatten(1, -1).any_dim(1, false).sum(tch::Kind::Int64).int64_value(&[]);
    let mut bad = 0;
    if ext.as_deref() == Some("npy") {
        let mut writer: Option<relaxflow::data::npy::NpyWriter> = None;
        let bar = runner::train::progress_bar(total, 0);
        bar.set_message("samples drawn");
        let mut done = 0;
        for job in jobs {
            let x = draw(job)?;
            bad += nonfinite(&x);
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(relaxflow::data::npy::NpyWriter::create(&out, total, &x.size()[1..], tch::Kind::Float)?),
            };
            w.write_rows(&x)?;
            done += x.size()[0];
            bar.set_position(done as u64);
        }
        bar.finish_and_clear();
        if bad == total {
            bail!("every one of the {total} samples holds NaN or inf; nothing written (at --temperature {temperature})");
        }
        writer.expect("n > 0 gives one block").finish()?;
    } else {
        let parts = jobs.into_iter().map(&mut draw).collect::<Result<Vec<_>>>()?;
        let x = Tensor::cat(&parts, 0);
        bad = nonfinite(&x);
        if bad == total {
            bail!("every one of the {total} samples holds NaN or inf; nothing written (at --temperature {temperature})");
        }
        if s.data.is_image() && rows > 1 {
            // One row of samples per context (per class, in order, by default).
            anyhow::ensure!(rows <= MAX_PICTURE_ROWS && n <= MAX_PICTURE_ROWS, "a .png grid shows at most {MAX_PICTURE_ROWS} contexts x {MAX_PICTURE_ROWS} samples; write .npy for more");
            relaxflow::plot::save_png(&relaxflow::plot::canvas::upscaled(&pictures::image_rows(&x, &s.data, n), 2), &out)?
        } else if s.data.is_image() {
            // Images: a plain grid of these samples (at this temperature); 2D: data | samples | density.
            relaxflow::plot::save_png(&relaxflow::plot::canvas::upscaled(&pictures::image_grid(&x, &s.data), 2), &out)?
        } else {
            pictures::draw_with(&*s.model, &s.data, &s.exp.eval, device, &out, &x)?
        }
    }
    if bad > 0 {
        eprintln!("warning: {bad} of {total} samples hold NaN or inf");
    }
    if sampler.replays > 0 {
        eprintln!("train.cuda_graph: {} of the blocks of {block} samples replayed a captured CUDA graph", sampler.replays);
    }
    if let Some(note) = sampler.note().filter(|n| Some(n) != first_note.as_ref()) {
        eprintln!("{note}");
    }
    match rows {
        1 => eprintln!("wrote {total} samples to {}", out.display()),
        _ => eprintln!("wrote {total} samples ({n} for each of {rows} contexts, in row order) to {}", out.display()),
    }
    Ok(())
}
