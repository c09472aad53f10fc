//! Monotonic rational-quadratic splines with linear tails (Durkan et al. 2019, "Neural Spline Flows", §3.1 and
//! App. A; Gregory & Delbourgo 1982). On [-B, B] the map is K rational-quadratic pieces through knots
//! (x_k, y_k) with positive derivatives δ_k at the knots; outside it is the identity (δ = 1 at ±B keeps it C¹).
use tch::{Kind, Tensor};

/// Smallest bin width/height (as a fraction of 2B) and derivative, for numerical safety (nflows' defaults).
pub const MIN_BIN: f64 = 1e-3;
pub const MIN_DERIVATIVE: f64 = 1e-3;

/// Unnormalised parameters per transformed element: widths [.., K], heights [.., K], interior derivatives [.., K-1].
pub struct SplineParams<'a> {
    pub widths: &'a Tensor,
    pub heights: &'a Tensor,
    pub derivatives: &'a Tensor,
}

/// Knot positions -B = c_0 < ... < c_K = B from unnormalised bin sizes (softmax, floored at MIN_BIN).
fn knots(unnormalised: &Tensor, bound: f64) -> (Tensor, Tensor) {
    let k = *unnormalised.size().last().expect("bins") as f64;
    let sizes = unnormalised.softmax(-1, unnormalised.kind()) * (1.0 - MIN_BIN * k) + MIN_BIN;
    let cum = sizes.cumsum(-1, sizes.kind());
    let inner = cum.narrow(-1, 0, cum.size().last().copied().unwrap_or(1) - 1) * (2.0 * bound) - bound;
    // The ends are exactly ±B (the cumulative sum reaches 1 only up to rounding).
    let end = cum.narrow(-1, 0, 1).ones_like() * bound;
    let c = Tensor::cat(&[-&end, inner, end], -1);
    let n = c.size().last().copied().unwrap_or(1);
    let sizes = c.narrow(-1, 1, n - 1) - c.narrow(-1, 0, n - 1);
    (c, sizes)
}

