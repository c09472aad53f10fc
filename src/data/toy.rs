//! Seeded 2D toy sets following FFJORD's `toy_data.py` definitions (see docs/ARCHITECTURE.md for the two places we
//! draw angles at random where sklearn uses an even grid).
//!
//! Each set is a `Toy`: its generator and, where known in closed form, its law (`KnownLaw`: density, sharp support,
//! modes) live together here.
use crate::dist::law::{nearest_centre, KnownLaw};
use anyhow::{bail, Result};
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

/// A 2D toy set.
///
/// ```
/// use relaxflow::data::toy::Toy;
/// use relaxflow::dist::law::KnownLaw;
///
/// tch::manual_seed(0);
/// let x = Toy::Checkerboard.generate(1000);
/// assert_eq!(x.size(), vec![1000, 2]);
/// // Every point lies on the eight squares, where the density is 1/32.
/// assert!(Toy::Checkerboard.sharp_support(&x).unwrap().all().int64_value(&[]) == 1);
/// assert_eq!(Toy::from_name("moons"), Some(Toy::Moons));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toy {
    Moons,
    Circles,
    EightGaussians,
    Checkerboard,
    Rings,
    Pinwheel,
    TwoSpirals,
    Swissroll,
    Corners,
}

impl Toy {
    /// Every toy set.
    pub const ALL: [Toy; 9] =
        [Toy::Moons, Toy::Circles, Toy::EightGaussians, Toy::Checkerboard, Toy::Rings, Toy::Pinwheel, Toy::TwoSpirals, Toy::Swissroll, Toy::Corners];

    /// The set's name in `data.name`.
    pub fn name(self) -> &'static str {
        match self {
            Toy::Moons => "moons",
            Toy::Circles => "circles",
            Toy::EightGaussians => "8gaussians",
            Toy::Checkerboard => "checkerboard",
            Toy::Rings => "rings",
            Toy::Pinwheel => "pinwheel",
            Toy::TwoSpirals => "2spirals",
            Toy::Swissroll => "swissroll",
            Toy::Corners => "corners",
        }
    }

    /// The set called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Toy> {
        Toy::ALL.into_iter().find(|t| t.name() == name)
    }

    /// `n` points as a [n, 2] float tensor, drawn from torch's global RNG (seed it first).
    pub fn generate(self, n: i64) -> Tensor {
        let x = match self {
            Toy::Moons => moons(n),
            Toy::Circles => circles(n),
            Toy::EightGaussians => eight_gaussians(n),
            Toy::Checkerboard => checkerboard(n),
            Toy::Rings => rings(n),
            Toy::Pinwheel => pinwheel(n),
            Toy::TwoSpirals => two_spirals(n),
            Toy::Swissroll => swissroll(n),
            Toy::Corners => corners(n),
        };
        x.to_kind(Kind::Float)
    }
}

/// Names of every 2D generator.
pub fn names() -> Vec<&'static str> {
    Toy::ALL.iter().map(|t| t.name()).collect()
}

fn opts() -> (Kind, Device) {
    (Kind::Double, Device::Cpu)
}

fn rand(n: i64) -> Tensor {
    Tensor::rand([n], opts())
}

fn randn(n: i64) -> Tensor {
    Tensor::randn([n], opts())
}

fn shuffle(x: Tensor) -> Tensor {
    let n = x.size()[0];
    x.index_select(0, &Tensor::randperm(n, (Kind::Int64, Device::Cpu)))
}

fn stack(a: Tensor, b: Tensor) -> Tensor {
    Tensor::stack(&[a, b], 1)
}

/// `n` points of the named set as a [n, 2] float tensor, drawn from torch's global RNG (seed it first).
pub fn generate(name: &str, n: i64) -> Result<Tensor> {
    match Toy::from_name(name) {
        Some(toy) => Ok(toy.generate(n)),
        None => bail!("unknown 2D dataset `{name}`; known: {}", names().join(", ")),
    }
}

