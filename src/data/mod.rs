//! Datasets: seeded 2D toy sets, a user's own points, and MNIST / Fashion-MNIST from IDX files.
//! Read by the runner and by tests, never by a model.
pub mod idx;
pub mod npy;
pub mod points;
pub mod images;
pub mod sbi;
pub mod toy;
pub mod truth;

use crate::context::{Context, ContextSpec};
use anyhow::{bail, ensure, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The `[data]` section of an experiment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A 2D toy set (moons, checkerboard, ...), `mnist` or `fashion-mnist`. Ignored when `path` is set.
    pub name: Option<String>,
    /// A user's own points, .npy or .csv of shape [N, D].
    pub path: Option<PathBuf>,
    /// Their test points; without it, `test_fraction` of `path` is held out (a seeded split).
    pub test_path: Option<PathBuf>,
    pub test_fraction: f64,
    /// Training and test points drawn from a toy generator (separate draws).
    pub n_train: i64,
    pub n_test: i64,
    /// Seed of the data, apart from the training seed, so every experiment sees the same points.
    pub seed: i64,
    /// Images: flatten [1, 28, 28] to \[784] for vector models.
    pub flatten: bool,
    /// Images: dynamic binarization, each pixel ~ Bernoulli(pixel/255) drawn afresh per training batch (the test set
    /// once, with a fixed seed); likelihoods are then in nats of binary images, not bits/dim.
    pub binarize: bool,
    /// Dimension of samples from an energy target (doublewell has a D-dimensional form; gmm is 2D).
    pub dim: Option<i64>,
    /// Where `make data` put the IDX files.
    pub dir: PathBuf,
    /// Energy targets: how the training points are drawn. Unset: exact samples. `"chain"`: the SNF paper's data
    /// (Wu et al. 2020, experiment 1): one random-walk Metropolis chain from (-2, 0, ...) with proposal std 1.5,
    /// 10 x n_train steps, every 10th state kept. The test points stay exact samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_sampler: Option<TrainSampler>,
    /// Conditional models p(x | c): which columns (0-based) of `path` (and `test_path`) are the context c; the
    /// other columns are x.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_columns: Option<Vec<i64>>,
    /// Or the context in a file of its own, one row per row of `path` (.npy/.csv)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_path: Option<PathBuf>,
    /// ... and one per row of `test_path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_context_path: Option<PathBuf>,
    /// The context is one column of class indices 0..K-1 (K = this), not a continuous vector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_classes: Option<i64>,
    /// `"labels"`: class labels as the context, for class-conditional models (MNIST / Fashion-MNIST / CIFAR-10's
    /// 10 classes, a folder's class sub-folders, an .npz's labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Images from a folder or an array file: centre-crop to a square and resize to this side (default: keep the
    /// files' size, which must then agree). CIFAR-10: the centre crop of this side, no resize (16: the CPU profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<i64>,
    /// Images: 1 (grey) or 3 (colour); default: what the files hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<i64>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            name: Default::default(),
            path: Default::default(),
            test_path: Default::default(),
            test_fraction: 0.1,
            n_train: 100_000,
            n_test: 20_000,
            seed: Default::default(),
            flatten: Default::default(),
            binarize: Default::default(),
            dim: Default::default(),
            dir: PathBuf::from("data"),
            train_sampler: Default::default(),
            context_columns: None,
            context_path: None,
            test_context_path: None,
            context_classes: None,
            context: None,
            image_size: None,
            channels: None,
        }
    }
}

/// How an energy target's training points are drawn (`data.train_sampler`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainSampler {
    Exact,
    Chain,
}

/// Train and test sets held on the CPU, plus what evaluation needs to know about them.
#[derive(Debug)]
pub struct Dataset {
    pub name: String,
    /// [N, event shape...], f32. For 8-bit images: raw pixel values 0..255 (dequantize per batch), f32 for MNIST /
    /// Fashion-MNIST and uint8 for CIFAR-10, image folders and arrays (there possibly a view of a memory map).
    pub train: Tensor,
    /// Test set, already dequantized with a fixed draw for images.
    pub test: Tensor,
    /// Event shape, e.g. \[2] or [1, 28, 28].
    pub shape: Vec<i64>,
    /// 8-bit data modelled as (pixel + u)/256 on \[0,1]^D: bits/dim = nll / (D ln 2) + 8.
    pub dequantized_8bit: bool,
    /// Dynamically binarized images: the train set holds pixels 0..255, each batch draws Bernoulli(pixel/255).
    pub binarized: bool,
    /// The data's true differential entropy (nats), where known.
    pub true_entropy: Option<f64>,
    /// The true law of a synthetic set (a toy set or an energy target's samples), as far as it is known.
    pub truth: Option<truth::Truth>,
    /// The context of every train and test row, for conditional models p(x | c).
    pub context: Option<ContextData>,
}

