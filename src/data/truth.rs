//! The true laws of the 2D sets whose density is known in closed form (checkerboard, rings, 8 gaussians) and of the
//! `gmm` energy: log-density, entropy, highest-density regions and modes. What the expressivity measures compare a
//! model against: the NLL gap to the entropy, the mass a model puts outside the data's support (or its 99%
//! highest-density region where the support is all of R²), and which modes its samples cover.
use std::collections::HashMap;
use std::f64::consts::PI;
use std::sync::{Mutex, OnceLock};
use tch::{Device, Kind, Tensor};

/// Half-width of the box the quadratures run over: every known set keeps all but ~1e-12 of its mass inside.
const HALF: f64 = 6.0;
/// Cells per axis of the quadrature grid.
const CELLS: i64 = 1200;

use super::toy::{EIGHT_DIRECTIONS, EIGHT_RADIUS, EIGHT_SCALE, EIGHT_STD, RING_NOISE, RING_RADII, RING_SCALE};
use crate::dist::energy::{Energy, GaussianMixture};

thread_local! {
    /// The `gmm` energy (its quadrature grid is built once per thread; tensors are not Sync).
    static GMM: GaussianMixture = GaussianMixture::four_modes();
}

fn eight_centres() -> Vec<[f64; 2]> {
    EIGHT_DIRECTIONS.iter().map(|d| [EIGHT_RADIUS * d[0] / EIGHT_SCALE, EIGHT_RADIUS * d[1] / EIGHT_SCALE]).collect()
}

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

/// log p(x) of the named set in nats, f64, or None where the law is not known in closed form.
/// Checkerboard: 1/32 on its eight 2x2 squares, -inf elsewhere.
pub fn log_density(name: &str, x: &Tensor) -> Option<Tensor> {
    let x = x.to_kind(Kind::Double).to_device(Device::Cpu);
    match name {
        "checkerboard" => {
            let inside = super::toy::in_support("checkerboard", &x)?;
            Some(Tensor::full([x.size()[0]], -(32f64.ln()), (Kind::Double, Device::Cpu)).where_self(&inside, &Tensor::from(f64::NEG_INFINITY)))
        }
        "rings" => Some(rings_log_density(&x)),
        "8gaussians" => Some(gaussian_terms(&x, &eight_centres(), &[1.0 / 8.0; 8], EIGHT_STD / EIGHT_SCALE).logsumexp([1], false)),
        "gmm" => Some(GMM.with(|g| -g.energy(&x) - g.log_z())),
        _ => None,
    }
}

/// Cell masses p(cell)·h² on the quadrature grid (not renormalised), for sets with a known density.
fn grid_masses(name: &str) -> Option<Tensor> {
    let h = 2.0 * HALF / CELLS as f64;
    let c = Tensor::arange(CELLS, (Kind::Double, Device::Cpu)) * h + (-HALF + 0.5 * h);
    let xx = c.unsqueeze(1).expand([CELLS, CELLS], false).reshape([-1]);
    let yy = c.unsqueeze(0).expand([CELLS, CELLS], false).reshape([-1]);
    let lp = log_density(name, &Tensor::stack(&[xx, yy], 1))?;
    Some(lp.exp() * (h * h))
}

/// Quantities computed once per process per set (the grids cost ~0.3 s).
#[derive(Clone, Copy, Debug)]
struct Tabulated {
    entropy: f64,
    /// log-density level whose super-level set holds 99% of the mass.
    hdr99: f64,
}

fn tabulated(name: &str) -> Option<Tabulated> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Tabulated>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(t) = cache.lock().expect("cache lock").get(name) {
        return *t;
    }
    let t = grid_masses(name).map(|m| {
        let h2 = (2.0 * HALF / CELLS as f64).powi(2);
        let total = m.sum(Kind::Double).double_value(&[]);
        let q = &m / total;
        let log_dens = (&q / h2).clamp_min(1e-300).log();
        let entropy = -(&q * &log_dens).sum(Kind::Double).double_value(&[]);
        let (sorted, order) = q.sort(0, true);
        let cum = sorted.cumsum(0, Kind::Double);
        let k = cum.lt(0.99).sum(Kind::Int64).int64_value(&[]).min(q.size()[0] - 1);
        let hdr99 = log_dens.index_select(0, &order.narrow(0, k, 1)).double_value(&[0]);
        Tabulated { entropy, hdr99 }
    });
    cache.lock().expect("cache lock").insert(name.to_string(), t);
    t
}

/// The differential entropy of the named set (nats): ln 32 for the checkerboard, by quadrature on a 1200² grid over
/// [-6, 6]² for rings, 8 gaussians and gmm.
pub fn true_entropy(name: &str) -> Option<f64> {
    match name {
        "checkerboard" => Some(32f64.ln()),
        _ => tabulated(name).map(|t| t.entropy),
    }
}