/// sklearn `make_moons(noise=0.1)`, then ·2 + (-1, -0.2).
fn moons(n: i64) -> Tensor {
    let n_out = n / 2;
    let n_in = n - n_out;
    let t_out = rand(n_out) * PI;
    let t_in = rand(n_in) * PI;
    let outer = stack(t_out.cos(), t_out.sin());
    let inner = stack(1.0 - t_in.cos(), 1.0 - t_in.sin() - 0.5);
    let x = Tensor::cat(&[outer, inner], 0) + Tensor::randn([n, 2], opts()) * 0.1;
    shuffle(x * 2.0 + Tensor::from_slice(&[-1.0f64, -0.2]))
}

/// sklearn `make_circles(factor=0.5, noise=0.08)` ·3.
fn circles(n: i64) -> Tensor {
    let n_out = n / 2;
    let t = rand(n) * (2.0 * PI);
    let radius = Tensor::cat(&[Tensor::ones([n_out], opts()), Tensor::full([n - n_out], 0.5, opts())], 0);
    let x = stack(t.cos() * &radius, t.sin() * &radius) + Tensor::randn([n, 2], opts()) * 0.08;
    shuffle(x * 3.0)
}

/// 8 gaussians: the unit directions of the centres, their radius, std and the final scale (FFJORD's /1.414).
pub const EIGHT_DIRECTIONS: [[f64; 2]; 8] = {
    let s = std::f64::consts::FRAC_1_SQRT_2;
    [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [s, s], [s, -s], [-s, s], [-s, -s]]
};
pub const EIGHT_RADIUS: f64 = 4.0;
pub const EIGHT_STD: f64 = 0.5;
pub const EIGHT_SCALE: f64 = 1.414;

/// Eight Gaussians (std 0.5) on a circle of radius 4, all divided by 1.414.
fn eight_gaussians(n: i64) -> Tensor {
    let centers = Tensor::from_slice(&EIGHT_DIRECTIONS.concat()).view([8, 2]) * EIGHT_RADIUS;
    let idx = Tensor::randint(8, [n], (Kind::Int64, Device::Cpu));
    (Tensor::randn([n, 2], opts()) * EIGHT_STD + centers.index_select(0, &idx)) / EIGHT_SCALE
}

/// x1 ~ U(-2,2); x2 ~ U(0,1) - 2·{0,1} + (floor(x1) mod 2); times 2: uniform on 8 squares, total area 32.
fn checkerboard(n: i64) -> Tensor {
    let x1 = rand(n) * 4.0 - 2.0;
    let x2 = rand(n) - Tensor::randint(2, [n], (Kind::Int64, Device::Cpu)).to_kind(Kind::Double) * 2.0;
    let x2 = x2 + x1.floor().remainder(2.0);
    stack(x1, x2) * 2.0
}

/// Four L-shaped corners of a square frame, symmetric under flipping either axis (a SurVAE abs toy): in the positive
/// quadrant an L with arms x = 2.5, y in [0.5, 2.5] and y = 2.5, x in [0.5, 2.5], plus N(0, 0.15²) noise, then each
/// coordinate's sign flipped with probability 1/2.
fn corners(n: i64) -> Tensor {
    let t = rand(n) * 2.0 + 0.5;
    let along_x = rand(n).lt(0.5);
    let edge = t.full_like(2.5);
    let a = t.where_self(&along_x, &edge);
    let b = edge.where_self(&along_x, &t);
    let pts = Tensor::stack(&[a, b], 1) + Tensor::randn([n, 2], opts()) * 0.15;
    let signs = Tensor::rand([n, 2], opts()).lt(0.5).to_kind(Kind::Double) * 2.0 - 1.0;
    pts * signs
}

/// Rings: radii before the scale, the scale, and the std of the isotropic noise.
pub const RING_RADII: [f64; 4] = [1.0, 0.75, 0.5, 0.25];
pub const RING_SCALE: f64 = 3.0;
pub const RING_NOISE: f64 = 0.08;

/// Four rings of radius 1, .75, .5, .25, ·3 (a quarter of the points each), plus N(0, 0.08²) noise.
fn rings(n: i64) -> Tensor {
    let n_small = n / 4;
    let sizes = [n - 3 * n_small, n_small, n_small, n_small];
    let parts: Vec<Tensor> = sizes
        .iter()
        .zip(RING_RADII)
        .map(|(&m, r)| {
            let t = rand(m) * (2.0 * PI);
            stack(t.cos(), t.sin()) * (RING_SCALE * r)
        })
        .collect();
    shuffle(Tensor::cat(&parts, 0)) + Tensor::randn([n, 2], opts()) * RING_NOISE
}

