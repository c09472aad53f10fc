//! The simulation-based-inference measures of a posterior estimate q(θ | x) on a task with a known posterior
//! (`data::sbi`): at each reference observation x_o, C2ST accuracy of q's samples against reference posterior
//! samples (sbibm's metric: 0.5 is perfect), and the NLL of the true θ_o under q (exact: q is a flow). Written into
//! summary.json["sbi"] by the runner.
use super::c2st::{c2st_many, C2stSettings};
use crate::context::Context;
use crate::data::sbi::Task;
use crate::model::Model;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SbiResult {
    pub task: String,
    /// Simulations the estimator was trained on (the budget).
    pub simulations: i64,
    pub observations: i64,
    /// Samples per side of each C2ST.
    pub samples: i64,
    /// "exact" (closed form or exact sampling) or "mcmc".
    pub reference: String,
    pub c2st_mean: f64,
    pub c2st_per_observation: Vec<f64>,
    /// Mean over observations of -log q(θ_o | x_o), nats (exact for a flow).
    pub nll_true_theta: f64,
    /// The same under the true posterior, where it is closed-form (gaussian_linear): q's floor in expectation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_nll_true_theta: Option<f64>,
}

/// C2ST and true-θ NLL of `model` (a conditional model on the task's x) at `n_obs` reference observations;
/// `each(j, reference, q)` sees observation j's reference and model samples once they are drawn (the C2STs of all
/// observations then train together).
pub fn evaluate(
    model: &dyn Model,
    task: Task,
    simulations: i64,
    n_obs: i64,
    n_samples: i64,
    c2st_settings: &C2stSettings,
    device: Device,
    each: &mut dyn FnMut(i64, &tch::Tensor, &tch::Tensor),
) -> SbiResult {
    let (theta_o, x_o) = task.observations(n_obs);
    let mut pairs = Vec::new();
    let mut nll = Vec::new();
    let mut ref_nll = Vec::new();
    for j in 0..n_obs {
        let x = x_o.get(j);
        tch::manual_seed(7_000 + j);
        let reference = task.reference_posterior(&x, &theta_o.get(j), n_samples);
        let ctx = Context::Vector(x.to_kind(Kind::Float).view([1, -1]).expand([n_samples, -1], false).contiguous().to_device(device));
        let q = tch::no_grad(|| model.sample_given(n_samples, &ctx)).to_device(Device::Cpu);
        each(j, &reference, &q);
        pairs.push((reference, q));
        let one = Context::Vector(x.to_kind(Kind::Float).view([1, -1]).to_device(device));
        let lp = tch::no_grad(|| model.log_prob_given(&theta_o.get(j).to_kind(Kind::Float).view([1, -1]).to_device(device), &one).value);
        nll.push(-lp.double_value(&[0]));
        if let Some((mean, var)) = task.posterior_gaussian(&x.view([1, -1])) {
            let d = task.theta_dim() as f64;
            let q = (theta_o.get(j).view([1, -1]) - mean).square().sum(Kind::Double).double_value(&[]) / var;
            ref_nll.push(0.5 * q + 0.5 * d * (2.0 * std::f64::consts::PI * var).ln());
        }
    }
    let accs = c2st_many(&pairs, c2st_settings);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    SbiResult {
        task: task.name().into(),
        simulations,
        observations: n_obs,
        samples: n_samples,
        reference: if task == Task::Slcp { "mcmc".into() } else { "exact".into() },
        c2st_mean: mean(&accs),
        c2st_per_observation: accs,
        nll_true_theta: mean(&nll),
        reference_nll_true_theta: (!ref_nll.is_empty()).then(|| mean(&ref_nll)),
    }
}
