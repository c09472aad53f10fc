//! ODE solvers over tensors: fixed-step RK4 and adaptive Dormand-Prince RK45 (Dormand & Prince 1980; the tableau
//! of scipy's RK45), counting function evaluations.
use tch::{Kind, Tensor};

/// dy/dt = f(t, y) over a whole state tensor.
pub type Rhs<'a> = dyn FnMut(f64, &Tensor) -> Tensor + 'a;

/// Classic fixed-step fourth-order Runge-Kutta from t0 to t1 in `steps` steps; returns y(t1) and the evaluations.
pub fn rk4(f: &mut Rhs, y0: &Tensor, t0: f64, t1: f64, steps: usize) -> (Tensor, usize) {
    let h = (t1 - t0) / steps.max(1) as f64;
    let mut y = y0.shallow_clone();
    for i in 0..steps.max(1) {
        let t = t0 + i as f64 * h;
        let k1 = f(t, &y);
        let k2 = f(t + h / 2.0, &(&y + &k1 * (h / 2.0)));
        let k3 = f(t + h / 2.0, &(&y + &k2 * (h / 2.0)));
        let k4 = f(t + h, &(&y + &k3 * h));
        y = &y + (k1 + k2 * 2.0 + k3 * 2.0 + k4) * (h / 6.0);
    }
    (y, 4 * steps.max(1))
}

/// Adaptive-step settings.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

const C: [f64; 6] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0];
const A: [&[f64]; 6] = [
    &[],
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0],
    &[9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0],
];
/// Fifth-order weights (the solution) and the error weights (fifth minus fourth order, with the FSAL stage).
const B: [f64; 6] = [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0];
const E: [f64; 7] = [71.0 / 57600.0, 0.0, -71.0 / 16695.0, 71.0 / 1920.0, -17253.0 / 339200.0, 22.0 / 525.0, -1.0 / 40.0];

/// Dormand-Prince RK45 from t0 to t1 with error control ||err / (atol + rtol·max(|y|, |y_new|))||_RMS ≤ 1 over the
/// whole state; returns y(t1) and the number of function evaluations.
pub fn rk45(f: &mut Rhs, y0: &Tensor, t0: f64, t1: f64, tol: Tolerance) -> (Tensor, usize) {
    rk45_controlled(f, y0, t0, t1, tol, None)
}

/// `rk45` whose step-size control reads only the first `controlled` entries of the flattened state (None: all of
/// it): a seminorm (Kidger et al. 2021), for states with parts nothing else depends on, like the adjoint's ∂L/∂θ.
pub fn rk45_controlled(f: &mut Rhs, y0: &Tensor, t0: f64, t1: f64, tol: Tolerance, controlled: Option<i64>) -> (Tensor, usize) {
    let part = |t: &Tensor| match controlled {
        Some(k) => t.flatten(0, -1).narrow(0, 0, k),
        None => t.shallow_clone(),
    };
    let dir = (t1 - t0).signum();
    let span = (t1 - t0).abs();
    let mut t = t0;
    let mut y = y0.shallow_clone();
    let mut k1 = f(t, &y);
    let mut nfe = 1;
    let mut h = initial_step(&part(&y), &part(&k1), tol, span);
    while (t1 - t) * dir > 1e-12 * span.max(1.0) {
        h = h.min((t1 - t).abs());
        let mut ks = vec![k1.shallow_clone()];
        for s in 1..6 {
            let incr = A[s].iter().zip(&ks).fold(y.zeros_like(), |acc, (a, k)| acc + k * (*a * h * dir));
            ks.push(f(t + C[s] * h * dir, &(&y + incr)));
            nfe += 1;
        }
        let y_new = &y + B.iter().zip(&ks).fold(y.zeros_like(), |acc, (b, k)| acc + k * (*b * h * dir));
        let k7 = f(t + h * dir, &y_new);
        nfe += 1;
        ks.push(k7.shallow_clone());
        let err = E.iter().zip(&ks).fold(y.zeros_like(), |acc, (e, k)| acc + k * (*e * h * dir));
        let scale = part(&y).abs().maximum(&part(&y_new).abs()) * tol.rtol + tol.atol;
        let err_norm = (part(&err) / scale).square().mean(Kind::Double).sqrt().double_value(&[]);
        // A NaN or infinity in the state or the field (diverged weights) makes every error estimate non-finite, and
        // the step would shrink forever: end the solve with that non-finite state, so the caller's checks name it.
        if !err_norm.is_finite() {
            return (y_new, nfe);
        }
        if err_norm <= 1.0 || h < 1e-10 * span {
            t += h * dir;
            y = y_new;
            k1 = k7;
        }
        let factor = if err_norm == 0.0 { 5.0 } else { (0.9 * err_norm.powf(-0.2)).clamp(0.2, 5.0) };
        h *= factor;
    }
    (y, nfe)
}