/// Whether each row lies in the data's support, or where the support is all of R², in its 99% highest-density region
/// {x : p(x) ≥ c} with c set so the true law puts 99% of its mass there. Returns the mask and the data's own
/// fraction outside (0 for a sharp support, 0.01 for the region).
pub fn in_support(name: &str, x: &Tensor) -> Option<(Tensor, f64)> {
    if let Some(inside) = super::toy::in_support(name, x) {
        return Some((inside, 0.0));
    }
    let t = tabulated(name)?;
    Some((log_density(name, x)?.ge(t.hdr99), 0.01))
}

/// The modes of a multimodal set: (assignment of each row to a mode, -1 for none; the true mode weights).
/// 8 gaussians and gmm: the nearest centre within 3 standard deviations; rings: the ring whose radius is within
/// 3σ of |x|.
pub fn assign_modes(name: &str, x: &Tensor) -> Option<(Tensor, Vec<f64>)> {
    let x = x.to_kind(Kind::Double).to_device(Device::Cpu);
    let nearest = |centres: &[[f64; 2]], radius: f64| {
        let mu = Tensor::from_slice(&centres.concat()).view([-1, 2]);
        let d = (x.unsqueeze(1) - mu.unsqueeze(0)).square().sum_dim_intlist(2, false, Kind::Double).sqrt();
        let (dmin, k) = d.min_dim(1, false);
        k.where_self(&dmin.le(radius), &Tensor::from(-1i64))
    };
    match name {
        "8gaussians" => Some((nearest(&eight_centres(), 3.0 * EIGHT_STD / EIGHT_SCALE), vec![1.0 / 8.0; 8])),
        "gmm" => GMM.with(|g| {
            let (weights, means, stds) = g.components();
            let widest = stds.iter().cloned().fold(0.0, f64::max);
            Some((nearest(means, 3.0 * widest), weights.to_vec()))
        }),
        "rings" => {
            let rho = x.square().sum_dim_intlist(1, false, Kind::Double).sqrt().unsqueeze(1);
            let d = (rho - Tensor::from_slice(&ring_radii()).unsqueeze(0)).abs();
            let (dmin, k) = d.min_dim(1, false);
            Some((k.where_self(&dmin.le(3.0 * RING_NOISE), &Tensor::from(-1i64)), vec![0.25; 4]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid_total(name: &str) -> f64 {
        grid_masses(name).unwrap().sum(Kind::Double).double_value(&[])
    }

    #[test]
    fn known_densities_integrate_to_one() {
        for name in ["rings", "8gaussians", "gmm"] {
            let total = grid_total(name);
            assert!((total - 1.0).abs() < 1e-3, "{name}: mass {total}");
        }
        assert!(log_density("moons", &Tensor::zeros([1, 2], (Kind::Double, Device::Cpu))).is_none());
    }

    /// The entropy by quadrature against -mean log p over the generator's own samples: checks the closed-form
    /// density against the sampler it describes.
    #[test]
    fn entropy_by_quadrature_matches_the_generators() {
        tch::manual_seed(11);
        for name in ["rings", "8gaussians", "checkerboard"] {
            let x = super::super::toy::generate(name, 200_000).unwrap();
            let nll = -log_density(name, &x).unwrap();
            let (mc, se) = (nll.mean(Kind::Double).double_value(&[]), nll.std(true).double_value(&[]) / (200_000f64).sqrt());
            let h = true_entropy(name).unwrap();
            assert!((mc - h).abs() < 4.0 * se + 2e-3, "{name}: quadrature {h} vs Monte Carlo {mc} ± {se}");
        }
    }

    #[test]
    fn the_data_sits_in_its_region_and_modes() {
        tch::manual_seed(12);
        for name in ["rings", "8gaussians", "checkerboard"] {
            let x = super::super::toy::generate(name, 50_000).unwrap();
            let (inside, expected_out) = in_support(name, &x).unwrap();
            let out = 1.0 - inside.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
            assert!((out - expected_out).abs() < 0.003, "{name}: {out} outside, expected {expected_out}");
            // Uniform noise on the box falls mostly outside.
            let u = Tensor::rand([50_000, 2], (Kind::Double, Device::Cpu)) * 8.0 - 4.0;
            let (inside_u, _) = in_support(name, &u).unwrap();
            assert!(inside_u.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]) < 0.6, "{name}");
        }
        for name in ["rings", "8gaussians"] {
            let x = super::super::toy::generate(name, 40_000).unwrap();
            let (k, w) = assign_modes(name, &x).unwrap();
            let counts = Vec::<i64>::try_from((k.clamp_min(-1) + 1).bincount::<Tensor>(None, w.len() as i64 + 1)).unwrap();
            assert!((counts[0] as f64) < 0.015 * 40_000.0, "{name}: {} unassigned", counts[0]);
            for (c, wk) in counts[1..].iter().zip(&w) {
                assert!((*c as f64 / 40_000.0 - wk).abs() < 0.01, "{name}: {counts:?}");
            }
        }
    }
}
