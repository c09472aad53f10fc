//! Energy targets p(x) ∝ exp(-u(x)) for stochastic normalizing flows and energy-based training, each with an
//! analytic gradient (so Langevin and HMC layers stay differentiable without nested autograd) and its exact
//! normaliser, mode weight and reference samples computed numerically.
use anyhow::{bail, Result};
use std::f64::consts::PI;
use super::law::{nearest_centre, KnownLaw};
use tch::{Device, Kind, Tensor};

/// An unnormalised log-density -u(x) on R^D; as a data set's law (`KnownLaw`) it says what else it knows.
pub trait Energy: KnownLaw + std::fmt::Debug {
    fn dim(&self) -> i64;
    /// u(x) per example, shape \[batch].
    fn energy(&self, x: &Tensor) -> Tensor;
    /// ∇u(x), shape [batch, D] (analytic; tested against autograd).
    fn grad(&self, x: &Tensor) -> Tensor;
    /// log Z = log ∫ exp(-u), computed numerically (or in closed form).
    fn log_z(&self) -> f64;
    /// P(x1 < 0) under the target.
    fn mode_weight(&self) -> f64;
    /// Differential entropy H = E\[u] + log Z (nats), by quadrature.
    fn entropy(&self) -> f64;
    /// `n` exact (up to grid resolution) samples, drawn from torch's RNG, on the CPU.
    fn sample(&self, n: i64) -> Tensor;
    /// Marginal probability of x1 falling in each of the `bins` equal bins of [lo, hi] (for free-energy profiles).
    fn x1_bin_probs(&self, lo: f64, hi: f64, bins: i64) -> Vec<f64>;
}

/// Names of every energy.
pub const NAMES: [&str; 3] = ["doublewell", "gmm", "rings"];

/// The named energy in `dim` dimensions (only the double well has a multi-dimensional form).
pub fn by_name(name: &str, dim: i64) -> Result<Box<dyn Energy>> {
    let e: Box<dyn Energy> = match name {
        "doublewell" => Box::new(DoubleWell::new(dim)),
        "gmm" if dim == 2 => Box::new(GaussianMixture::four_modes()),
        "rings" if dim == 2 => Box::new(Rings::ffjord()),
        "gmm" | "rings" => bail!("energy `{name}` is 2-dimensional, asked for {dim}"),
        _ => bail!("unknown energy `{name}`; known: {}", NAMES.join(", ")),
    };
    Ok(e)
}

fn f64_opts() -> (Kind, Device) {
    (Kind::Double, Device::Cpu)
}

/// A 1D density exp(-f(x)) tabulated on a fine grid over [lo, hi]: normaliser, CDF sampling, bin masses.
struct Grid1d {
    lo: f64,
    h: f64,
    /// Unnormalised density at cell centres.
    p: Tensor,
    log_z: f64,
}

impl Grid1d {
    fn new(lo: f64, hi: f64, n: i64, neg_log_density: impl Fn(&Tensor) -> Tensor) -> Self {
        let h = (hi - lo) / n as f64;
        let centres = Tensor::arange(n, f64_opts()) * h + (lo + 0.5 * h);
        let log_p = -neg_log_density(&centres);
        let shift = log_p.max().double_value(&[]);
        let p = (log_p - shift).exp();
        let log_z = (p.sum(Kind::Double).double_value(&[]) * h).ln() + shift;
        Grid1d { lo, h, p, log_z }
    }

    /// -∫ p log p of the normalised density.
    fn entropy(&self) -> f64 {
        let total = self.p.sum(Kind::Double).double_value(&[]);
        let q = &self.p / total; // cell probabilities
        let dens = &q / self.h;
        -(q * dens.clamp_min(1e-300).log()).sum(Kind::Double).double_value(&[])
    }

    fn sample(&self, n: i64) -> Tensor {
        let cells = self.p.to_kind(Kind::Float).multinomial(n, true).to_kind(Kind::Double);
        (cells + Tensor::rand([n], f64_opts())) * self.h + self.lo
    }

    /// ∫ over [a, b] of the normalised density, by summing cells (fine grid: cell edges resolve bins).
    fn mass(&self, a: f64, b: f64) -> f64 {
        let n = self.p.size()[0];
        let total = self.p.sum(Kind::Double).double_value(&[]);
        let first = (((a - self.lo) / self.h).round() as i64).clamp(0, n);
        let last = (((b - self.lo) / self.h).round() as i64).clamp(0, n);
        if last <= first {
            return 0.0;
        }
        self.p.narrow(0, first, last - first).sum(Kind::Double).double_value(&[]) / total
    }
}

