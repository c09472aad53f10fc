//! A conditional model as the runner's sample-based measures see it: `sample(n)` draws one sample at each of the
//! first n test contexts (cycled), i.e. a sample of the x-marginal ∫ q(x | c) p(c) dc with c from the test set, so
//! sample pictures, MMD against test points, support and mode measures keep their meaning. Densities always go
//! through `log_prob_given` with each point's own context: `log_prob(x)` without one is refused (a panic, as a
//! programming error), never silently estimated.
use crate::context::{Context, ContextSpec};
use crate::model::{Family, LogProb, Model, SamplingCost};
use tch::Tensor;

pub struct Marginal {
    pub inner: Box<dyn Model>,
    /// The test set's contexts, on the model's device.
    pub contexts: Context,
}

impl Marginal {
    /// The contexts of `n` samples: test contexts 0, 1, ... cycled; under a data-parallel split, this rank's rows of
    /// the whole draw's contexts (see `crate::rows`).
    fn contexts_for(&self, n: i64) -> Context {
        match crate::rows::current().filter(|s| s.len == n && s.blocks == 1) {
            Some(s) => {
                let all = self.contexts.cycled(s.total);
                let device = all.tensor().map_or(tch::Device::Cpu, |t| t.device());
                all.narrow(s.offset, s.len, device)
            }
            None => self.contexts.cycled(n),
        }
    }
}

impl Model for Marginal {
    fn loss(&self, _x: &Tensor, _step: i64) -> Tensor {
        panic!("a conditional model's loss needs the batch's contexts (loss_given)")
    }
    fn log_prob(&self, _x: &Tensor) -> LogProb {
        panic!("a conditional model's density needs each point's context (log_prob_given)")
    }
    fn sample(&self, n: i64) -> Tensor {
        self.inner.sample_given(n, &self.contexts_for(n))
    }
    fn loss_given(&self, x: &Tensor, c: &Context, step: i64) -> Tensor {
        self.inner.loss_given(x, c, step)
    }
    fn loss_backward_given(&self, x: &Tensor, c: &Context, step: i64) -> Tensor {
        self.inner.loss_backward_given(x, c, step)
    }
    fn log_prob_given(&self, x: &Tensor, c: &Context) -> LogProb {
        self.inner.log_prob_given(x, c)
    }
    fn sample_given(&self, n: i64, c: &Context) -> Tensor {
        self.inner.sample_given(n, c)
    }
    fn context_spec(&self) -> Option<ContextSpec> {
        self.inner.context_spec()
    }
    fn data_init_given(&self, x: &Tensor, c: &Context) {
        self.inner.data_init_given(x, c)
    }
    fn sampling_cost(&self) -> SamplingCost {
        self.inner.sampling_cost()
    }
    fn set_training(&self, on: bool) {
        self.inner.set_training(on)
    }
    fn family(&self) -> Family {
        self.inner.family()
    }
    fn estimator(&self) -> serde_json::Value {
        self.inner.estimator()
    }
    fn bind_parameters(&self, params: &[Tensor]) {
        self.inner.bind_parameters(params)
    }
    fn train_stats(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.inner.train_stats()
    }
    fn diagnostics(&self, n: i64, repeats: i64) -> Option<serde_json::Value> {
        self.inner.diagnostics(n, repeats)
    }
}