/// The contexts that travel beside a dataset's rows (the same index selects both).
#[derive(Debug)]
pub struct ContextData {
    pub spec: ContextSpec,
    pub train: Context,
    pub test: Context,
    /// A simulation-based-inference task: its reference posteriors (`sbi::Task`).
    pub task: Option<sbi::Task>,
}

impl Dataset {
    /// MNIST-like images (8-bit or binarized), drawn as image grids.
    pub fn is_image(&self) -> bool {
        self.dequantized_8bit || self.binarized
    }

    /// A synthetic set (toy or energy target): its scale is known, so pictures use a fixed window.
    pub fn is_synthetic(&self) -> bool {
        self.truth.is_some()
    }

    /// The contexts of training rows `idx` on `device` (`Context::None` for an unconditional dataset).
    pub fn context_batch(&self, idx: &Tensor, device: tch::Device) -> Context {
        self.context.as_ref().map_or(Context::None, |c| c.train.rows(idx, device))
    }

    /// The contexts of test rows `start..start + len` on `device`.
    pub fn test_context(&self, start: i64, len: i64, device: tch::Device) -> Context {
        self.context.as_ref().map_or(Context::None, |c| c.test.narrow(start, len, device))
    }

    /// The context spec, if the data has contexts.
    pub fn context_spec(&self) -> Option<ContextSpec> {
        self.context.as_ref().map(|c| c.spec)
    }

    /// Number of dimensions D of one example.
    pub fn dim(&self) -> i64 {
        self.shape.iter().product()
    }

    /// A training batch: rows `idx` of the train set, on `device`, dequantized with fresh noise for images.
    pub fn batch(&self, idx: &Tensor, device: tch::Device) -> Tensor {
        let mut x = self.train.index_select(0, idx).to_device(device);
        if x.kind() == Kind::Uint8 {
            x = x.to_kind(Kind::Float);
        }
        if self.binarized {
            binarize_rows(&x)
        } else if self.dequantized_8bit {
            dequantize(&x)
        } else {
            x
        }
    }
}

impl DataConfig {
    /// What this config reads, for messages and summaries.
    pub fn display_name(&self) -> String {
        match (&self.path, &self.name) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(n)) => n.clone(),
            (None, None) => "<none>".into(),
        }
    }
}

/// Loads (or generates) the dataset a config names. `root` resolves relative paths (the experiment's working dir).
pub fn load(cfg: &DataConfig, root: &Path) -> Result<Dataset> {
    let energy_target = cfg.path.is_none() && matches!(cfg.name.as_deref(), Some("doublewell" | "gmm"));
    if cfg.train_sampler == Some(TrainSampler::Chain) && !energy_target {
        let what = cfg.path.as_ref().map_or_else(|| format!("`{}`", cfg.name.as_deref().unwrap_or("?")), |p| p.display().to_string());
        bail!("data.train_sampler = \"chain\" draws training points from an energy target (doublewell, gmm), not from {what}");
    }
    check_context_keys(cfg)?;
    if let Some(path) = &cfg.path {
        let path = root.join(path);
        if images::is_image_source(&path) {
            return load_image_files(cfg, &path, root);
        }
        check_image_keys(cfg)?;
        if cfg.context.is_some() {
            bail!("data.context = \"labels\" applies to labelled images; {} holds points (name the context with data.context_columns or data.context_path)", path.display());
        }
        return load_user(cfg, &path, root);
    }
    let Some(name) = cfg.name.as_deref() else { bail!("[data] needs `name` (a dataset) or `path` (a .npy/.csv file)") };
    if cfg.binarize && !matches!(name, "mnist" | "fashion-mnist") {
        bail!("data.binarize applies to mnist and fashion-mnist, not `{name}`");
    }
    match name {
        "mnist" | "fashion-mnist" => {
            check_image_keys(cfg)?;
            load_images(cfg, name, &root.join(&cfg.dir).join(name))
        }
        "cifar10" => {
            ensure!(cfg.channels.is_none_or(|c| c == 3), "data.channels: cifar10 is colour (3 channels), got {:?}", cfg.channels);
            // data.image_size is a centre crop (not a resize): the pixels keep their statistics, the view shrinks.
            let (train, test) = images::cifar10_at(&root.join(&cfg.dir).join("cifar10"), cfg.image_size)?;
            image_dataset(cfg, "cifar10", train, test)
        }
        "doublewell" | "gmm" => load_energy(cfg, name),
        "doublewell-tilted" => load_tilted(cfg),
        "exchangeable" => load_exchangeable(cfg),
        _ if sbi::Task::from_name(name).is_some() => load_task(cfg, sbi::Task::from_name(name).expect("checked")),
        _ => match toy::Toy::from_name(name) {
            Some(t) => load_toy(cfg, t),
            None => bail!(
                "unknown dataset `{name}` in data.name; known: {}, exchangeable, doublewell, doublewell-tilted, gmm, mnist, fashion-mnist, cifar10, the simulation-based-inference tasks {} (or data.path = a .npy/.csv file)",
                toy::names().join(", "),
                sbi::Task::names().join(", ")
            ),
        },
    }
}

