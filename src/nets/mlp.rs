//! Multi-layer perceptron used as a coupling conditioner.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// Hidden-layer non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
    Silu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Silu => x.silu(),
        }
    }
}

/// y = W_L act(... act(W_1 x + b_1) ...) + b_L. Weights are `[out, in]` as in torch.nn.Linear.
#[derive(Debug)]
pub struct Mlp {
    weights: Vec<Tensor>,
    biases: Vec<Tensor>,
    act: Activation,
}

impl Mlp {
    /// `zero_last` starts the output layer at zero, so a coupling starts as the identity.
    pub fn new(path: &nn::Path, d_in: i64, hidden: &[i64], d_out: i64, act: Activation, zero_last: bool) -> Result<Self> {
        if hidden.iter().any(|&h| h <= 0) || d_in <= 0 || d_out <= 0 {
            bail!("MLP sizes must be positive: in {d_in}, hidden {hidden:?}, out {d_out}");
        }
        let mut sizes = vec![d_in];
        sizes.extend(hidden);
        sizes.push(d_out);
        let n = sizes.len() - 1;
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for (i, pair) in sizes.windows(2).enumerate() {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let bound = 1.0 / (fan_in as f64).sqrt();
            let p = path.sub(format!("linear{i}"));
            if zero_last && i == n - 1 {
                weights.push(p.zeros("weight", &[fan_out, fan_in]));
                biases.push(p.zeros("bias", &[fan_out]));
            } else {
                // torch.nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
                weights.push(p.uniform("weight", &[fan_out, fan_in], -bound, bound));
                biases.push(p.uniform("bias", &[fan_out], -bound, bound));
            }
        }
        Ok(Mlp { weights, biases, act })
    }

    /// weight_1, bias_1, ..., weight_L, bias_L.
    pub fn params(&self) -> Vec<&Tensor> {
        self.weights.iter().zip(&self.biases).flat_map(|(w, b)| [w, b]).collect()
    }

    pub fn activation(&self) -> Activation {
        self.act
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let last = self.weights.len() - 1;
        let mut h = x.shallow_clone();
        for (i, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            h = h.linear(w, Some(b));
            if i < last {
                h = self.act.apply(&h);
            }
        }
        h
    }
}
