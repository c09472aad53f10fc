//! An exponential moving average of the weights (Polyak averaging, as DDPM and score_sde evaluate and sample with):
//! after update k, θ̄ ← d_k θ̄ + (1 − d_k) θ with d_k = min(decay, (1 + k) / (10 + k)), the warm-up of TensorFlow's
//! `ExponentialMovingAverage(decay, num_updates)` that score_sde uses, so early averages are not dominated by the
//! initial weights. θ̄ starts at the weights of the first update's input. It lives beside Adam's flat parameter
//! buffer (one tensor, one kernel per step) and is saved and resumed with the optimizer state.
use tch::Tensor;

#[derive(Debug)]
pub struct Ema {
    pub decay: f64,
    /// θ̄, shaped like the flat parameter buffer.
    pub shadow: Tensor,
    /// Updates averaged so far (k).
    pub updates: i64,
}

impl Ema {
    /// An average of a flat buffer like `flat`, with target decay `decay` in (0, 1).
    pub fn new(flat: &Tensor, decay: f64) -> Self {
        Ema { decay, shadow: flat.detach().copy(), updates: 0 }
    }

    /// d_k = min(decay, (1 + k) / (10 + k)).
    pub fn decay_at(&self, k: i64) -> f64 {
        self.decay.min((1.0 + k as f64) / (10.0 + k as f64))
    }

    /// Folds the weights after one more update into the average.
    pub fn update(&mut self, flat: &Tensor) {
        tch::no_grad(|| {
            if self.updates == 0 {
                self.shadow.copy_(flat);
            }
            self.updates += 1;
            let d = self.decay_at(self.updates);
            let _ = self.shadow.lerp_(flat, 1.0 - d);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn the_average_is_the_closed_form_weighted_sum_of_the_iterates() {
        // θ̄_K = Σ_k w_k θ_k with w_k = (1 - d_k) Π_{j > k} d_j, and the first iterate also weighted by d_1 Π_{j>1} d_j.
        let decay = 0.9;
        let iterates: Vec<Tensor> = (0..30).map(|k| Tensor::from_slice(&[k as f64, (k * k) as f64 * 0.1]).to_kind(Kind::Double)).collect();
        let mut ema = Ema::new(&iterates[0].zeros_like(), decay);
        for th in &iterates {
            ema.update(th);
        }
        let d: Vec<f64> = (1..=30).map(|k| ema.decay_at(k)).collect();
        let mut want = iterates[0].zeros_like();
        for (k, th) in iterates.iter().enumerate() {
            let later: f64 = d[k + 1..].iter().product();
            let own = if k == 0 { 1.0 } else { 1.0 - d[k] };
            want = want + th * (own * later);
        }
        assert!((&ema.shadow - &want).abs().max().double_value(&[]) < 1e-9, "{:?} vs {:?}", ema.shadow, want);
        assert_eq!(ema.updates, 30);
        assert!((ema.decay_at(1) - 2.0 / 11.0).abs() < 1e-15 && ema.decay_at(1_000_000) == decay, "warm-up, then the target decay");
        // Weights that stop moving pull the average to them.
        let fixed = Tensor::from_slice(&[3.0f64, -1.0]);
        for _ in 0..400 {
            ema.update(&fixed);
        }
        assert!((&ema.shadow - &fixed).abs().max().double_value(&[]) < 1e-9);
    }
}