fn load_toy(cfg: &DataConfig, toy: toy::Toy) -> Result<Dataset> {
    if cfg.n_train < 1 || cfg.n_test < 1 {
        bail!("data.n_train and data.n_test must be positive");
    }
    tch::manual_seed(cfg.seed * 2 + 1);
    let train = toy.generate(cfg.n_train);
    tch::manual_seed(cfg.seed * 2 + 2);
    let test = toy.generate(cfg.n_test);
    let truth = truth::Truth::new(std::rc::Rc::new(toy));
    let true_entropy = truth.entropy();
    Ok(Dataset { name: toy.name().into(), train, test, shape: vec![2], dequantized_8bit: false, binarized: false, true_entropy, truth: Some(truth), context: None })
}

/// Exact samples of an energy target (see `dist::energy`); the true entropy comes from quadrature.
fn load_energy(cfg: &DataConfig, name: &str) -> Result<Dataset> {
    if cfg.n_train < 1 || cfg.n_test < 1 {
        bail!("data.n_train and data.n_test must be positive");
    }
    let dim = cfg.dim.unwrap_or(2);
    let energy: std::rc::Rc<dyn crate::dist::energy::Energy> = crate::dist::energy::by_name(name, dim)?.into();
    tch::manual_seed(cfg.seed * 2 + 1);
    let train = match cfg.train_sampler {
        Some(TrainSampler::Chain) => metropolis_chain(&*energy, cfg.n_train, 10, 1.5),
        _ => energy.sample(cfg.n_train),
    };
    tch::manual_seed(cfg.seed * 2 + 2);
    let test = energy.sample(cfg.n_test);
    Ok(Dataset { name: name.into(), train, test, shape: vec![dim], dequantized_8bit: false, binarized: false, true_entropy: Some(energy.entropy()), truth: Some(truth::Truth::new(energy)), context: None })
}

/// `doublewell-tilted`: pairs (x, c) with the tilt c uniform over `TiltedDoubleWell::tilts()` and x an exact draw
/// of u(x; c) = x1⁴ − 6 x1² − c x1 + ½|x_rest|² (dimension `data.dim`, default 2); the context is c (one column), the
/// true entropy H(x | c) by quadrature.
fn load_tilted(cfg: &DataConfig) -> Result<Dataset> {
    if cfg.n_train < 1 || cfg.n_test < 1 {
        bail!("data.n_train and data.n_test must be positive");
    }
    let dim = cfg.dim.unwrap_or(2);
    if dim < 2 {
        bail!("data.dim of doublewell-tilted must be at least 2, got {dim}");
    }
    let energy = crate::dist::energy::TiltedDoubleWell::new(dim);
    tch::manual_seed(cfg.seed * 2 + 1);
    let (train, c_train) = energy.sample_pairs(cfg.n_train);
    tch::manual_seed(cfg.seed * 2 + 2);
    let (test, c_test) = energy.sample_pairs(cfg.n_test);
    let context = ContextData { spec: ContextSpec::Vector { width: 1 }, train: Context::Vector(c_train), test: Context::Vector(c_test), task: None };
    Ok(Dataset {
        name: "doublewell-tilted".into(),
        train,
        test,
        shape: vec![dim],
        dequantized_8bit: false,
        binarized: false,
        true_entropy: Some(energy.conditional_entropy()),
        truth: None,
        context: Some(context),
    })
}