/// Five arms: radial std .3, tangential std .1, rate .25, times 2.
fn pinwheel(n: i64) -> Tensor {
    let classes = 5;
    let per = n / classes;
    let m = per * classes;
    let f0 = randn(m) * 0.3 + 1.0;
    let f1 = randn(m) * 0.1;
    let labels = Tensor::arange(classes, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(per, 0, None);
    let angles = labels.to_kind(Kind::Double) * (2.0 * PI / classes as f64) + f0.exp() * 0.25;
    let (c, s) = (angles.cos(), angles.sin());
    let x = stack(&f0 * &c + &f1 * &s, -&f0 * &s + &f1 * &c) * 2.0;
    let x = if m < n { Tensor::cat(&[x.shallow_clone(), x.narrow(0, 0, n - m)], 0) } else { x };
    shuffle(x)
}

/// Two interleaved spirals, /3, plus N(0, 0.1²) noise.
fn two_spirals(n: i64) -> Tensor {
    let half = n / 2;
    let t = rand(half).sqrt() * (540.0 * 2.0 * PI / 360.0);
    let d1x = -t.cos() * &t + rand(half) * 0.5;
    let d1y = t.sin() * &t + rand(half) * 0.5;
    let arm = stack(d1x, d1y);
    let x = Tensor::cat(&[arm.shallow_clone(), -arm], 0) / 3.0;
    let x = if 2 * half < n { Tensor::cat(&[x.shallow_clone(), x.narrow(0, 0, n - 2 * half)], 0) } else { x };
    shuffle(x.shallow_clone() + Tensor::randn_like(&x) * 0.1)
}

/// sklearn `make_swiss_roll(noise=1.0)`, coordinates (x, z) / 5.
fn swissroll(n: i64) -> Tensor {
    let t = (rand(n) * 2.0 + 1.0) * (1.5 * PI);
    let x = stack(t.cos() * &t, t.sin() * &t) + Tensor::randn([n, 2], opts());
    x / 5.0
}

/// Centres of the 8 gaussians after the final scale.
fn eight_centres() -> Vec<[f64; 2]> {
    EIGHT_DIRECTIONS.iter().map(|d| [EIGHT_RADIUS * d[0] / EIGHT_SCALE, EIGHT_RADIUS * d[1] / EIGHT_SCALE]).collect()
}

/// Radii of the rings after the scale.
fn ring_radii() -> Vec<f64> {
    RING_RADII.iter().map(|r| r * RING_SCALE).collect()
}

/// log N(x; μ_k, σ² I) + log w_k for isotropic 2D Gaussians, shape [n, K].
fn gaussian_terms(x: &Tensor, centres: &[[f64; 2]], weights: &[f64], sigma: f64) -> Tensor {
    let mu = Tensor::from_slice(&centres.concat()).view([-1, 2]);
    let w = Tensor::from_slice(weights).log();
    let d2 = (x.unsqueeze(1) - mu.unsqueeze(0)).square().sum_dim_intlist(2, false, Kind::Double);
    d2 * (-0.5 / (sigma * sigma)) + w.unsqueeze(0) - (2.0 * PI * sigma * sigma).ln()
}

/// log p(x) of the rings set: a point uniform on a circle of radius R plus N(0, σ² I) noise has density
/// (2πσ²)⁻¹ exp(-(ρ² + R²)/(2σ²)) I₀(ρR/σ²) at radius ρ (integrate the noise over the angle); equal-weight mixture.
/// I₀ through torch's exponentially scaled i0e, so large ρR/σ² does not overflow.
fn rings_log_density(x: &Tensor) -> Tensor {
    let radii = ring_radii();
    let rho = x.square().sum_dim_intlist(1, false, Kind::Double).sqrt().unsqueeze(1);
    let r = Tensor::from_slice(&radii).unsqueeze(0);
    let s2 = RING_NOISE * RING_NOISE;
    let z = &rho * &r / s2;
    let log_i0 = z.special_i0e().log() + &z;
    let terms = -(rho.square() + r.square()) / (2.0 * s2) + log_i0 - (2.0 * PI * s2).ln() - (radii.len() as f64).ln();
    terms.logsumexp([1], false)
}

/// The laws known in closed form: checkerboard (1/32 on its eight 2x2 squares, a sharp support), rings and
/// 8 gaussians (densities above; modes: the ring whose radius is within 3σ of |x|, the nearest centre within 3σ).
impl KnownLaw for Toy {
    fn log_density(&self, x: &Tensor) -> Option<Tensor> {
        let x = x.to_kind(Kind::Double).to_device(Device::Cpu);
        match self {
            Toy::Checkerboard => {
                let inside = self.sharp_support(&x)?;
                Some(Tensor::full([x.size()[0]], -(32f64.ln()), (Kind::Double, Device::Cpu)).where_self(&inside, &Tensor::from(f64::NEG_INFINITY)))
            }
            Toy::Rings => Some(rings_log_density(&x)),
            Toy::EightGaussians => Some(gaussian_terms(&x, &eight_centres(), &[1.0 / 8.0; 8], EIGHT_STD / EIGHT_SCALE).logsumexp([1], false)),
            _ => None,
        }
    }

    /// The checkerboard is uniform on area 32.
    fn closed_form_entropy(&self) -> Option<f64> {
        (*self == Toy::Checkerboard).then(|| 32f64.ln())
    }

    /// The checkerboard: u = x/2 in [-2, 2]² with floor(u1) + floor(u2) even.
    fn sharp_support(&self, x: &Tensor) -> Option<Tensor> {
        if *self != Toy::Checkerboard {
            return None;
        }
        let u = x.to_kind(Kind::Double) / 2.0;
        let (u1, u2) = (u.select(1, 0), u.select(1, 1));
        let inside = u1.abs().le(2.0).logical_and(&u2.abs().le(2.0));
        let parity = (u1.floor() + u2.floor()).remainder(2.0).eq(0.0);
        Some(inside.logical_and(&parity))
    }

    fn modes(&self, x: &Tensor) -> Option<(Tensor, Vec<f64>)> {
        let x = x.to_kind(Kind::Double).to_device(Device::Cpu);
        match self {
            Toy::EightGaussians => Some((nearest_centre(&x, &eight_centres(), 3.0 * EIGHT_STD / EIGHT_SCALE), vec![1.0 / 8.0; 8])),
            Toy::Rings => {
                let rho = x.square().sum_dim_intlist(1, false, Kind::Double).sqrt().unsqueeze(1);
                let d = (rho - Tensor::from_slice(&ring_radii()).unsqueeze(0)).abs();
                let (dmin, k) = d.min_dim(1, false);
                Some((k.where_self(&dmin.le(3.0 * RING_NOISE), &Tensor::from(-1i64)), vec![0.25; 4]))
            }
            _ => None,
        }
    }
}

/// Exchangeable vectors: `dim` i.i.d. coordinates from ½N(-2, 0.5²) + ½N(2, 0.5²), so the density is invariant
/// under permutations (2^dim modes); the sort surjection's test case.
pub fn exchangeable(n: i64, dim: i64) -> Tensor {
    let centre = Tensor::rand([n, dim], opts()).lt(0.5).to_kind(Kind::Double) * 4.0 - 2.0;
    (centre + Tensor::randn([n, dim], opts()) * 0.5).to_kind(Kind::Float)
}

/// Differential entropy of `exchangeable` data: dim times the 1D mixture's entropy, by quadrature on [-8, 8].
pub fn exchangeable_entropy(dim: i64) -> f64 {
    let (n, lo, hi) = (20_001, -8.0f64, 8.0f64);
    let h = (hi - lo) / (n - 1) as f64;
    let normal = |x: f64, m: f64| (-(x - m).powi(2) / (2.0 * 0.25)).exp() / (0.25 * 2.0 * std::f64::consts::PI).sqrt();
    let one: f64 = (0..n)
        .map(|i| {
            let x = lo + i as f64 * h;
            let p = 0.5 * normal(x, -2.0) + 0.5 * normal(x, 2.0);
            if p > 0.0 { -p * p.ln() * h } else { 0.0 }
        })
        .sum();
    dim as f64 * one
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_has_the_requested_shape_and_is_finite() {
        tch::manual_seed(0);
        for name in names() {
            let x = generate(name, 1001).unwrap();
            assert_eq!(x.size(), vec![1001, 2], "{name}");
            assert!(bool::try_from(x.isfinite().all()).unwrap(), "{name}");
            assert!(x.abs().max().double_value(&[]) < 6.0, "{name} leaves the plot window");
        }
    }

    #[test]
    fn same_seed_same_points_other_seed_other_points() {
        tch::manual_seed(5);
        let a = generate("moons", 100).unwrap();
        tch::manual_seed(5);
        let b = generate("moons", 100).unwrap();
        tch::manual_seed(6);
        let c = generate("moons", 100).unwrap();
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
    }

    #[test]
    fn checkerboard_is_uniform_on_its_eight_squares() {
        tch::manual_seed(1);
        let x = generate("checkerboard", 80_000).unwrap();
        let cell = (&x / 2.0).floor() + 2.0; // cells 0..3 in each axis
        let (i, j) = (cell.select(1, 0), cell.select(1, 1));
        let parity = (&i + &j).remainder(2.0);
        assert_eq!(parity.sum(Kind::Double).double_value(&[]), 0.0, "points only on even cells");
        let counts = (i * 4.0 + j).to_kind(Kind::Int64).bincount::<Tensor>(None, 16);
        let occupied: Vec<i64> = Vec::<i64>::try_from(counts).unwrap().into_iter().filter(|&c| c > 0).collect();
        assert_eq!(occupied.len(), 8);
        assert!(occupied.iter().all(|&c| (c as f64 - 10_000.0).abs() < 500.0), "{occupied:?}");
    }

    #[test]
    fn checkerboard_support_holds_the_data_and_half_of_the_square() {
        tch::manual_seed(3);
        let x = generate("checkerboard", 10_000).unwrap();
        let inside = Toy::Checkerboard.sharp_support(&x).unwrap().to_kind(Kind::Double).mean(None).double_value(&[]);
        assert_eq!(inside, 1.0);
        let u = Tensor::rand([100_000, 2], opts()) * 8.0 - 4.0;
        let frac = Toy::Checkerboard.sharp_support(&u).unwrap().to_kind(Kind::Double).mean(None).double_value(&[]);
        assert!((frac - 0.5).abs() < 0.01, "uniform points inside: {frac}");
        assert!(Toy::Moons.sharp_support(&x).is_none());
    }

    #[test]
    fn exchangeable_entropy_matches_monte_carlo() {
        // Two well-separated components: H ≈ ln 2 + H(N(0, 0.5²)) = ln 2 + ½ ln(2πe · 0.25) per coordinate.
        let per_dim = 2f64.ln() + 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * 0.25).ln();
        assert!((exchangeable_entropy(3) - 3.0 * per_dim).abs() < 1e-3);
        let x = exchangeable(10_000, 3);
        assert_eq!(x.size(), vec![10_000, 3]);
        let pos = x.gt(0.0).to_kind(Kind::Double).mean(None).double_value(&[]);
        assert!((pos - 0.5).abs() < 0.02);
    }

    #[test]
    fn rings_have_the_four_radii() {
        tch::manual_seed(2);
        let r = generate("rings", 40_000).unwrap().square().sum_dim_intlist(1, false, None).sqrt();
        for radius in [3.0, 2.25, 1.5, 0.75] {
            let near = (&r - radius).abs().lt(0.25).sum(Kind::Int64).int64_value(&[]);
            assert!((near - 10_000).abs() < 600, "radius {radius}: {near} points");
        }
    }

    #[test]
    fn every_toy_is_found_by_its_name() {
        for toy in Toy::ALL {
            assert_eq!(Toy::from_name(toy.name()), Some(toy));
        }
        assert_eq!(Toy::from_name("moon"), None);
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = generate("moon", 10).unwrap_err().to_string();
        assert!(err.contains("unknown 2D dataset `moon`") && err.contains("checkerboard"), "{err}");
    }
}