/// Knot derivatives: 1 at ±B (linear tails), MIN_DERIVATIVE + softplus(d + ln(e^{1-min} - 1)) inside, so d = 0
/// gives δ = 1 and zero parameters give the identity.
fn knot_derivatives(d: &Tensor) -> Tensor {
    let shift = ((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln();
    let inner = (d + shift).softplus() + MIN_DERIVATIVE;
    let one = inner.narrow(-1, 0, 1).ones_like();
    Tensor::cat(&[one.shallow_clone(), inner, one], -1)
}

/// Picks entry `idx` [..] along the last axis of `t` [.., n].
fn pick(t: &Tensor, idx: &Tensor) -> Tensor {
    t.gather(-1, &idx.unsqueeze(-1), false).squeeze_dim(-1)
}

/// y = g(x) and log g'(x) element-wise (`inverse = false`), or x = g⁻¹(y) and log (g⁻¹)'(y) (`inverse = true`).
/// Inputs have shape [..]; parameters [.., K] / [.., K-1].
pub fn rational_quadratic(input: &Tensor, p: &SplineParams, bound: f64, inverse: bool) -> (Tensor, Tensor) {
    let inside = input.abs().le(bound);
    let u = input.clamp(-bound, bound);
    let (cw, w) = knots(p.widths, bound);
    let (ch, h) = knots(p.heights, bound);
    let delta = knot_derivatives(p.derivatives);
    let bins = *w.size().last().expect("bins");
    // The bin: number of left knots at or below the input, minus one.
    let left = if inverse { ch.narrow(-1, 0, bins) } else { cw.narrow(-1, 0, bins) };
    let idx = u.unsqueeze(-1).ge_tensor(&left).sum_dim_intlist(-1, false, Kind::Int64).g_sub_scalar(1).clamp(0, bins - 1);
    let (xk, wk, yk, hk) = (pick(&cw, &idx), pick(&w, &idx), pick(&ch, &idx), pick(&h, &idx));
    let (dk, dk1) = (pick(&delta, &idx), pick(&delta, &(&idx + 1)));
    let s = &hk / &wk;
    let sum = &dk1 + &dk - &s * 2.0;
    let (out, log_grad) = if inverse {
        // Solve a ξ² + b ξ + c = 0 for ξ ∈ [0, 1] (App. A, eq. 29-32), in the numerically stable root.
        let dy = &u - &yk;
        let a = &hk * (&s - &dk) + &dy * &sum;
        let b = &hk * &dk - &dy * &sum;
        let c = -&s * &dy;
        let disc = (b.square() - &a * &c * 4.0).clamp_min(0.0);
        let xi = (&c * 2.0) / (-&b - disc.sqrt());
        let x = &xi * &wk + &xk;
        (x, -log_derivative(&xi, &s, &dk, &dk1, &sum))
    } else {
        let xi = (&u - &xk) / &wk;
        let om = &xi * (1.0 - &xi);
        let y = &yk + &hk * (&s * xi.square() + &dk * &om) / (&s + &sum * &om);
        (y, log_derivative(&xi, &s, &dk, &dk1, &sum))
    };
    let out = out.where_self(&inside, input);
    let log_grad = log_grad.where_self(&inside, &log_grad.zeros_like());
    (out, log_grad)
}

/// log g'(x) = log[s² (δ_{k+1} ξ² + 2 s ξ(1-ξ) + δ_k (1-ξ)²)] - 2 log[s + (δ_{k+1} + δ_k - 2s) ξ(1-ξ)] (eq. 5).
fn log_derivative(xi: &Tensor, s: &Tensor, dk: &Tensor, dk1: &Tensor, sum: &Tensor) -> Tensor {
    let om = xi * (1.0 - xi);
    let one_minus: Tensor = 1.0 - xi;
    let num = s.square() * (dk1 * xi.square() + s * &om * 2.0 + dk * one_minus.square());
    let den = s + sum * &om;
    num.log() - den.log() * 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn random_params(n: i64, k: i64) -> (Tensor, Tensor, Tensor) {
        let o = (Kind::Double, Device::Cpu);
        (Tensor::randn([n, k], o) * 2.0, Tensor::randn([n, k], o) * 2.0, Tensor::randn([n, k - 1], o) * 2.0)
    }

    #[test]
    fn monotone_invertible_with_exact_log_derivative_and_identity_tails() {
        tch::manual_seed(0);
        let (n, k, bound) = (2000, 8, 3.0);
        let (w, h, d) = random_params(1, k);
        let expand = |t: &Tensor| t.expand([n, t.size()[1]], false).contiguous();
        let (w, h, d) = (expand(&w), expand(&h), expand(&d));
        let p = SplineParams { widths: &w, heights: &h, derivatives: &d };
        let x = Tensor::linspace(-4.0, 4.0, n, (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let (y, ld) = rational_quadratic(&x, &p, bound, false);
        let ys: Vec<f64> = Vec::try_from(&y.detach()).unwrap();
        assert!(ys.windows(2).all(|v| v[1] > v[0]), "strictly increasing");
        // log g' against autograd.
        let g = Tensor::run_backward(&[y.sum(None)], &[&x], false, false).remove(0);
        assert!((g.log() - &ld).abs().max().double_value(&[]) < 1e-9);
        // Identity outside [-B, B], knots hit ±B.
        let xs: Vec<f64> = Vec::try_from(&x.detach()).unwrap();
        for (a, b) in xs.iter().zip(&ys) {
            if a.abs() > bound {
                assert_eq!(a, b);
            }
        }
        // Inverse, including exactly at the knots and the bound.
        let (cw, _) = knots(&w, bound);
        let at_knots = Tensor::cat(&[x.detach(), cw.get(0)], 0);
        let m = at_knots.size()[0];
        let expand_m = |t: &Tensor| t.narrow(0, 0, 1).expand([m, t.size()[1]], false).contiguous();
        let (wm, hm, dm) = (expand_m(&w), expand_m(&h), expand_m(&d));
        let pm = SplineParams { widths: &wm, heights: &hm, derivatives: &dm };
        let (y, ld) = rational_quadratic(&at_knots, &pm, bound, false);
        let (back, ld_inv) = rational_quadratic(&y, &pm, bound, true);
        assert!((back - &at_knots).abs().max().double_value(&[]) < 1e-9, "inverse");
        assert!((ld + ld_inv).abs().max().double_value(&[]) < 1e-9, "inverse log-derivative is the negative");
    }

    #[test]
    fn zero_parameters_give_the_identity() {
        let o = (Kind::Double, Device::Cpu);
        let (w, h, d) = (Tensor::zeros([5, 4], o), Tensor::zeros([5, 4], o), Tensor::zeros([5, 3], o));
        let x = Tensor::from_slice(&[-2.0, -0.3, 0.0, 0.7, 2.5]);
        let (y, ld) = rational_quadratic(&x, &SplineParams { widths: &w, heights: &h, derivatives: &d }, 1.0, false);
        assert!((y - &x).abs().max().double_value(&[]) < 1e-12 && ld.abs().max().double_value(&[]) < 1e-12);
    }
}