/// `n` points from one random-walk Metropolis chain on `energy` started at (-2, 0, ...): proposal N(0, std² I),
/// `stride * n` steps, every `stride`-th state kept (bgtorch's `GaussianMCMCSampler`, as the SNF paper made its data).
fn metropolis_chain(energy: &dyn crate::dist::energy::Energy, n: i64, stride: i64, std: f64) -> Tensor {
    let dim = energy.dim();
    let mut start = vec![0.0f64; dim as usize];
    start[0] = -2.0;
    let mut x = Tensor::from_slice(&start).view([1, dim]);
    let mut u = energy.energy(&x.to_kind(tch::Kind::Float)).to_kind(tch::Kind::Double);
    let noise = Tensor::randn([stride * n, dim], (tch::Kind::Double, tch::Device::Cpu)) * std;
    let log_u: Vec<f64> = Vec::try_from(-Tensor::rand([stride * n], (tch::Kind::Double, tch::Device::Cpu)).log()).expect("a 1-d f64 tensor");
    let mut kept = Vec::with_capacity(n as usize);
    for step in 0..stride * n {
        let proposal = &x + noise.narrow(0, step, 1);
        let u_p = energy.energy(&proposal.to_kind(tch::Kind::Float)).to_kind(tch::Kind::Double);
        if log_u[step as usize] > (&u_p - &u).double_value(&[0]) {
            (x, u) = (proposal, u_p);
        }
        if (step + 1) % stride == 0 {
            kept.push(x.shallow_clone());
        }
    }
    Tensor::cat(&kept, 0).to_kind(tch::Kind::Float)
}

/// A simulation-based-inference task: `n_train` simulated pairs (θ, x) to learn q(θ | x) from, `n_test` fresh ones;
/// the rows are θ, the context x. H(θ | x) is the dataset's true entropy where the task knows it (gaussian_linear).
fn load_task(cfg: &DataConfig, task: sbi::Task) -> Result<Dataset> {
    if cfg.n_train < 1 || cfg.n_test < 1 {
        bail!("data.n_train (the simulation budget) and data.n_test must be positive");
    }
    let draw = |seed: i64, n: i64| {
        tch::manual_seed(seed);
        let theta = task.prior(n);
        let x = task.simulate(&theta);
        (theta.to_kind(Kind::Float), x.to_kind(Kind::Float))
    };
    let (train, x_train) = draw(cfg.seed * 2 + 1, cfg.n_train);
    let (test, x_test) = draw(cfg.seed * 2 + 2, cfg.n_test);
    let spec = ContextSpec::Vector { width: task.x_dim() };
    let context = ContextData { spec, train: Context::Vector(x_train), test: Context::Vector(x_test), task: Some(task) };
    Ok(Dataset {
        name: task.name().into(),
        train,
        test,
        shape: vec![task.theta_dim()],
        dequantized_8bit: false,
        binarized: false,
        true_entropy: task.conditional_entropy(),
        truth: None,
        context: Some(context),
    })
}

/// `exchangeable` (dimension `data.dim`, default 4): i.i.d. mixture coordinates, true entropy by quadrature.
fn load_exchangeable(cfg: &DataConfig) -> Result<Dataset> {
    if cfg.n_train < 1 || cfg.n_test < 1 {
        bail!("data.n_train and data.n_test must be positive");
    }
    let dim = cfg.dim.unwrap_or(4);
    if dim < 2 {
        bail!("data.dim must be at least 2 for exchangeable data, got {dim}");
    }
    tch::manual_seed(cfg.seed * 2 + 1);
    let train = toy::exchangeable(cfg.n_train, dim);
    tch::manual_seed(cfg.seed * 2 + 2);
    let test = toy::exchangeable(cfg.n_test, dim);
    let h = toy::exchangeable_entropy(dim);
    Ok(Dataset { name: "exchangeable".into(), train, test, shape: vec![dim], dequantized_8bit: false, binarized: false, true_entropy: Some(h), truth: None, context: None })
}