fn initial_step(y: &Tensor, f0: &Tensor, tol: Tolerance, span: f64) -> f64 {
    let scale = y.abs() * tol.rtol + tol.atol;
    let d0 = (y / &scale).square().mean(Kind::Double).sqrt().double_value(&[]);
    let d1 = (f0 / &scale).square().mean(Kind::Double).sqrt().double_value(&[]);
    let h = if d0 < 1e-5 || d1 < 1e-5 { 1e-6 } else { 0.01 * d0 / d1 };
    h.min(span).max(1e-6 * span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn rk45_meets_its_tolerance_on_a_known_solution() {
        // y' = -2 t y with y(0) = 1: y(t) = exp(-t²); and y' = cos t: y = sin t, over a batch of states.
        for rtol in [1e-3, 1e-5, 1e-7] {
            let tol = Tolerance { rtol, atol: rtol };
            let y0 = Tensor::from_slice(&[1.0f64, 2.0, 0.5]);
            let (y, nfe) = rk45(&mut |t, y: &Tensor| y * (-2.0 * t), &y0, 0.0, 2.0, tol);
            let exact = &y0 * (-4.0f64).exp();
            let err = (y - exact).abs().max().double_value(&[]);
            assert!(err < 20.0 * rtol, "rtol {rtol}: error {err} after {nfe} evaluations");
            let (s, _) = rk45(&mut |t, y: &Tensor| y.zeros_like() + t.cos(), &Tensor::zeros([2], (Kind::Double, Device::Cpu)), 0.0, 3.0, tol);
            assert!((s - 3f64.sin()).abs().max().double_value(&[]) < 20.0 * rtol);
        }
    }

    #[test]
    fn rk45_spends_more_evaluations_for_tighter_tolerances_and_integrates_backwards() {
        let y0 = Tensor::from_slice(&[1.0f64]);
        let mut f = |_t: f64, y: &Tensor| -y;
        let (_, loose) = rk45(&mut f, &y0, 0.0, 5.0, Tolerance { rtol: 1e-2, atol: 1e-2 });
        let (_, tight) = rk45(&mut f, &y0, 0.0, 5.0, Tolerance { rtol: 1e-8, atol: 1e-8 });
        assert!(tight > 3 * loose, "{tight} vs {loose}");
        let (back, _) = rk45(&mut f, &Tensor::from_slice(&[(-5.0f64).exp()]), 5.0, 0.0, Tolerance { rtol: 1e-8, atol: 1e-10 });
        assert!((back.double_value(&[0]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_non_finite_field_ends_the_solve_with_a_non_finite_state() {
        let y0 = Tensor::from_slice(&[1.0f64, 2.0]);
        for bad in [f64::NAN, f64::INFINITY] {
            let (y, nfe) = rk45(&mut |_t, y: &Tensor| y * bad, &y0, 0.0, 1.0, Tolerance { rtol: 1e-6, atol: 1e-6 });
            assert!(y.isfinite().logical_not().any().int64_value(&[]) == 1, "{bad}: the state says it diverged");
            assert!(nfe <= 7, "{bad}: one step's evaluations, then stop ({nfe})");
        }
    }

    #[test]
    fn rk4_is_fourth_order() {
        let y0 = Tensor::from_slice(&[1.0f64]);
        let err = |n| (rk4(&mut |_t, y: &Tensor| -y, &y0, 0.0, 1.0, n).0.double_value(&[0]) - (-1.0f64).exp()).abs();
        let ratio = err(10) / err(20);
        assert!((ratio - 16.0).abs() < 2.0, "halving h divides the error by {ratio}, expected ~16");
    }
}