/// Double well of Wu et al. (bgflow `DoubleWellEnergy(dim, a=-0.5, b=-6, c=1)`):
/// u(x) = x1⁴ - 6 x1² - 0.5 x1 + ½ Σ_{i≥2} x_i². Separable: x1 is tabulated in 1D, the rest is N(0, I).
pub struct DoubleWell {
    dim: i64,
    x1: Grid1d,
}

impl std::fmt::Debug for DoubleWell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DoubleWell(dim={})", self.dim)
    }
}

impl DoubleWell {
    pub fn new(dim: i64) -> Self {
        let u1 = |x: &Tensor| x.pow_tensor_scalar(4) - x.square() * 6.0 - x * 0.5;
        DoubleWell { dim, x1: Grid1d::new(-4.0, 4.0, 400_000, u1) }
    }
}

/// Not used as a known law by the expressivity measures (its data sets report free energies and log Z instead).
impl KnownLaw for DoubleWell {}

impl Energy for DoubleWell {
    fn dim(&self) -> i64 {
        self.dim
    }
    fn energy(&self, x: &Tensor) -> Tensor {
        let x1 = x.select(1, 0);
        let rest = x.narrow(1, 1, self.dim - 1).square().sum_dim_intlist(1, false, None) * 0.5;
        x1.pow_tensor_scalar(4) - x1.square() * 6.0 - &x1 * 0.5 + rest
    }
    fn grad(&self, x: &Tensor) -> Tensor {
        let x1 = x.narrow(1, 0, 1);
        let g1 = x1.pow_tensor_scalar(3) * 4.0 - &x1 * 12.0 - 0.5;
        Tensor::cat(&[g1, x.narrow(1, 1, self.dim - 1)], 1)
    }
    fn log_z(&self) -> f64 {
        self.x1.log_z + 0.5 * (self.dim - 1) as f64 * (2.0 * PI).ln()
    }
    fn mode_weight(&self) -> f64 {
        self.x1.mass(-4.0, 0.0)
    }
    fn entropy(&self) -> f64 {
        self.x1.entropy() + 0.5 * (self.dim - 1) as f64 * (1.0 + (2.0 * PI).ln())
    }
    fn sample(&self, n: i64) -> Tensor {
        let x1 = self.x1.sample(n).unsqueeze(1);
        Tensor::cat(&[x1, Tensor::randn([n, self.dim - 1], f64_opts())], 1).to_kind(Kind::Float)
    }
    fn x1_bin_probs(&self, lo: f64, hi: f64, bins: i64) -> Vec<f64> {
        let w = (hi - lo) / bins as f64;
        (0..bins).map(|i| self.x1.mass(lo + i as f64 * w, lo + (i + 1) as f64 * w)).collect()
    }
}

/// The double well tilted by a parameter c (a conditional target): u(x; c) = x1⁴ − 6 x1² − c x1 + ½|x_{2..D}|²,
/// so c = 0.5 is `doublewell` and u(x; c) = u_doublewell(x) + (0.5 − c) x1. Exact samples and log Z(c) come from
/// a fine grid per tilt on the tilt grid `TILTS`.
pub struct TiltedDoubleWell {
    dim: i64,
    grids: Vec<Grid1d>,
}

impl std::fmt::Debug for TiltedDoubleWell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TiltedDoubleWell(dim={}, tilts={:?})", self.dim, Self::tilts())
    }
}

impl TiltedDoubleWell {
    /// The tilts of the data: c = -1, -0.75, ..., 2 (13 values; 0.5 is the untilted `doublewell`).
    pub fn tilts() -> Vec<f64> {
        (0..13).map(|i| -1.0 + 0.25 * i as f64).collect()
    }