fn load_user(cfg: &DataConfig, path: &Path, root: &Path) -> Result<Dataset> {
    let (x, columns) = with_context_columns(cfg, points::load_points(path)?, path, root, cfg.context_path.as_deref(), "data.context_path")?;
    let x_only = match &columns {
        Some(cols) => split_columns(&x, cols).0,
        None => x.shallow_clone(),
    };
    points::check_not_constant(&x_only, path)?;
    points::warn_if_discrete(&x_only, path);
    let (train, test) = match &cfg.test_path {
        Some(t) => {
            let t = root.join(t);
            let (test, _) = with_context_columns(cfg, points::load_points(&t)?, &t, root, cfg.test_context_path.as_deref(), "data.test_context_path")?;
            if test.size()[1] != x.size()[1] {
                bail!("{}: {} columns, but {} has {}", t.display(), test.size()[1], path.display(), x.size()[1]);
            }
            (x, test)
        }
        None => {
            if !(0.0..1.0).contains(&cfg.test_fraction) || cfg.test_fraction == 0.0 {
                bail!("data.test_fraction must be in (0, 1), got {}", cfg.test_fraction);
            }
            let n = x.size()[0];
            let n_test = ((n as f64 * cfg.test_fraction).round() as i64).clamp(1, n - 1);
            tch::manual_seed(cfg.seed * 2 + 1);
            let x = x.index_select(0, &Tensor::randperm(n, (Kind::Int64, tch::Device::Cpu)));
            (x.narrow(0, n_test, n - n_test), x.narrow(0, 0, n_test))
        }
    };
    let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let (train, test, context) = match columns {
        None => (train, test, None),
        Some(cols) => {
            let (train, c_train) = split_columns(&train, &cols);
            let (test, c_test) = split_columns(&test, &cols);
            let spec = match cfg.context_classes {
                Some(classes) => ContextSpec::Class { classes },
                None => ContextSpec::Vector { width: cols.len() as i64 },
            };
            let what = |split: &str| format!("{}: the context of the {split} rows", path.display());
            let c_train = spec.from_matrix(&c_train).with_context(|| what("training"))?;
            let c_test = spec.from_matrix(&c_test).with_context(|| what("test"))?;
            (train, test, Some(ContextData { spec, train: c_train, test: c_test, task: None }))
        }
    };
    let shape = vec![train.size()[1]];
    Ok(Dataset { name, train, test, shape, dequantized_8bit: false, binarized: false, true_entropy: None, truth: None, context })
}

/// The points with their context columns, and which columns those are: `data.context_columns` of the file itself,
/// or a context file's columns appended (`file_key` names that file's key for messages). None: no context.
fn with_context_columns(cfg: &DataConfig, x: Tensor, path: &Path, root: &Path, file: Option<&Path>, file_key: &str) -> Result<(Tensor, Option<Vec<i64>>)> {
    let d = x.size()[1];
    match (&cfg.context_columns, file) {
        (Some(_), Some(_)) => bail!("data.context_columns and {file_key} both give the context; use one"),
        (Some(cols), None) => {
            let mut seen = std::collections::BTreeSet::new();
            for &c in cols {
                if c < 0 || c >= d {
                    bail!("data.context_columns: column {c} is out of range for {} ({d} columns, numbered from 0)", path.display());
                }
                if !seen.insert(c) {
                    bail!("data.context_columns: column {c} is listed twice");
                }
            }
            if cols.is_empty() || cols.len() as i64 >= d {
                bail!("data.context_columns must leave at least one column of x and name at least one context column ({} has {d} columns)", path.display());
            }
            Ok((x, Some(cols.clone())))
        }
        (None, Some(f)) => {
            let f = root.join(f);
            let c = points::load_points(&f).with_context(|| format!("{file_key}"))?;
            if c.size()[0] != x.size()[0] {
                bail!("{file_key} {}: {} rows, but {} has {} rows (one context row per data row)", f.display(), c.size()[0], path.display(), x.size()[0]);
            }
            let k = c.size()[1];
            Ok((Tensor::cat(&[x, c], 1), Some((d..d + k).collect())))
        }
        (None, None) => Ok((x, None)),
    }
}

/// (x, c): the columns not in `cols`, and those in `cols` (in the order given).
fn split_columns(m: &Tensor, cols: &[i64]) -> (Tensor, Tensor) {
    let d = m.size()[1];
    let rest: Vec<i64> = (0..d).filter(|c| !cols.contains(c)).collect();
    (m.index_select(1, &Tensor::from_slice(&rest)), m.index_select(1, &Tensor::from_slice(cols)))
}

