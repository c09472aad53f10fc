//! Conditional flows p(x | c): layers whose conditioners read [x_a, h(c)] and a base that may depend on h(c).
//!
//! log p(x | c) = log p_Z(f(x; h) | h) + log|det ∂f(x; h)/∂x|, h = h(c) (the change of variables for every fixed c,
//! as in zuko's `flow(c)` and nflows' `context`): exact, normalised over x for each c.
use crate::context::{Context, ContextSpec};
use crate::layer::LayerModel;
use crate::model::{Family, LogProb, Model, SamplingCost};
use crate::nets::embed::ContextEncoder;
use tch::Tensor;

#[derive(Debug)]
pub struct ConditionalFlow {
    /// Layers built with the encoder's width as their context width, and the base.
    pub flow: LayerModel,
    pub encoder: ContextEncoder,
}

impl ConditionalFlow {
    /// z = f(x; h(c)) and its log|det|.
    pub fn forward(&self, x: &Tensor, c: &Context) -> (Tensor, Tensor, Tensor) {
        let h = self.encoder.forward(c);
        let (z, v) = self.flow.forward_given(x, &h);
        (z, v, h)
    }

    fn needs_context(&self) -> ! {
        panic!("a conditional flow needs its context ({}): call the *_given methods", self.encoder.spec.describe())
    }
}

impl Model for ConditionalFlow {
    fn loss(&self, _x: &Tensor, _step: i64) -> Tensor {
        self.needs_context()
    }
    fn log_prob(&self, _x: &Tensor) -> LogProb {
        self.needs_context()
    }
    fn sample(&self, _n: i64) -> Tensor {
        self.needs_context()
    }

    /// Maximum likelihood of p(x | c): the mean of -log p(x_i | c_i) over the batch.
    fn loss_given(&self, x: &Tensor, c: &Context, _step: i64) -> Tensor {
        -self.log_prob_given(x, c).value.mean(None)
    }

    fn log_prob_given(&self, x: &Tensor, c: &Context) -> LogProb {
        let (z, v, h) = self.forward(x, c);
        LogProb { value: self.flow.base.log_prob_given(&z, &h) + v, kind: self.flow.kind() }
    }

    fn sample_given(&self, _n: i64, c: &Context) -> Tensor {
        tch::no_grad(|| {
            let h = self.encoder.forward(c);
            let z = self.flow.base.sample_given(&h, 1.0);
            self.flow.inverse_given(&z, &h).0
        })
    }

    fn context_spec(&self) -> Option<ContextSpec> {
        Some(self.encoder.spec)
    }

    fn data_init_given(&self, x: &Tensor, c: &Context) {
        self.encoder.data_init(c);
        tch::no_grad(|| {
            let h = self.encoder.forward(c);
            let mut z = x.shallow_clone();
            for layer in &self.flow.layers {
                z = layer.data_init_given(&z, &h);
            }
        })
    }

    fn sampling_cost(&self) -> SamplingCost {
        self.flow.sampling_cost()
    }

    fn family(&self) -> Family {
        self.flow.family
    }

    fn estimator(&self) -> serde_json::Value {
        self.flow.estimator()
    }

    fn set_training(&self, on: bool) {
        self.flow.set_training(on)
    }
}