    pub fn new(dim: i64) -> Self {
        let grids = Self::tilts()
            .into_iter()
            .map(|c| Grid1d::new(-4.0, 4.0, 100_000, move |x: &Tensor| x.pow_tensor_scalar(4) - x.square() * 6.0 - x * c))
            .collect();
        TiltedDoubleWell { dim, grids }
    }

    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// u(x; c) per row, `c` [batch, 1] (or [batch]).
    pub fn energy(&self, x: &Tensor, c: &Tensor) -> Tensor {
        let x1 = x.select(1, 0);
        let rest = x.narrow(1, 1, self.dim - 1).square().sum_dim_intlist(1, false, None) * 0.5;
        x1.pow_tensor_scalar(4) - x1.square() * 6.0 - &x1 * c.reshape([-1]).to_kind(x.kind()) + rest
    }

    /// log Z(c) for the i-th tilt of `tilts()`.
    pub fn log_z(&self, i: usize) -> f64 {
        self.grids[i].log_z + 0.5 * (self.dim - 1) as f64 * (2.0 * PI).ln()
    }

    /// H(x | c) for the i-th tilt.
    pub fn entropy(&self, i: usize) -> f64 {
        self.grids[i].entropy() + 0.5 * (self.dim - 1) as f64 * (1.0 + (2.0 * PI).ln())
    }

    /// H(x | c) with c uniform over the tilt grid (the data's conditional entropy).
    pub fn conditional_entropy(&self) -> f64 {
        (0..self.grids.len()).map(|i| self.entropy(i)).sum::<f64>() / self.grids.len() as f64
    }

    /// P(x1 < 0 | c) for the i-th tilt.
    pub fn mode_weight(&self, i: usize) -> f64 {
        self.grids[i].mass(-4.0, 0.0)
    }

    /// `n` exact draws at the i-th tilt (torch's RNG, on the CPU).
    pub fn sample_at(&self, i: usize, n: i64) -> Tensor {
        let x1 = self.grids[i].sample(n).unsqueeze(1);
        Tensor::cat(&[x1, Tensor::randn([n, self.dim - 1], f64_opts())], 1).to_kind(Kind::Float)
    }

    /// `n` pairs: c uniform over the tilt grid, x an exact draw from exp(-u(x; c)) / Z(c). Returns (x, c [n, 1]).
    pub fn sample_pairs(&self, n: i64) -> (Tensor, Tensor) {
        let idx = Tensor::randint(self.grids.len() as i64, [n], (Kind::Int64, tch::Device::Cpu));
        let counts: Vec<i64> = Vec::try_from(idx.bincount(None::<Tensor>, self.grids.len() as i64)).expect("a 1-d i64 tensor");
        let tilts = Self::tilts();
        let (mut xs, mut cs) = (Vec::new(), Vec::new());
        for (i, &k) in counts.iter().enumerate().filter(|(_, &k)| k > 0) {
            xs.push(self.sample_at(i, k));
            cs.push(Tensor::full([k, 1], tilts[i], (Kind::Float, tch::Device::Cpu)));
        }
        let perm = Tensor::randperm(n, (Kind::Int64, tch::Device::Cpu));
        (Tensor::cat(&xs, 0).index_select(0, &perm), Tensor::cat(&cs, 0).index_select(0, &perm))
    }
}

/// The tilt term (0.5 − c) x1 that makes `doublewell` into u(x; c), per row; `c` [batch, 1] or [batch].
pub fn tilt_energy(x: &Tensor, c: &Tensor) -> Tensor {
    (-c.reshape([-1]).to_kind(x.kind()) + 0.5) * x.select(1, 0)
}

/// ∇_x of `tilt_energy`: (0.5 − c) on x1, 0 elsewhere.
pub fn tilt_grad(x: &Tensor, c: &Tensor) -> Tensor {
    let g1 = (-c.reshape([-1, 1]).to_kind(x.kind()) + 0.5).expand([x.size()[0], 1], false);
    let d = x.size()[1];
    if d == 1 {
        return g1.contiguous();
    }
    Tensor::cat(&[g1, x.narrow(1, 1, d - 1).zeros_like()], 1)
}

/// A 2D density tabulated on a fine grid over a box: normaliser, sampling and marginals by quadrature.
struct Grid2d {
    lo: f64,
    h: f64,
    n: i64,
    /// Unnormalised cell masses [n, n], index [i (x1), j (x2)].
    p: Tensor,
    log_z: f64,
}

