//! The interpolated energy u_λ(x) = (1 - λ) u_prior(x) + λ u_target(x), with u_prior = ½|x|² (the standard normal
//! prior's energy), on which each stochastic layer samples. A conditional SNF's target takes a parameter per row,
//! u_target(x; c) = u_doublewell(x) + (0.5 − c) x1 (`dist::energy::TiltedDoubleWell`): the model binds the batch's
//! c to the shared `Tilt` for one call, and every layer's energy reads it.
use crate::dist::energy::{tilt_energy, tilt_grad, Energy};
use std::cell::RefCell;
use std::rc::Rc;
use tch::Tensor;

#[derive(Debug, Clone)]
pub struct Interpolated {
    pub target: Rc<dyn Energy>,
    pub lambda: f64,
    /// The per-row tilt of a conditional target (None: the target as it is).
    pub tilt: Option<Rc<Tilt>>,
}

/// The tilt parameters c [batch, 1] of the rows in flight.
#[derive(Debug, Default)]
pub struct Tilt {
    c: RefCell<Option<Tensor>>,
}

/// Holds a binding of `Tilt`; dropping it unbinds.
pub struct TiltBound<'a>(&'a Tilt);

impl Drop for TiltBound<'_> {
    fn drop(&mut self) {
        *self.0.c.borrow_mut() = None;
    }
}

impl Tilt {
    /// Binds the rows' parameters c [batch, 1] until the guard drops.
    pub fn bind(&self, c: &Tensor) -> TiltBound<'_> {
        *self.c.borrow_mut() = Some(c.shallow_clone());
        TiltBound(self)
    }

    fn with<R>(&self, x: &Tensor, f: impl FnOnce(&Tensor) -> R) -> R {
        let c = self.c.borrow();
        let c = c.as_ref().expect("a conditional SNF's energy was evaluated without its parameters (the model binds them in *_given)");
        assert_eq!(c.size()[0], x.size()[0], "a conditional SNF's energy got {} rows for {} bound parameters", x.size()[0], c.size()[0]);
        f(&c.to_device(x.device()))
    }

    /// (0.5 − c) x1 per row.
    pub fn energy(&self, x: &Tensor) -> Tensor {
        self.with(x, |c| tilt_energy(x, c))
    }

    pub fn grad(&self, x: &Tensor) -> Tensor {
        self.with(x, |c| tilt_grad(x, c))
    }
}

impl Interpolated {
    /// u_target(x) (with the bound tilt of a conditional target).
    pub fn target_energy(&self, x: &Tensor) -> Tensor {
        match &self.tilt {
            Some(t) => self.target.energy(x) + t.energy(x),
            None => self.target.energy(x),
        }
    }

    fn target_grad(&self, x: &Tensor) -> Tensor {
        match &self.tilt {
            Some(t) => self.target.grad(x) + t.grad(x),
            None => self.target.grad(x),
        }
    }

    /// u_λ(x) per example.
    pub fn energy(&self, x: &Tensor) -> Tensor {
        if self.lambda == 1.0 {
            return self.target_energy(x);
        }
        let prior = x.square().sum_dim_intlist(1, false, None) * 0.5;
        if self.lambda == 0.0 {
            return prior;
        }
        prior * (1.0 - self.lambda) + self.target_energy(x) * self.lambda
    }

    /// ∇u_λ(x) = (1 - λ) x + λ ∇u_target(x).
    pub fn grad(&self, x: &Tensor) -> Tensor {
        if self.lambda == 0.0 {
            return x.shallow_clone();
        }
        if self.lambda == 1.0 {
            return self.target_grad(x);
        }
        x * (1.0 - self.lambda) + self.target_grad(x) * self.lambda
    }
}
