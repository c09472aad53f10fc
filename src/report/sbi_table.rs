//! The simulation-based-inference table: for each task and simulation budget, the C2ST of relaxflow's conditional
//! NSF posterior q(θ | x) against reference posterior samples and the NLL of the true θ, beside the published NPE
//! numbers of the SBI benchmark (Lueckmann et al. 2021, sbibm). Reads every run folder under `dir` whose
//! summary.json holds an `sbi` section (what `make sbi` writes: `runs/sbi/<task>-<budget>`).
use super::notebook::{self, Block};
use crate::runner::summary::{self, Summary};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// sbibm's NPE C2ST (mean, sd over its 10 observations) at 10³, 10⁴, 10⁵ simulations: sbi-benchmark/results at
/// 741183cd, benchmarking_sbi/results/main_paper.csv (NPE: NSF with 5 transforms, 50 hidden units, z-scored θ and
/// x, 10,000 samples per side, 5-fold C2ST).
const PUBLISHED: [(&str, [(i64, f64, f64); 3]); 3] = [
    ("gaussian_linear", [(1_000, 0.6945, 0.0438), (10_000, 0.5522, 0.0316), (100_000, 0.5060, 0.0041)]),
    ("two_moons", [(1_000, 0.7251, 0.0447), (10_000, 0.6064, 0.0394), (100_000, 0.5417, 0.0239)]),
    ("slcp", [(1_000, 0.9752, 0.0125), (10_000, 0.9006, 0.0474), (100_000, 0.8315, 0.0522)]),
];

fn published(task: &str, simulations: i64) -> Option<(f64, f64)> {
    PUBLISHED.iter().find(|(t, _)| *t == task)?.1.iter().find(|(n, _, _)| *n == simulations).map(|&(_, m, s)| (m, s))
}

/// Mean and sample standard deviation (ddof = 1, as sbibm's tables).
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// The SBI runs under `dir` (one level down), sorted by task then budget.
fn runs(dir: &Path) -> Vec<(PathBuf, Summary)> {
    let mut found: Vec<(PathBuf, Summary)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|run| summary::read(&run).ok().map(|s| (run, s)))
        .filter(|(_, s)| s.sbi.is_some())
        .collect();
    let order = |t: &str| PUBLISHED.iter().position(|(p, _)| *p == t).unwrap_or(usize::MAX);
    found.sort_by_key(|(_, s)| {
        let r = s.sbi.as_ref().expect("filtered");
        (order(&r.task), r.task.clone(), r.simulations)
    });
    found
}

/// The section's blocks (table, notes, the posterior pictures), or None when `dir` holds no SBI run.
pub fn blocks(dir: &Path) -> Result<Option<Vec<Block>>> {
    let runs = runs(dir);
    if runs.is_empty() {
        return Ok(None);
    }
    let header = [
        "task", "simulations", "steps", "C2ST (mean ± sd)", "sbibm NPE C2ST", "NLL of true θ (nats, exact)", "analytic posterior's NLL", "reference",
        "observations × samples", "train s",
    ];
    let mut md = String::from(
        "## Simulation-based inference: neural posterior estimation on the SBI benchmark's tasks\n\n\
         q(θ | x) is a conditional neural spline flow (5 RQ-spline couplings of 10 bins on [-5, 5], MLP 50-50, ActNorm, LU \
         mixing; x z-scored by the training simulations and fed to every conditioner) trained by maximum likelihood on \
         (θ, x) pairs simulated in-process. At each reference observation x_o: C2ST, the benchmark's own metric (an MLP \
         with two hidden layers of 10·D ReLU units tells q's samples from reference posterior samples; mean held-out \
         accuracy over 5 folds; 0.5 is perfect), and the NLL of the true θ_o under q (exact: q is a flow). The C2ST column \
         gives the mean ± sd over observations, like sbibm's. Reference posteriors: Gaussian linear analytic, two moons \
         by exact inversion of the simulator, SLCP by MCMC (200 random-walk Metropolis chains from θ_o with random sign \
         flips of θ3, θ4; sbibm uses SIR with a flow and rejection). Observations are relaxflow's own seeded draws from \
         the prior and simulator (sbibm ships 10 fixed ones), and training has a fixed step count per budget rather \
         than sbibm's early stopping on held-out simulations, so compare trends and magnitudes, not the third digit.\n\n",
    );
    md += &format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for (_, s) in &runs {
        let r = s.sbi.as_ref().expect("filtered");
        let (m, sd) = mean_sd(&r.c2st_per_observation);
        md += &format!(
            "| {} | {} | {} | {m:.3} ± {sd:.3} | {} | {:.3} | {} | {} | {} × {} | {:.0} |\n",
            r.task,
            r.simulations,
            s.steps,
            published(&r.task, r.simulations).map_or("-".into(), |(m, s)| format!("{m:.3} ± {s:.3}")),
            r.nll_true_theta,
            r.reference_nll_true_theta.map_or("-".into(), |v| format!("{v:.3}")),
            r.reference,
            r.observations,
            r.samples,
            s.train_time_s,
        );
    }
    let mut blocks = vec![Block::Markdown(md)];
    // One picture per task, at its largest budget: reference | q at the first observation.
    for (i, (run, s)) in runs.iter().enumerate() {
        let r = s.sbi.as_ref().expect("filtered");
        let last = runs.get(i + 1).is_none_or(|(_, n)| n.sbi.as_ref().expect("filtered").task != r.task);
        if last && run.join("posterior.png").exists() {
            blocks.push(Block::Image {
                path: run.join("posterior.png"),
                caption: format!("{} at {} simulations, first observation: reference posterior samples | q(θ | x_o) samples (θ1, θ2)", r.task, r.simulations),
            });
        }
    }
    Ok(Some(blocks))
}

/// `sbi-benchmark.md` and `.ipynb` in `out` from the SBI runs under `dir`.
pub fn report(dir: &Path, out: &Path) -> Result<(PathBuf, PathBuf)> {
    let Some(blocks) = blocks(dir)? else {
        bail!("{}: no run folder with an `sbi` section in its summary.json (train them first: make sbi)", dir.display());
    };
    notebook::write(&blocks, out, "sbi-benchmark")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_numbers_are_found_by_task_and_budget() {
        assert_eq!(published("two_moons", 10_000), Some((0.6064, 0.0394)));
        assert_eq!(published("slcp", 1_000), Some((0.9752, 0.0125)));
        assert_eq!(published("two_moons", 5_000), None);
        let (m, s) = mean_sd(&[0.5, 0.7]);
        assert!((m - 0.6).abs() < 1e-12 && (s - 0.02f64.sqrt()).abs() < 1e-12);
    }
}