impl Grid2d {
    fn new(half: f64, n: i64, energy: &dyn Energy) -> Self {
        let h = 2.0 * half / n as f64;
        let c = Tensor::arange(n, f64_opts()) * h + (-half + 0.5 * h);
        let xx = c.unsqueeze(1).expand([n, n], false);
        let yy = c.unsqueeze(0).expand([n, n], false);
        let pts = Tensor::stack(&[xx.reshape([-1]), yy.reshape([-1])], 1);
        let log_p = -energy.energy(&pts).view([n, n]);
        let shift = log_p.max().double_value(&[]);
        let p = (log_p - shift).exp();
        let log_z = (p.sum(Kind::Double).double_value(&[]) * h * h).ln() + shift;
        Grid2d { lo: -half, h, n, p, log_z }
    }

    fn sample(&self, n: i64) -> Tensor {
        let flat = self.p.reshape([-1]).to_kind(Kind::Float).multinomial(n, true);
        let (i, j) = (flat.divide_scalar_mode(self.n, "floor"), flat.remainder(self.n));
        let x1 = (i.to_kind(Kind::Double) + Tensor::rand([n], f64_opts())) * self.h + self.lo;
        let x2 = (j.to_kind(Kind::Double) + Tensor::rand([n], f64_opts())) * self.h + self.lo;
        Tensor::stack(&[x1, x2], 1).to_kind(Kind::Float)
    }

    fn entropy(&self) -> f64 {
        let total = self.p.sum(Kind::Double).double_value(&[]);
        let q = &self.p / total;
        let dens = &q / (self.h * self.h);
        -(q * dens.clamp_min(1e-300).log()).sum(Kind::Double).double_value(&[])
    }

    fn x1_marginal(&self) -> Grid1d {
        let p = self.p.sum_dim_intlist(1, false, Kind::Double);
        Grid1d { lo: self.lo, h: self.h, log_z: 0.0, p }
    }
}

/// A mixture of isotropic Gaussians in 2D, energy u = -log Σ_k w_k N(x; μ_k, σ_k² I) (normalised: log Z = 0).
pub struct GaussianMixture {
    weights: Vec<f64>,
    means: Vec<[f64; 2]>,
    stds: Vec<f64>,
    grid: Option<Grid2d>,
}

impl std::fmt::Debug for GaussianMixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GaussianMixture({} modes)", self.weights.len())
    }
}

impl GaussianMixture {
    pub fn new(weights: Vec<f64>, means: Vec<[f64; 2]>, stds: Vec<f64>) -> Self {
        let mut g = GaussianMixture { weights, means, stds, grid: None };
        g.grid = Some(Grid2d::new(8.0, 1000, &g));
        g
    }

    /// Mixture weights, means and standard deviations.
    pub fn components(&self) -> (&[f64], &[[f64; 2]], &[f64]) {
        (&self.weights, &self.means, &self.stds)
    }

    /// Four separated modes of unequal weight: the `gmm` target.
    pub fn four_modes() -> Self {
        GaussianMixture::new(vec![0.4, 0.3, 0.2, 0.1], vec![[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]], vec![0.5; 4])
    }

    /// log w_k + log N(x; μ_k, σ_k²), shape [batch, K].
    fn component_log_probs(&self, x: &Tensor) -> Tensor {
        let cols: Vec<Tensor> = (0..self.weights.len())
            .map(|k| {
                let mu = Tensor::from_slice(&self.means[k]).to_kind(x.kind());
                let s2 = self.stds[k] * self.stds[k];
                (x - mu).square().sum_dim_intlist(1, false, None) * (-0.5 / s2) + (self.weights[k].ln() - (2.0 * PI * s2).ln())
            })
            .collect();
        Tensor::stack(&cols, 1)
    }
}

/// The `gmm` data set's law: p = exp(-u - log Z); its modes are the components, a point belonging to the nearest
/// centre within 3 of the widest standard deviations.
impl KnownLaw for GaussianMixture {
    fn log_density(&self, x: &Tensor) -> Option<Tensor> {
        let x = x.to_kind(Kind::Double).to_device(Device::Cpu);
        Some(-self.energy(&x) - self.log_z())
    }
    fn modes(&self, x: &Tensor) -> Option<(Tensor, Vec<f64>)> {
        let widest = self.stds.iter().cloned().fold(0.0, f64::max);
        Some((nearest_centre(x, &self.means, 3.0 * widest), self.weights.clone()))
    }
}

