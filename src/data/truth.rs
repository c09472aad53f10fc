//! The yardstick of the expressivity measures: a data set's known law (`dist::law::KnownLaw`: a toy set's closed
//! form, or an energy target's) with what follows from it by quadrature: the entropy and the 99% highest-density
//! region. What a model is compared against: the NLL gap to the entropy, the mass it puts outside the data's support
//! (or its 99% highest-density region where the support is all of R²), and which modes its samples cover.
use crate::dist::law::KnownLaw;
use std::cell::OnceCell;
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

/// Half-width of the box the quadratures run over: every known 2D law keeps all but ~1e-12 of its mass inside.
const HALF: f64 = 6.0;
/// Cells per axis of the quadrature grid.
const CELLS: i64 = 1200;

/// A 2D data set's true law with its quadratures, computed once (the grid costs ~0.3 s) when first asked.
pub struct Truth {
    law: Rc<dyn KnownLaw>,
    tabulated: OnceCell<Option<Tabulated>>,
}

impl std::fmt::Debug for Truth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Truth")
    }
}

/// What the quadrature gives.
#[derive(Clone, Copy, Debug)]
struct Tabulated {
    entropy: f64,
    /// log-density level whose super-level set holds 99% of the mass.
    hdr99: f64,
}

impl Truth {
    pub fn new(law: Rc<dyn KnownLaw>) -> Self {
        Truth { law, tabulated: OnceCell::new() }
    }

    /// log p(x) in nats (f64), where the density is known.
    pub fn log_density(&self, x: &Tensor) -> Option<Tensor> {
        self.law.log_density(&x.to_kind(Kind::Double).to_device(Device::Cpu))
    }

    /// The differential entropy (nats): the law's closed form (ln 32 for the checkerboard), else by quadrature on a
    /// 1200² grid over [-6, 6]².
    pub fn entropy(&self) -> Option<f64> {
        self.law.closed_form_entropy().or_else(|| self.tabulated().map(|t| t.entropy))
    }

    /// Whether each row lies in the data's support, or where the support is all of R², in its 99% highest-density
    /// region {x : p(x) ≥ c} with c set so the true law puts 99% of its mass there. Returns the mask and the data's
    /// own fraction outside (0 for a sharp support, 0.01 for the region).
    pub fn in_support(&self, x: &Tensor) -> Option<(Tensor, f64)> {
        if let Some(inside) = self.law.sharp_support(x) {
            return Some((inside, 0.0));
        }
        let t = self.tabulated()?;
        Some((self.log_density(x)?.ge(t.hdr99), 0.01))
    }

    /// The modes of a multimodal law: (assignment of each row to a mode, -1 for none; the true mode weights).
    pub fn assign_modes(&self, x: &Tensor) -> Option<(Tensor, Vec<f64>)> {
        self.law.modes(&x.to_kind(Kind::Double).to_device(Device::Cpu))
    }

    fn tabulated(&self) -> Option<Tabulated> {
        *self.tabulated.get_or_init(|| tabulate(&*self.law))
    }
}

/// Cell masses p(cell)·h² on the quadrature grid (not renormalised), for laws with a known density.
fn grid_masses(law: &dyn KnownLaw) -> Option<Tensor> {
    let h = 2.0 * HALF / CELLS as f64;
    let c = Tensor::arange(CELLS, (Kind::Double, Device::Cpu)) * h + (-HALF + 0.5 * h);
    let xx = c.unsqueeze(1).expand([CELLS, CELLS], false).reshape([-1]);
    let yy = c.unsqueeze(0).expand([CELLS, CELLS], false).reshape([-1]);
    let lp = law.log_density(&Tensor::stack(&[xx, yy], 1))?;
    Some(lp.exp() * (h * h))
}