/// Refuses context keys that do not fit the rest of `[data]`.
fn check_context_keys(cfg: &DataConfig) -> Result<()> {
    let from_file = cfg.context_columns.is_some() || cfg.context_path.is_some();
    if from_file && cfg.path.is_none() {
        bail!("data.context_columns and data.context_path apply to a user's own points (data.path)");
    }
    if cfg.test_context_path.is_some() && (cfg.test_path.is_none() || cfg.context_path.is_none()) {
        bail!("data.test_context_path needs data.test_path and data.context_path");
    }
    if cfg.test_path.is_some() && cfg.context_path.is_some() && cfg.test_context_path.is_none() {
        bail!("data.test_path has no context: set data.test_context_path (one context row per test row)");
    }
    if cfg.context_classes.is_some() && !from_file {
        bail!("data.context_classes says the context column holds classes; name that column (data.context_columns) or file (data.context_path)");
    }
    if let Some(k) = cfg.context_classes {
        if k < 1 {
            bail!("data.context_classes must be at least 1, got {k}");
        }
    }
    if let Some(c) = &cfg.context {
        if c != "labels" {
            bail!("data.context = \"{c}\" is not known; \"labels\" (MNIST / Fashion-MNIST classes) is, or use data.context_columns / data.context_path");
        }
        // A data.path is judged when it is read: images may carry labels, points never do (`load_user`).
        if cfg.path.is_none() && !matches!(cfg.name.as_deref(), Some("mnist" | "fashion-mnist" | "cifar10")) {
            bail!("data.context = \"labels\" applies to labelled images (mnist, fashion-mnist, cifar10, a folder of class folders, an .npz with labels), not {}", cfg.display_name());
        }
    }
    Ok(())
}

/// data.image_size and data.channels apply to images read from files (a folder, .npy / .npz arrays).
fn check_image_keys(cfg: &DataConfig) -> Result<()> {
    if cfg.image_size.is_some() || cfg.channels.is_some() {
        bail!("data.image_size and data.channels apply to images read from data.path (a folder of PNG / JPEG files, or a uint8 .npy / .npz array), not {}", cfg.display_name());
    }
    Ok(())
}

/// A folder or array file of 8-bit images (data.path), with data.test_path's images as the test set or a seeded
/// data.test_fraction held out.
fn load_image_files(cfg: &DataConfig, path: &Path, root: &Path) -> Result<Dataset> {
    if let Some(s) = cfg.image_size {
        ensure!(s >= 2, "data.image_size must be at least 2, got {s}");
    }
    let layout = images::Layout { size: cfg.image_size, channels: cfg.channels };
    let all = images::load(path, layout)?;
    let (train, test) = match &cfg.test_path {
        Some(t) => {
            let t = root.join(t);
            let layout = images::Layout { channels: Some(all.pixels.size()[1]), ..layout };
            let test = images::load(&t, layout)?;
            ensure!(
                test.pixels.size()[1..] == all.pixels.size()[1..],
                "{}: test images are {:?}, but {} holds {:?} (set data.image_size to resize both)",
                t.display(),
                &test.pixels.size()[1..],
                path.display(),
                &all.pixels.size()[1..]
            );
            (all, test)
        }
        None => {
            ensure!(cfg.test_fraction > 0.0 && cfg.test_fraction < 1.0, "data.test_fraction must be in (0, 1), got {}", cfg.test_fraction);
            let n = all.pixels.size()[0];
            ensure!(n >= 2, "{}: {n} image(s); a test split needs at least 2", path.display());
            let n_test = ((n as f64 * cfg.test_fraction).round() as i64).clamp(1, n - 1);
            tch::manual_seed(cfg.seed * 2 + 1);
            let perm = Tensor::randperm(n, (Kind::Int64, tch::Device::Cpu));
            let order: Vec<i64> = Vec::try_from(&perm).expect("a 1-d i64 tensor");
            let part = |idx: &[i64]| images::Images {
                pixels: all.pixels.index_select(0, &Tensor::from_slice(idx)),
                labels: all.labels.as_ref().map(|l| idx.iter().map(|&i| l[i as usize]).collect()),
                classes: all.classes.clone(),
            };
            (part(&order[n_test as usize..]), part(&order[..n_test as usize]))
        }
    };
    let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    image_dataset(cfg, &name, train, test)
}

/// A dataset of 8-bit images: training pixels kept 0..255 (dequantized per batch), the test set dequantized once
/// with the data seed, labels as the context when data.context = "labels".
fn image_dataset(cfg: &DataConfig, name: &str, train: images::Images, test: images::Images) -> Result<Dataset> {
    ensure!(!cfg.binarize, "data.binarize applies to mnist and fashion-mnist, not {name}");
    let context = match cfg.context.as_deref() {
        Some(_) => {
            let (Some(tl), Some(sl)) = (&train.labels, &test.labels) else {
                bail!("data.context = \"labels\": {name} has no labels (put the images in one sub-folder per class, or save labels as `y` in the .npz)")
            };
            let classes = train.classes.as_ref().map(|c| c.len() as i64).unwrap_or_else(|| tl.iter().chain(sl).copied().max().unwrap_or(0) + 1);
            let labels = |l: &[i64]| Context::Class(Tensor::from_slice(l));
            Some(ContextData { spec: ContextSpec::Class { classes }, train: labels(tl), test: labels(sl), task: None })
        }
        None => None,
    };
    tch::manual_seed(cfg.seed * 2 + 2);
    let test_x = dequantize(&test.pixels.to_kind(Kind::Float));
    let mut shape = train.pixels.size()[1..].to_vec();
    let (train_x, test_x) = if cfg.flatten {
        shape = vec![shape.iter().product()];
        (train.pixels.flatten(1, -1), test_x.flatten(1, -1))
    } else {
        (train.pixels, test_x)
    };
    Ok(Dataset { name: name.into(), train: train_x, test: test_x, shape, dequantized_8bit: true, binarized: false, true_entropy: None, truth: None, context })
}