impl Energy for GaussianMixture {
    fn dim(&self) -> i64 {
        2
    }
    fn energy(&self, x: &Tensor) -> Tensor {
        -self.component_log_probs(x).logsumexp([1], false)
    }
    /// ∇u = Σ_k r_k(x) (x - μ_k)/σ_k² with responsibilities r_k.
    fn grad(&self, x: &Tensor) -> Tensor {
        let r = self.component_log_probs(x).softmax(1, None);
        let terms: Vec<Tensor> = (0..self.weights.len())
            .map(|k| {
                let mu = Tensor::from_slice(&self.means[k]).to_kind(x.kind());
                (x - mu) * r.narrow(1, k as i64, 1) / (self.stds[k] * self.stds[k])
            })
            .collect();
        Tensor::stack(&terms, 0).sum_dim_intlist(0, false, None)
    }
    fn log_z(&self) -> f64 {
        self.grid.as_ref().map_or(0.0, |g| g.log_z)
    }
    fn mode_weight(&self) -> f64 {
        self.grid.as_ref().map_or(0.0, |g| g.x1_marginal().mass(-8.0, 0.0))
    }
    fn entropy(&self) -> f64 {
        self.grid.as_ref().map_or(f64::NAN, |g| g.entropy())
    }
    fn sample(&self, n: i64) -> Tensor {
        let w = Tensor::from_slice(&self.weights);
        let k = w.multinomial(n, true);
        let means = Tensor::from_slice(&self.means.concat()).view([-1, 2]).index_select(0, &k);
        let stds = Tensor::from_slice(&self.stds).index_select(0, &k).unsqueeze(1);
        (means + Tensor::randn([n, 2], f64_opts()) * stds).to_kind(Kind::Float)
    }
    fn x1_bin_probs(&self, lo: f64, hi: f64, bins: i64) -> Vec<f64> {
        let m = self.grid.as_ref().expect("grid built").x1_marginal();
        let w = (hi - lo) / bins as f64;
        (0..bins).map(|i| m.mass(lo + i as f64 * w, lo + (i + 1) as f64 * w)).collect()
    }
}

/// Concentric rings with a Gaussian radial profile, like the `rings` toy set:
/// p(x) = (1/K) Σ_k N(|x|; r_k, σ²) / (2π r_k) (normalised up to the mass at r < 0), radii 3, 2.25, 1.5, 0.75, σ = 0.08.
pub struct Rings {
    radii: Vec<f64>,
    sigma: f64,
    grid: Option<Grid2d>,
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rings({:?}, sigma={})", self.radii, self.sigma)
    }
}

impl Rings {
    pub fn new(radii: Vec<f64>, sigma: f64) -> Self {
        let mut r = Rings { radii, sigma, grid: None };
        r.grid = Some(Grid2d::new(5.0, 1000, &r));
        r
    }

    pub fn ffjord() -> Self {
        Rings::new(vec![3.0, 2.25, 1.5, 0.75], 0.08)
    }

    /// Per-ring log terms, shape [batch, K], and |x|.
    fn terms(&self, x: &Tensor) -> (Tensor, Tensor) {
        let r = (x.square().sum_dim_intlist(1, false, None) + 1e-12).sqrt();
        let s2 = self.sigma * self.sigma;
        let norm = (self.radii.len() as f64).ln() + 0.5 * (2.0 * PI * s2).ln();
        let cols: Vec<Tensor> =
            self.radii.iter().map(|&rk| (&r - rk).square() * (-0.5 / s2) - (2.0 * PI * rk).ln() - norm).collect();
        (Tensor::stack(&cols, 1), r)
    }
}

/// An SNF target; the `rings` data set's own law (uniform angle + isotropic noise) is `data::toy::Toy::Rings`.
impl KnownLaw for Rings {}

