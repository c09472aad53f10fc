//! DiffFlow's time grids (Zhang & Chen 2021, §4 and App. D): t_i = (t_0^β + (i/N)(T^β - t_0^β))^{1/β}, i = 0..N
//! (β < 1 puts more steps near the data), a randomized variant that jitters the interior points within their cells
//! (so the networks see every time during training), and progressive N as a training schedule.
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// The fixed grid t_0 < t_1 < ... < t_N from `t_start` to `t_end`, uniform in t^β.
pub fn fixed(n: usize, t_start: f64, t_end: f64, beta: f64) -> Vec<f64> {
    let (a, b) = (t_start.powf(beta), t_end.powf(beta));
    (0..=n).map(|i| (a + (b - a) * i as f64 / n as f64).powf(1.0 / beta)).collect()
}

/// A randomized grid with the same end points: N points uniform in t^β define N-1 cells, one interior time is drawn
/// uniformly in each (the official code's `ExpTimer.rand`). Uses torch's generator, so a seeded step is repeatable.
pub fn random(n: usize, t_start: f64, t_end: f64, beta: f64) -> Vec<f64> {
    if n < 2 {
        return fixed(n, t_start, t_end, beta);
    }
    let (a, b) = (t_start.powf(beta), t_end.powf(beta));
    let cell = (b - a) / (n - 1) as f64;
    let u = Vec::<f64>::try_from(Tensor::rand([n as i64 - 1], (Kind::Double, tch::Device::Cpu))).expect("cpu f64");
    let mut t = vec![t_start];
    t.extend(u.iter().enumerate().map(|(k, r)| (a + cell * (k as f64 + r)).powf(1.0 / beta)));
    t.push(t_end);
    t
}

/// The N in force at training step `step` of a progressive schedule [(first step, N), ...].
pub fn steps_at(schedule: &[(i64, usize)], step: i64) -> usize {
    schedule.iter().rev().find(|(start, _)| *start <= step).map(|(_, n)| *n).unwrap_or(schedule[0].1)
}

/// A schedule must start at step 0, increase in steps, and have N ≥ 1.
pub fn check_schedule(schedule: &[(i64, usize)]) -> Result<()> {
    match schedule.first() {
        None => bail!("model.steps_schedule is empty: give [[0, N0], [step1, N1], ...] or leave it out"),
        Some((s, _)) if *s != 0 => bail!("model.steps_schedule must start at step 0, starts at {s}"),
        _ => {}
    }
    if schedule.windows(2).any(|w| w[1].0 <= w[0].0) {
        bail!("model.steps_schedule: first steps must increase, got {schedule:?}");
    }
    if schedule.iter().any(|(_, n)| *n == 0) {
        bail!("model.steps_schedule: every N must be at least 1, got {schedule:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_grid_hits_the_ends_and_is_uniform_in_t_to_the_beta() {
        let t = fixed(30, 1e-3, 0.05, 0.9);
        assert_eq!(t.len(), 31);
        assert!((t[0] - 1e-3).abs() < 1e-15 && (t[30] - 0.05).abs() < 1e-12);
        let u: Vec<f64> = t.iter().map(|x| x.powf(0.9)).collect();
        let du: Vec<f64> = u.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(du.iter().all(|d| (d - du[0]).abs() < 1e-12));
        let dt: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(dt[0] < dt[29], "β < 1 gives finer steps near the data");
    }

    #[test]
    fn random_grid_is_increasing_within_its_cells() {
        tch::manual_seed(0);
        let t = random(10, 1e-3, 0.05, 0.9);
        assert_eq!(t.len(), 11);
        assert!(t.windows(2).all(|w| w[1] > w[0]), "{t:?}");
        assert_eq!((t[0], t[10]), (1e-3, 0.05));
        let a = random(10, 1e-3, 0.05, 0.9);
        assert_ne!(t, a, "two draws differ");
    }

    #[test]
    fn progressive_schedule_lookup_and_checks() {
        let s = [(0, 5), (3000, 10), (5000, 20), (8000, 30)];
        assert_eq!([0, 2999, 3000, 7999, 100_000].map(|k| steps_at(&s, k)), [5, 5, 10, 20, 30]);
        assert!(check_schedule(&s).is_ok());
        assert!(check_schedule(&[(10, 5)]).unwrap_err().to_string().contains("start at step 0"));
        assert!(check_schedule(&[(0, 5), (0, 6)]).unwrap_err().to_string().contains("increase"));
        assert!(check_schedule(&[]).is_err());
    }
}