fn load_images(cfg: &DataConfig, name: &str, dir: &Path) -> Result<Dataset> {
    let train = idx::load_split(dir, idx::Split::Train, true).with_context(|| format!("loading {name} train split"))?;
    let test = idx::load_split(dir, idx::Split::Test, true).with_context(|| format!("loading {name} test split"))?;
    let context = cfg.context.is_some().then(|| {
        let labels = |set: &idx::ImageSet| Context::Class(Tensor::from_slice(&set.labels).to_kind(Kind::Int64));
        ContextData { spec: ContextSpec::Class { classes: 10 }, train: labels(&train), test: labels(&test), task: None }
    });
    let (train, test) = (idx::pixels(&train), idx::pixels(&test));
    tch::manual_seed(cfg.seed * 2 + 2);
    let test = if cfg.binarize { binarize(&test) } else { dequantize(&test) };
    let mut shape = train.size()[1..].to_vec();
    let (train, test) = if cfg.flatten {
        shape = vec![shape.iter().product()];
        (train.flatten(1, -1), test.flatten(1, -1))
    } else {
        (train, test)
    };
    Ok(Dataset { name: name.into(), train, test, shape, dequantized_8bit: !cfg.binarize, binarized: cfg.binarize, true_entropy: None, truth: None, context })
}

/// The largest f32 below 1.
const BELOW_ONE: f64 = 1.0 - 1.0 / 16_777_216.0;

/// Uniform dequantization of 8-bit pixel values: (pixel + u)/256 with u ~ U(0,1), in [0, 1). In f32, (255 + u)/256
/// rounds to exactly 1 when u is within 2^-16 of 1, so the result is clamped to the largest f32 below 1 (a logit
/// transform needs x < 1).
pub fn dequantize(pixels: &Tensor) -> Tensor {
    ((pixels + crate::rows::rand_like(pixels)) / 256.0).clamp_max(BELOW_ONE)
}

/// Dynamic binarization of 8-bit pixel values: 1 with probability pixel/255.
pub fn binarize(pixels: &Tensor) -> Tensor {
    (pixels / 255.0).bernoulli()
}

/// Dynamic binarization of a training batch, each image's uniforms drawn as rows of the whole batch's draw (so a
/// data-parallel rank binarizes its images as one process would; see `crate::rows`).
fn binarize_rows(pixels: &Tensor) -> Tensor {
    let p = pixels / 255.0;
    crate::rows::rand_like(&p).lt_tensor(&p).to_kind(p.kind())
}