impl Energy for Rings {
    fn dim(&self) -> i64 {
        2
    }
    fn energy(&self, x: &Tensor) -> Tensor {
        -self.terms(x).0.logsumexp([1], false)
    }
    /// ∇u = Σ_k r_k(x) (|x| - r_k)/σ² · x/|x|.
    fn grad(&self, x: &Tensor) -> Tensor {
        let (t, r) = self.terms(x);
        let resp = t.softmax(1, None);
        let radii = Tensor::from_slice(&self.radii).to_kind(x.kind());
        let d = ((r.unsqueeze(1) - radii) * resp).sum_dim_intlist(1, false, None) / (self.sigma * self.sigma);
        x * (d / r).unsqueeze(1)
    }
    fn log_z(&self) -> f64 {
        self.grid.as_ref().map_or(0.0, |g| g.log_z)
    }
    fn mode_weight(&self) -> f64 {
        self.grid.as_ref().map_or(0.0, |g| g.x1_marginal().mass(-5.0, 0.0))
    }
    fn entropy(&self) -> f64 {
        self.grid.as_ref().map_or(f64::NAN, |g| g.entropy())
    }
    fn sample(&self, n: i64) -> Tensor {
        self.grid.as_ref().expect("grid built").sample(n)
    }
    fn x1_bin_probs(&self, lo: f64, hi: f64, bins: i64) -> Vec<f64> {
        let m = self.grid.as_ref().expect("grid built").x1_marginal();
        let w = (hi - lo) / bins as f64;
        (0..bins).map(|i| m.mass(lo + i as f64 * w, lo + (i + 1) as f64 * w)).collect()
    }
}

/// N(μ, s² I) as an energy u = |x - μ|²/(2s²): log Z = (D/2) log(2π s²) in closed form. For tests of estimators.
#[derive(Debug)]
pub struct Gaussian {
    pub mean: Vec<f64>,
    pub std: f64,
}

impl KnownLaw for Gaussian {}

impl Energy for Gaussian {
    fn dim(&self) -> i64 {
        self.mean.len() as i64
    }
    fn energy(&self, x: &Tensor) -> Tensor {
        (x - Tensor::from_slice(&self.mean).to_kind(x.kind())).square().sum_dim_intlist(1, false, None) / (2.0 * self.std * self.std)
    }
    fn grad(&self, x: &Tensor) -> Tensor {
        (x - Tensor::from_slice(&self.mean).to_kind(x.kind())) / (self.std * self.std)
    }
    fn log_z(&self) -> f64 {
        0.5 * self.mean.len() as f64 * (2.0 * PI * self.std * self.std).ln()
    }
    fn entropy(&self) -> f64 {
        0.5 * self.mean.len() as f64 * (1.0 + (2.0 * PI * self.std * self.std).ln())
    }
    fn mode_weight(&self) -> f64 {
        0.5 * libm_erfc(self.mean[0] / (self.std * 2f64.sqrt()))
    }
    fn sample(&self, n: i64) -> Tensor {
        let mu = Tensor::from_slice(&self.mean);
        (Tensor::randn([n, self.dim()], f64_opts()) * self.std + mu).to_kind(Kind::Float)
    }
    fn x1_bin_probs(&self, lo: f64, hi: f64, bins: i64) -> Vec<f64> {
        let cdf = |x: f64| 0.5 * libm_erfc(-(x - self.mean[0]) / (self.std * 2f64.sqrt()));
        let w = (hi - lo) / bins as f64;
        (0..bins).map(|i| cdf(lo + (i + 1) as f64 * w) - cdf(lo + i as f64 * w)).collect()
    }
}