/// Entropy and 99% level of a law with a known density.
fn tabulate(law: &dyn KnownLaw) -> Option<Tabulated> {
    let m = grid_masses(law)?;
    let h2 = (2.0 * HALF / CELLS as f64).powi(2);
    let total = m.sum(Kind::Double).double_value(&[]);
    let q = &m / total;
    let log_dens = (&q / h2).clamp_min(1e-300).log();
    let (sorted, order) = q.sort(0, true);
    let cum = sorted.cumsum(0, Kind::Double);
    let k = cum.lt(0.99).sum(Kind::Int64).int64_value(&[]).min(q.size()[0] - 1);
    let hdr99 = log_dens.index_select(0, &order.narrow(0, k, 1)).double_value(&[0]);
    let entropy = -(&q * &log_dens).sum(Kind::Double).double_value(&[]);
    Some(Tabulated { entropy, hdr99 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::Toy;
    use crate::dist::energy::GaussianMixture;

    fn toy(t: Toy) -> Truth {
        Truth::new(Rc::new(t))
    }

    fn laws() -> Vec<(&'static str, Truth)> {
        vec![
            ("rings", toy(Toy::Rings)),
            ("8gaussians", toy(Toy::EightGaussians)),
            ("checkerboard", toy(Toy::Checkerboard)),
            ("gmm", Truth::new(Rc::new(GaussianMixture::four_modes()))),
        ]
    }

    #[test]
    fn known_densities_integrate_to_one() {
        for (name, truth) in laws() {
            let total = grid_masses(&*truth.law).unwrap().sum(Kind::Double).double_value(&[]);
            assert!((total - 1.0).abs() < 1e-3, "{name}: mass {total}");
        }
        assert!(toy(Toy::Moons).log_density(&Tensor::zeros([1, 2], (Kind::Double, Device::Cpu))).is_none());
        assert!(toy(Toy::Moons).entropy().is_none());
        assert!((toy(Toy::Checkerboard).entropy().unwrap() - 32f64.ln()).abs() < 1e-12, "exact ln 32");
    }

    /// The entropy by quadrature against -mean log p over the generator's own samples: checks the closed-form
    /// density against the sampler it describes.
    #[test]
    fn entropy_by_quadrature_matches_the_generators() {
        tch::manual_seed(11);
        for t in [Toy::Rings, Toy::EightGaussians, Toy::Checkerboard] {
            let truth = toy(t);
            let x = t.generate(200_000);
            let nll = -truth.log_density(&x).unwrap();
            let (mc, se) = (nll.mean(Kind::Double).double_value(&[]), nll.std(true).double_value(&[]) / (200_000f64).sqrt());
            let h = truth.entropy().unwrap();
            assert!((mc - h).abs() < 4.0 * se + 2e-3, "{t:?}: quadrature {h} vs Monte Carlo {mc} ± {se}");
        }
    }

    #[test]
    fn the_data_sits_in_its_region_and_modes() {
        tch::manual_seed(12);
        for t in [Toy::Rings, Toy::EightGaussians, Toy::Checkerboard] {
            let truth = toy(t);
            let x = t.generate(50_000);
            let (inside, expected_out) = truth.in_support(&x).unwrap();
            let out = 1.0 - inside.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
            assert!((out - expected_out).abs() < 0.003, "{t:?}: {out} outside, expected {expected_out}");
            // Uniform noise on the box falls mostly outside.
            let u = Tensor::rand([50_000, 2], (Kind::Double, Device::Cpu)) * 8.0 - 4.0;
            let (inside_u, _) = truth.in_support(&u).unwrap();
            assert!(inside_u.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]) < 0.6, "{t:?}");
        }
        for t in [Toy::Rings, Toy::EightGaussians] {
            let x = t.generate(40_000);
            let (k, w) = toy(t).assign_modes(&x).unwrap();
            let counts = Vec::<i64>::try_from((k.clamp_min(-1) + 1).bincount::<Tensor>(None, w.len() as i64 + 1)).unwrap();
            assert!((counts[0] as f64) < 0.015 * 40_000.0, "{t:?}: {} unassigned", counts[0]);
            for (c, wk) in counts[1..].iter().zip(&w) {
                assert!((*c as f64 / 40_000.0 - wk).abs() < 0.01, "{t:?}: {counts:?}");
            }
        }
    }

    #[test]
    fn the_gmm_energy_is_its_own_law() {
        tch::manual_seed(13);
        let g = GaussianMixture::four_modes();
        let x = crate::dist::energy::Energy::sample(&g, 20_000);
        let truth = Truth::new(Rc::new(GaussianMixture::four_modes()));
        let (k, w) = truth.assign_modes(&x).unwrap();
        assert_eq!(w, vec![0.4, 0.3, 0.2, 0.1]);
        let counts = Vec::<i64>::try_from((k.clamp_min(-1) + 1).bincount::<Tensor>(None, 5)).unwrap();
        for (c, wk) in counts[1..].iter().zip(&w) {
            assert!((*c as f64 / 20_000.0 - wk).abs() < 0.015, "{counts:?}");
        }
        let h = truth.entropy().unwrap();
        assert!((h - crate::dist::energy::Energy::entropy(&g)).abs() < 1e-2, "two quadratures of one entropy: {h}");
    }
}