/// Bits per dimension of a negative log-likelihood in nats. For 8-bit data modelled on \[0,1]^D as (pixel + u)/256,
/// the discrete NLL is nll + D ln 256, so bits/dim = nll / (D ln 2) + 8 (REFERENCES.md); else nll / (D ln 2).
///
/// ```
/// use relaxflow::data::bits_per_dim;
/// // A density of 1 on [0,1]^784 (NLL 0 nats) is 8 bits per 8-bit pixel: the uniform code.
/// assert_eq!(bits_per_dim(0.0, 784, true), 8.0);
/// // Continuous data: nats to bits per dimension only.
/// assert!((bits_per_dim(2.0 * std::f64::consts::LN_2, 2, false) - 1.0).abs() < 1e-12);
/// ```
pub fn bits_per_dim(nll_nats: f64, dim: i64, dequantized_8bit: bool) -> f64 {
    let bpd = nll_nats / (dim as f64 * std::f64::consts::LN_2);
    if dequantized_8bit {
        bpd + 8.0
    } else {
        bpd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_chain_visits_both_wells_and_keeps_every_tenth_state() {
        let dw = crate::dist::energy::DoubleWell::new(2);
        tch::manual_seed(0);
        let x = metropolis_chain(&dw, 3000, 10, 1.5);
        assert_eq!(x.size(), vec![3000, 2]);
        // The exact weight of x1 < 0 is 0.156; a 30,000-step chain with σ = 1.5 crosses the barrier often.
        let left = x.select(1, 0).lt(0.0).to_kind(Kind::Double).mean(None).double_value(&[]);
        assert!(left > 0.05 && left < 0.35, "left-well fraction {left}");
        // Kept states are 10 steps apart: most consecutive rows differ, a few repeat (10 rejections in a row).
        let moved = (x.narrow(0, 1, 2999) - x.narrow(0, 0, 2999)).abs().sum_dim_intlist(1, false, None).gt(0.0);
        let moved = moved.to_kind(Kind::Double).mean(None).double_value(&[]);
        assert!(moved > 0.5 && moved < 1.0, "rows that moved: {moved}");
        let cfg: DataConfig = toml::from_str("name = \"doublewell\"\nn_train = 500\nn_test = 100\ntrain_sampler = \"chain\"").unwrap();
        let d = load(&cfg, Path::new(".")).unwrap();
        assert_eq!((d.train.size(), d.test.size()), (vec![500, 2], vec![100, 2]));
        let moons: DataConfig = toml::from_str("name = \"moons\"\ntrain_sampler = \"chain\"").unwrap();
        let err = load(&moons, Path::new(".")).err().unwrap().to_string();
        assert!(err.contains("data.train_sampler") && err.contains("`moons`"), "{err}");
    }

    #[test]
    fn bits_per_dim_of_the_uniform_density_is_eight() {
        // The uniform density on [0,1]^D has nll 0: every 8-bit value gets probability 1/256, i.e. 8 bits.
        assert!((bits_per_dim(0.0, 784, true) - 8.0).abs() < 1e-12);
        // A density 2^D on the unit cube (nll = -D ln 2) means one bit per dimension saved.
        assert!((bits_per_dim(-784.0 * std::f64::consts::LN_2, 784, true) - 7.0).abs() < 1e-12);
        assert!((bits_per_dim(2.0 * std::f64::consts::LN_2, 2, false) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn toy_train_and_test_are_different_draws_and_reproducible() {
        let cfg: DataConfig = toml::from_str("name = \"moons\"\nn_train = 500\nn_test = 100").unwrap();
        let a = load(&cfg, Path::new(".")).unwrap();
        let b = load(&cfg, Path::new(".")).unwrap();
        assert!(a.train.equal(&b.train) && a.test.equal(&b.test));
        assert!(!a.train.narrow(0, 0, 100).equal(&a.test));
        assert_eq!(a.shape, vec![2]);
    }

    #[test]
    fn mnist_loads_as_dequantized_8bit_vectors() {
        let cfg: DataConfig = toml::from_str("name = \"mnist\"\nflatten = true").unwrap();
        let d = load(&cfg, Path::new(env!("CARGO_MANIFEST_DIR"))).expect("MNIST present (run `make data`)");
        assert_eq!((d.train.size(), d.test.size(), d.dim()), (vec![60_000, 784], vec![10_000, 784], 784));
        assert!(d.dequantized_8bit);
        let (lo, hi) = (d.test.min().double_value(&[]), d.test.max().double_value(&[]));
        assert!(lo > 0.0 && hi < 1.0, "test set dequantized into (0, 1): {lo} {hi}");
        let idx = Tensor::arange(64, (Kind::Int64, tch::Device::Cpu));
        let b = d.batch(&idx, tch::Device::Cpu);
        let pixels = d.train.narrow(0, 0, 64);
        let u = &b * 256.0 - pixels;
        let (lo, hi, mean) = (u.min().double_value(&[]), u.max().double_value(&[]), u.mean(None).double_value(&[]));
        assert!(lo > -1e-4 && hi < 1.0 + 1e-4, "batch = (pixel + u)/256 with u in [0, 1): {lo} {hi}");
        assert!((mean - 0.5).abs() < 0.01, "u ~ U(0, 1): mean {mean}");
    }

    #[test]
    fn user_points_are_split_by_test_fraction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pts.npy");
        Tensor::randn([200, 3], (Kind::Float, tch::Device::Cpu)).write_npy(&path).unwrap();
        let cfg: DataConfig = toml::from_str(&format!("path = {:?}\ntest_fraction = 0.25", path)).unwrap();
        let d = load(&cfg, Path::new("/")).unwrap();
        assert_eq!((d.train.size()[0], d.test.size()[0], d.dim()), (150, 50, 3));
    }
}
