//! Training speed from a run's own evaluations: the first logged step whose test NLL (on the same `eval.n_eval`
//! test points every time) is within a tolerance of the best one the run reached.
use super::metrics;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// When a run got close to its best.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Convergence {
    /// Within this many nats per example of the best: 0.05 for data of dimension ≤ 16, else 1% of |best|.
    #[serde(deserialize_with = "crate::runner::summary::f64_or_nan")]
    pub tolerance_nats: f64,
    /// Best periodic test NLL (nats, on `eval.n_eval` points) and the step it was seen at.
    #[serde(deserialize_with = "crate::runner::summary::f64_or_nan")]
    pub best_eval_nll: f64,
    pub best_step: i64,
    /// First evaluated step within the tolerance, and the training wall time (s) up to it.
    pub steps: i64,
    #[serde(deserialize_with = "crate::runner::summary::f64_or_nan")]
    pub wall_time_s: f64,
    /// Evaluations the answer rests on (its resolution is the eval interval).
    pub n_evals: usize,
}

/// Tolerance for data of dimension `dim` with best NLL `best`.
pub fn tolerance(dim: i64, best: f64) -> f64 {
    if dim <= 16 { 0.05 } else { 0.01 * best.abs() }
}

/// From metric lines (`step`, `test_nll`, `wall_time_s`); None with fewer than two finite evaluations.
pub fn from_lines(lines: &[Value], dim: i64) -> Option<Convergence> {
    let evals: Vec<(i64, f64, f64)> = lines
        .iter()
        .filter_map(|v| Some((v.get("step")?.as_i64()?, v.get("test_nll")?.as_f64()?, v.get("wall_time_s")?.as_f64()?)))
        .filter(|e| e.1.is_finite())
        .collect();
    if evals.len() < 2 {
        return None;
    }
    let &(best_step, best, _) = evals.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
    let tol = tolerance(dim, best);
    let &(steps, _, wall) = evals.iter().find(|e| e.1 <= best + tol)?;
    Some(Convergence { tolerance_nats: tol, best_eval_nll: best, best_step, steps, wall_time_s: wall, n_evals: evals.len() })
}

/// From a run folder's metrics.jsonl.
pub fn of_run(run: &std::path::Path, dim: i64) -> Option<Convergence> {
    from_lines(&metrics::read(&run.join("metrics.jsonl")).ok()?, dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_step_within_the_tolerance_of_the_best() {
        let lines: Vec<Value> = [(100, 3.0, 1.0), (200, 2.6, 2.0), (300, 2.54, 3.0), (400, 2.5, 4.0), (500, 2.52, 5.0)]
            .iter()
            .map(|&(s, n, w)| json!({ "step": s, "test_nll": n, "wall_time_s": w }))
            .chain([json!({ "step": 450, "loss": 1.0 })])
            .collect();
        let c = from_lines(&lines, 2).unwrap();
        assert_eq!((c.best_step, c.steps, c.n_evals), (400, 300, 5));
        assert_eq!((c.best_eval_nll, c.wall_time_s, c.tolerance_nats), (2.5, 3.0, 0.05));
        // Images: 1% of |best| (34 nats here).
        let image: Vec<Value> = [(100, -3000.0), (200, -3300.0), (300, -3390.0), (400, -3400.0)]
            .iter()
            .map(|&(s, n)| json!({ "step": s, "test_nll": n, "wall_time_s": s as f64 }))
            .collect();
        let c = from_lines(&image, 784).unwrap();
        assert_eq!((c.steps, c.tolerance_nats), (300, 34.0));
        assert!(from_lines(&lines[..1], 2).is_none());
    }
}
