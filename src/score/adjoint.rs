//! The adjoint method for neural ODEs (Chen et al. 2018, §2 and Algorithm 1): the gradients of a loss L(y(t1))
//! with respect to y(t0) and to the parameters θ of dy/dt = f(t, y; θ), from one backward solve of the augmented
//! system
//!
//!   d/dt [y, a, g] = [f, -aᵀ ∂f/∂y, -aᵀ ∂f/∂θ],   a(t1) = ∂L/∂y(t1),  g(t1) = 0,
//!
//! from t1 back to t0, which gives a(t0) = ∂L/∂y(t0) and g(t0) = ∂L/∂θ. No graph is kept across solver steps (each
//! evaluation builds and drops its own), so memory does not grow with the number of steps, at the price of a second
//! solve (and y re-integrated backwards, whose error the tolerance bounds). The forward solve is [`forward`]; the
//! caller computes a(t1) from y(t1) and calls [`backward`]. The solver is the crate's one RK45 (`ode::rk45`), the
//! same as the PF-ODE likelihood's.
use super::ode::{rk45, rk45_controlled, Tolerance};
use tch::{Kind, Tensor};

/// dy/dt = f(t, y), differentiable in y and in the parameters it closes over.
pub type Field<'a> = dyn Fn(f64, &Tensor) -> Tensor + 'a;

/// y(t1) by RK45 without keeping a graph across steps (each evaluation of f is detached, so f may use autograd
/// inside, as a CNF's divergence does); returns y(t1) and the number of evaluations of f.
pub fn forward(f: &Field, y0: &Tensor, t0: f64, t1: f64, tol: Tolerance) -> (Tensor, usize) {
    rk45(&mut |t, y: &Tensor| f(t, y).detach(), &y0.detach(), t0, t1, tol)
}

/// Which part of the backward state [y, a, ∂L/∂θ] the step-size control reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// All of it (torchdiffeq's default).
    Full,
    /// [y, a] only (Kidger, Chen & Lyons 2021, "Hey, that's not an ODE"): ∂L/∂θ feeds back into nothing, so its
    /// error need not shrink the steps; fewer backward evaluations, the same gradients to the tolerance.
    Seminorm,
}

/// What the backward solve returns.
pub struct Gradients {
    /// ∂L/∂y(t0), shaped like y.
    pub y0: Tensor,
    /// ∂L/∂θ for each parameter, shaped like it (zeros for a parameter f does not use).
    pub params: Vec<Tensor>,
    /// Evaluations of the augmented field (each one evaluation of f and one vector-Jacobian product).
    pub nfe: usize,
}

/// Solves the adjoint system from t1 back to t0, given y(t1) and a(t1) = ∂L/∂y(t1), for the parameters `params` of
/// f (tensors that require grad). The augmented state is solved in f64 with error control over all of it or, with
/// `Norm::Seminorm`, over [y, a].
pub fn backward(f: &Field, params: &[Tensor], y1: &Tensor, a1: &Tensor, t0: f64, t1: f64, tol: Tolerance, norm: Norm) -> Gradients {
    let shape = y1.size();
    let n = y1.numel() as i64;
    let sizes: Vec<i64> = params.iter().map(|p| p.numel() as i64).collect();
    let (kind, device) = (y1.kind(), y1.device());
    let mut rhs = |t: f64, state: &Tensor| -> Tensor {
        let y = state.narrow(0, 0, n).to_kind(kind).reshape(shape.as_slice());
        let a = state.narrow(0, n, n).to_kind(kind).reshape(shape.as_slice());
        let (dy, vjps) = tch::with_grad(|| {
            let yg = y.detach().set_requires_grad(true);
            let fy = f(t, &yg);
            let mut inputs = vec![yg.shallow_clone()];
            inputs.extend(params.iter().map(Tensor::shallow_clone));
            let grads = Tensor::run_backward(&[(&fy * &a).sum(None)], &inputs, false, false);
            (fy.detach(), grads)
        });
        let flat = |g: &Tensor, like: &Tensor| if g.defined() { g.detach().flatten(0, -1).to_kind(Kind::Double) } else { like.zeros_like().flatten(0, -1).to_kind(Kind::Double) };
        let mut parts = vec![dy.flatten(0, -1).to_kind(Kind::Double), -flat(&vjps[0], &y)];
        parts.extend(vjps[1..].iter().zip(params).map(|(g, p)| -flat(g, p)));
        Tensor::cat(&parts, 0)
    };
    let g1 = Tensor::zeros([sizes.iter().sum::<i64>()], (Kind::Double, device));
    let state1 = Tensor::cat(&[y1.detach().flatten(0, -1).to_kind(Kind::Double), a1.detach().flatten(0, -1).to_kind(Kind::Double), g1], 0);
    let controlled = match norm {
        Norm::Full => None,
        Norm::Seminorm => Some(2 * n),
    };
    let (state0, nfe) = tch::no_grad(|| rk45_controlled(&mut rhs, &state1, t1, t0, tol, controlled));
    let y0 = state0.narrow(0, n, n).reshape(shape.as_slice()).to_kind(a1.kind());
    let mut at = 2 * n;
    let grads = params
        .iter()
        .zip(&sizes)
        .map(|(p, &k)| {
            let g = state0.narrow(0, at, k).reshape(p.size().as_slice()).to_kind(p.kind());
            at += k;
            g
        })
        .collect();
    Gradients { y0, params: grads, nfe }
}