/// erfc via torch (double precision).
fn libm_erfc(x: f64) -> f64 {
    Tensor::from(x).erfc().double_value(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn energies() -> Vec<Box<dyn Energy>> {
        vec![
            Box::new(DoubleWell::new(2)),
            Box::new(DoubleWell::new(4)),
            Box::new(GaussianMixture::four_modes()),
            Box::new(Rings::ffjord()),
            Box::new(Gaussian { mean: vec![0.5, -1.0], std: 0.7 }),
        ]
    }

    #[test]
    fn analytic_gradients_match_autograd() {
        tch::manual_seed(0);
        for e in energies() {
            let x = (Tensor::randn([16, e.dim()], f64_opts()) * 2.0).set_requires_grad(true);
            let g = Tensor::run_backward(&[e.energy(&x).sum(None)], &[&x], false, false).remove(0);
            let err = (g - e.grad(&x.detach())).abs().max().double_value(&[]);
            assert!(err < 1e-8, "{e:?}: analytic gradient off by {err}");
        }
    }

    #[test]
    fn the_tilted_double_well_is_the_double_well_plus_its_tilt_with_exact_samples_per_tilt() {
        tch::manual_seed(3);
        let t = TiltedDoubleWell::new(3);
        let dw = DoubleWell::new(3);
        let x = Tensor::randn([64, 3], f64_opts()) * 2.0;
        let c = Tensor::rand([64, 1], f64_opts()) * 3.0 - 1.0;
        let split = dw.energy(&x) + tilt_energy(&x, &c);
        assert!((t.energy(&x, &c) - split).abs().max().double_value(&[]) < 1e-9, "u(x; c) = u_dw(x) + (0.5 - c) x1");
        let xg = x.set_requires_grad(true);
        let g = Tensor::run_backward(&[tilt_energy(&xg, &c).sum(None)], &[&xg], false, false).remove(0);
        assert!((g - tilt_grad(&x, &c)).abs().max().double_value(&[]) < 1e-12, "tilt gradient vs autograd");
        // c = 0.5 (index 6) is the double well itself: the same normaliser and mode weight from a coarser grid.
        assert_eq!(TiltedDoubleWell::tilts()[6], 0.5);
        assert!((t.log_z(6) - dw.log_z()).abs() < 1e-6 && (t.mode_weight(6) - dw.mode_weight()).abs() < 1e-4);
        // A tilt towards -x1 (c = -1) moves the mass to the left well; exact draws agree with the grid's weight.
        for i in [0usize, 12] {
            let x1 = t.sample_at(i, 20_000).select(1, 0);
            let left = x1.lt(0.0).to_kind(Kind::Double).mean(None).double_value(&[]);
            assert!((left - t.mode_weight(i)).abs() < 0.015, "tilt {i}: {left} vs {}", t.mode_weight(i));
        }
        assert!(t.mode_weight(0) > 0.9 && t.mode_weight(12) < 0.01);
        let (xs, cs) = t.sample_pairs(500);
        assert_eq!((xs.size(), cs.size()), (vec![500, 3], vec![500, 1]));
        let distinct = cs.unique_dim(0, true, false, false).0.size()[0];
        assert!(distinct > 8, "{distinct} of the 13 tilts drawn");
    }

    #[test]
    fn normalisers_and_mode_weights_match_the_references() {
        let dw = DoubleWell::new(2);
        // REFERENCES.md: log Z ≈ 10.29 and P(x1 < 0) ≈ 0.156 for the 2D double well.
        assert!((dw.log_z() - 10.29).abs() < 0.01, "log Z {}", dw.log_z());
        assert!((dw.mode_weight() - 0.156).abs() < 0.002, "P(x1<0) {}", dw.mode_weight());
        let g = Gaussian { mean: vec![0.0, 0.0], std: 1.0 };
        assert!((g.log_z() - (2.0 * PI).ln()).abs() < 1e-12);
        // A normalised mixture has log Z = 0 and mode weight = the weight of its left modes.
        let gmm = GaussianMixture::four_modes();
        assert!(gmm.log_z().abs() < 1e-6, "{}", gmm.log_z());
        assert!((gmm.mode_weight() - 0.5).abs() < 1e-3);
        assert!(Rings::ffjord().log_z().abs() < 0.01, "rings are normalised up to grid error");
    }

    #[test]
    fn entropy_by_quadrature_matches_monte_carlo() {
        tch::manual_seed(3);
        for e in energies() {
            let x = e.sample(100_000).to_kind(Kind::Double);
            let u = e.energy(&x);
            let mc = u.mean(None).double_value(&[]) + e.log_z();
            let se = u.std(true).double_value(&[]) / (100_000f64).sqrt();
            assert!((mc - e.entropy()).abs() < 4.0 * se + 2e-3, "{e:?}: H quadrature {} vs MC {mc} ± {se}", e.entropy());
        }
    }

    #[test]
    fn reference_samples_follow_the_target() {
        tch::manual_seed(1);
        let n = 200_000;
        for e in energies() {
            let x = e.sample(n).to_kind(Kind::Double);
            let frac = x.select(1, 0).lt(0.0).to_kind(Kind::Double).mean(None).double_value(&[]);
            let p = e.mode_weight();
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((frac - p).abs() < 4.0 * se + 1e-3, "{e:?}: P(x1<0) sampled {frac}, exact {p}");
            let bins = e.x1_bin_probs(-2.25, 2.25, 30);
            let total: f64 = bins.iter().sum();
            let inside = x.select(1, 0).gt(-2.25).logical_and(&x.select(1, 0).lt(2.25)).to_kind(Kind::Double).mean(None).double_value(&[]);
            assert!((total - inside).abs() < 0.01, "{e:?}: bin mass {total} vs sampled {inside}");
        }
    }
}