/// Adds `grads` into the `.grad` of `params`, as `backward()` would: the gradient of the surrogate Σ_p ⟨p, g_p⟩.
pub fn accumulate(params: &[Tensor], grads: &[Tensor]) {
    let surrogate = params.iter().zip(grads).map(|(p, g)| (p * g.detach()).sum(Kind::Double)).fold(Tensor::zeros([], (Kind::Double, params[0].device())), |a, b| a + b);
    surrogate.backward();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// dy/dt = tanh(y W + b) · (1 + t) on a batch [4, 3]; L = Σ y(1)² + Σ sin(y(1)).
    #[test]
    fn adjoint_gradients_equal_backpropagation_through_the_solver() {
        tch::manual_seed(11);
        let opts = (Kind::Double, Device::Cpu);
        let w = (Tensor::randn([3, 3], opts) * 0.8).set_requires_grad(true);
        let b = (Tensor::randn([3], opts) * 0.3).set_requires_grad(true);
        let unused = Tensor::ones([2], opts).set_requires_grad(true);
        let f = |t: f64, y: &Tensor| (y.matmul(&w) + &b).tanh() * (1.0 + t);
        let y0 = Tensor::randn([4, 3], opts);
        let loss = |y1: &Tensor| y1.square().sum(Kind::Double) + y1.sin().sum(Kind::Double);
        let tol = Tolerance { rtol: 1e-10, atol: 1e-10 };

        // Backpropagation through every RK45 step.
        let y0g = y0.copy().set_requires_grad(true);
        let (y1, _) = rk45(&mut |t, y: &Tensor| f(t, y), &y0g, 0.0, 1.0, tol);
        let bp = Tensor::run_backward(&[loss(&y1)], &[&y0g, &w, &b], false, false);

        // The adjoint: forward without a graph, a(t1) from the loss, one backward solve.
        let (y1a, nfe_forward) = forward(&f, &y0, 0.0, 1.0, tol);
        assert!((&y1a - y1.detach()).abs().max().double_value(&[]) < 1e-12, "the same forward solve");
        let y1l = y1a.set_requires_grad(true);
        let a1 = Tensor::run_backward(&[loss(&y1l)], &[&y1l], false, false).remove(0);
        let params = [w.shallow_clone(), b.shallow_clone(), unused.shallow_clone()];
        let g = backward(&f, &params, &y1l.detach(), &a1, 0.0, 1.0, tol, Norm::Full);
        assert!(nfe_forward > 6 && g.nfe > 6);
        for (name, ours, reference) in [("y0", &g.y0, &bp[0]), ("W", &g.params[0], &bp[1]), ("b", &g.params[1], &bp[2])] {
            let err = (ours - reference).abs().max().double_value(&[]) / reference.abs().max().double_value(&[]);
            assert!(err < 1e-6, "∂L/∂{name}: relative error {err}");
        }
        assert_eq!(g.params[2].abs().sum(Kind::Double).double_value(&[]), 0.0, "an unused parameter gets zero");

        // The seminorm: the same gradients to the tolerance, never more backward evaluations.
        let semi = backward(&f, &params, &y1l.detach(), &a1, 0.0, 1.0, tol, Norm::Seminorm);
        for (ours, reference) in semi.params[..2].iter().zip(&bp[1..]) {
            let err = (ours - reference).abs().max().double_value(&[]) / reference.abs().max().double_value(&[]);
            assert!(err < 1e-6, "seminorm: relative error {err}");
        }
        assert!(semi.nfe <= g.nfe, "seminorm {} vs full {} evaluations", semi.nfe, g.nfe);

        // accumulate() puts them into .grad like backward() does.
        accumulate(&[w.shallow_clone(), b.shallow_clone()], &g.params[..2]);
        assert!((w.grad() - &bp[1]).abs().max().double_value(&[]) < 1e-6 * bp[1].abs().max().double_value(&[]));
    }
}
