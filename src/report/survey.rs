//! `relaxflow report`: the survey's comparison from one folder of finished runs and sweeps (what `make reproduce`
//! writes), as `notebooks-export/survey-comparison.md` and `.ipynb`. Reads run folders only (summary.json,
//! metrics.jsonl, PNGs), never models.
//!
//! Layout read: `DIR/runs/<experiment>/` (run folders, classifiers included), `DIR/sweeps/<name>/` (sweep folders),
//! `DIR/ablations.json` (which sweep is compared with which baseline), `DIR/commands.sh` (the commands that made them).
use super::notebook::{self, Block};
use super::sweep as sweep_report;
use crate::plot::{Figure, LinePlot};
use crate::runner::summary::{self, Summary};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One noise ablation: a sweep, the baseline it is read against, and how to label it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ablation {
    pub title: String,
    /// Sweep folders, relative to DIR.
    pub sweep: PathBuf,
    #[serde(default)]
    pub baseline: Option<PathBuf>,
    pub xlabel: String,
}

/// The order families appear in: the survey's (`Family`'s order), unknown names last.
fn family_rank(f: &str) -> usize {
    crate::model::Family::parse(f).map_or(crate::model::Family::ALL.len(), |f| f as usize)
}

/// Published test numbers (REFERENCES.md) for a run, by model kind and dataset.
fn published(s: &Summary) -> String {
    let iwae = s.estimator.get("train_objective").and_then(|o| o.as_str()) == Some("iwae");
    match (s.dataset.as_str(), s.model_kind.as_str(), s.bits_per_dim.is_some()) {
        ("mnist", "realnvp", true) => "RealNVP 1.06".into(),
        // A max-pool SurVAE is a `glow` with surjections: not Glow.
        ("mnist", "glow", true) if s.family == "flow" => "Glow 1.05".into(),
        ("mnist", "maf", true) => "MAF 1.89".into(),
        ("mnist", "diffflow", true) => "DiffFlow 0.93".into(),
        ("mnist", "cnf", true) => "FFJORD 0.99".into(),
        ("mnist", "vae", false) if iwae => "IWAE(50) 87.1 nats".into(),
        ("mnist", "vae", false) => "VAE 89.9 nats".into(),
        // CIFAR-10 at 32x32 only: a centre crop is a different task (fewer, and more central, pixels).
        ("cifar10", _, true) if s.dim != 3 * 32 * 32 => "- (a crop)".into(),
        ("cifar10", "realnvp", true) => "RealNVP 3.49".into(),
        ("cifar10", "glow", true) if s.family == "flow" => "Glow 3.35".into(),
        ("cifar10", "ddpm", true) => "DDPM ≤ 3.70 (VLB)".into(),
        ("cifar10", "score", true) => "score SDE 2.99 (PF-ODE, VP)".into(),
        ("cifar10", "diffflow", true) => "DiffFlow 3.04".into(),
        ("cifar10", "cnf", true) => "FFJORD 3.40".into(),
        _ => "-".into(),
    }
}

fn f4(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.4}"))
}

/// Finished generative runs (family != classifier) and classifier summaries under `DIR/runs`.
fn load_runs(dir: &Path) -> Result<(Vec<(PathBuf, Summary)>, Vec<(PathBuf, serde_json::Value)>)> {
    let root = dir.join("runs");
    let mut runs = Vec::new();
    let mut classifiers = Vec::new();
    let Ok(entries) = std::fs::read_dir(&root) else { return Ok((runs, classifiers)) };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("summary.json").exists()).collect();
    dirs.sort();
    for run in dirs {
        let text = std::fs::read_to_string(run.join("summary.json")).with_context(|| format!("reading {}/summary.json", run.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: malformed summary", run.display()))?;
        if v["family"] == "classifier" {
            classifiers.push((run, v));
        } else {
            let s = serde_json::from_value(v).with_context(|| format!("{}: malformed summary", run.display()))?;
            runs.push((run, s));
        }
    }
    Ok((runs, classifiers))
}

const TABLE_2D: [&str; 15] = [
    "family", "experiment", "params", "test NLL (nats)", "kind", "NLL - true entropy", "outside support", "modes covered",
    "steps", "train time (s)", "steps/s", "within tol. of best: step (s)", "ms / 1000 log p", "NFE / sample", "ms / 1000 samples",
];

fn row_2d(s: &Summary) -> Vec<String> {
    vec![
        s.family.clone(),
        s.experiment.clone(),
        s.params.to_string(),
        format!("{:.4} ± {:.4}", s.test_nll_nats, s.test_nll_stderr),
        s.nll_kind.clone(),
        f4(s.nll_gap_nats),
        f4(s.sample_outside_support),
        s.mode_coverage.as_ref().map_or("-".into(), |m| format!("{}/{}", m.covered, m.modes)),
        s.steps.to_string(),
        format!("{:.1}", s.train_time_s),
        format!("{:.1}", s.steps_per_s),
        s.convergence.as_ref().map_or("-".into(), |c| format!("{} ({:.1})", c.steps, c.wall_time_s)),
        s.log_prob_ms_per_1000.map_or("-".into(), |m| format!("{m:.2}")),
        s.nfe_per_sample.to_string(),
        format!("{:.2}", s.sample_ms_per_1000),
    ]
}

fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut md = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for r in rows {
        md += &format!("| {} |\n", r.join(" | "));
    }
    md
}

/// How each likelihood was computed (solver, divergence estimator, bound terms...), as the runs recorded it.
fn estimators(runs: &[&(PathBuf, Summary)]) -> String {
    let lines: Vec<String> = runs
        .iter()
        .filter(|(_, s)| !s.estimator.is_null())
        .map(|(_, s)| format!("- `{}` ({}, {} test points): `{}`", s.experiment, s.nll_kind, s.test_n, s.estimator))
        .collect();
    if lines.is_empty() { String::new() } else { format!("\nHow each likelihood was computed:\n\n{}\n", lines.join("\n")) }
}

/// Models trained through an ODE solve (CNFs): function evaluations per training step, forward and backward,
/// beside the gradient method and tolerance: the family's training-speed story, which steps/s alone hides.
fn ode_training_cost(runs: &[&(PathBuf, Summary)]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .filter_map(|(_, s)| {
            let t = s.estimator.get("training")?;
            let num = |k: &str| t.get(k).and_then(|v| v.as_f64()).map_or("-".to_string(), |v| format!("{v:.1}"));
            Some(vec![
                s.experiment.clone(),
                t.get("gradient").and_then(|g| g.as_str()).unwrap_or("-").to_string(),
                t.get("rtol").map_or("-".into(), |r| r.to_string()),
                num("nfe_forward_per_step"),
                num("nfe_backward_per_step"),
                format!("{:.1}", s.steps_per_s),
                s.estimator.get("nfe_last_evaluation").map_or("-".into(), |n| n.to_string()),
            ])
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "\nTraining through the ODE (mean function evaluations per step over the steps its last process trained; backprop has no backward solve, it reverses each forward evaluation once):\n\n{}",
        md_table(&["experiment", "gradient", "train rtol", "NFE forward / step", "NFE backward / step", "steps/s", "NFE of one log p"], &rows)
    )
}

/// Latent-variable runs (VAEs): active units, the KL, and the ELBO / IWAE(k) bounds beside the NLL estimate, with
/// how the run was trained against posterior collapse. A VAE with no active unit is a Gaussian in disguise, so a
/// reader must see it before reading its NLL as the family's expressivity.
fn latent_diagnostics(runs: &[&(PathBuf, Summary)]) -> String {
    let mut rows = Vec::new();
    for (_, s) in runs {
        let Some(d) = s.diagnostics.as_ref().filter(|d| d.get("collapse").is_some()) else { continue };
        let c = &d["collapse"];
        let bound = |k: i64| {
            d["bounds_nats"].as_array().and_then(|b| b.iter().find(|x| x["k"] == k)).and_then(|x| x["mean_log_p_lower_bound"].as_f64())
        };
        let e = &s.estimator;
        let training = match (e["train_objective"].as_str(), e["kl_warmup"].as_i64().unwrap_or(0), e["free_bits"].as_f64().unwrap_or(0.0)) {
            (Some("iwae"), _, _) => format!("IWAE(k = {})", e["train_k"]),
            (_, 0, fb) if fb == 0.0 => "ELBO (no remedy)".to_string(),
            (_, w, fb) => {
                let mut parts = vec!["ELBO".to_string()];
                if w > 0 {
                    parts.push(format!("KL warm-up over {w} steps"));
                }
                if fb > 0.0 {
                    parts.push(format!("free bits {fb} nats/unit"));
                }
                parts.join(", ")
            }
        };
        rows.push(vec![
            s.experiment.clone(),
            format!("{} / {}", c["active_units"], c["latent"]),
            c["kl_total_nats"].as_f64().map_or("-".into(), |v| format!("{v:.3}")),
            bound(1).map_or("-".into(), |v| format!("{:.4}", -v)),
            bound(5).map_or("-".into(), |v| format!("{:.4}", -v)),
            bound(50).map_or("-".into(), |v| format!("{:.4}", -v)),
            format!("{:.4} ({})", s.test_nll_nats, s.nll_kind),
            training,
        ]);
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "\nLatent-variable models: active units (Var_x E_q[z_u] > 0.01, Burda et al.), KL(q || prior) in nats, the bounds -ELBO ≥ -IWAE(5) ≥ -IWAE(50) on the same test points, the reported NLL, and how collapse was avoided:\n\n{}",
        md_table(&["experiment", "active units", "KL", "-ELBO", "-IWAE(5)", "-IWAE(50)", "NLL", "training"], &rows)
    )
}

/// Test NLL at each periodic evaluation against training wall time, one line per run; time on a log axis when the
/// runs' times span decades.
fn speed_plot(runs: &[&(PathBuf, Summary)], title: &str) -> Option<LinePlot> {
    let mut series: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    for (run, s) in runs {
        let lines = crate::runner::metrics::read(&run.join("metrics.jsonl")).ok()?;
        let (t, nll): (Vec<f64>, Vec<f64>) =
            lines.iter().filter_map(|v| Some((v.get("wall_time_s")?.as_f64()?, v.get("test_nll")?.as_f64()?))).unzip();
        if t.len() >= 2 {
            series.push((format!("{} ({})", s.experiment, s.nll_kind), t, nll));
        }
    }
    if series.is_empty() {
        return None;
    }
    let plot = LinePlot::new(title, "training time (s), evaluation excluded", "test NLL (nats)", (760, 460)).log_x_if_wide();
    Some(series.iter().fold(plot, |p, (n, x, y)| p.series(n, x, y)))
}

/// The section-7 table on one 2D dataset, its sampler-settings table and its training-speed plot.
fn section_2d(dataset: &str, runs: &[&(PathBuf, Summary)], build: &Path, blocks: &mut Vec<Block>) -> Result<()> {
    let entropy = runs.iter().find_map(|(_, s)| s.true_entropy_nats);
    let region = runs.iter().find_map(|(_, s)| s.support_region.clone());
    let mut text = format!("## The survey's section 7 comparison, measured: `{dataset}`\n\n");
    if let Some(h) = entropy {
        text += &format!("True entropy of the data: {h:.4} nats, so NLL - entropy is the KL divergence from the data to the model (≥ 0 up to noise; for a bound it is an upper bound on that KL).\n");
    }
    if let Some(r) = region {
        text += &format!("\"Outside support\": fraction of the final samples outside the data's {r}.\n");
    }
    text += "\"within tol. of best\": first periodic evaluation within 0.05 nats of the run's best one (training steps, and training seconds in brackets).\n\n";
    text += &md_table(&TABLE_2D, &runs.iter().map(|(_, s)| row_2d(s)).collect::<Vec<_>>());
    text += &estimators(runs);
    text += &ode_training_cost(runs);
    text += &latent_diagnostics(runs);
    blocks.push(Block::Markdown(text));
    let with_settings: Vec<_> = runs.iter().filter(|(_, s)| s.sampling.len() > 1).collect();
    if !with_settings.is_empty() {
        let rows: Vec<Vec<String>> = with_settings
            .iter()
            .flat_map(|(_, s)| {
                s.sampling.iter().map(move |r| {
                    vec![
                        s.experiment.clone(),
                        r.setting.clone(),
                        r.nfe_per_sample.to_string(),
                        format!("{:.2}", r.ms_per_1000),
                        r.sample_mmd.map_or("-".into(), |m| format!("{m:.5}")),
                        f4(r.outside_support),
                    ]
                })
            })
            .collect();
        let text = format!(
            "### Sampling efficiency at each sampler setting (`{dataset}`)\n\n{}",
            md_table(&["experiment", "sampler setting", "NFE / sample", "ms / 1000 samples", "MMD² to test data", "outside support"], &rows)
        );
        blocks.push(Block::Markdown(text));
    }
    if let Some(c) = speed_plot(runs, &format!("training speed: {dataset}")) {
        let path = build.join(format!("speed-{dataset}.png"));
        c.save(&path)?;
        blocks.push(Block::Image { path, caption: format!("Training speed on {dataset}: test NLL at each periodic evaluation against training wall time (evaluation time excluded)") });
    }
    let pics: Vec<PathBuf> = runs.iter().map(|(r, _)| r.clone()).filter(|r| super::contact::final_picture(r).is_ok()).collect();
    if !pics.is_empty() {
        let path = build.join(format!("contact-{dataset}.png"));
        crate::plot::save_png(&super::contact::sheet(&pics, 420, 3)?, &path)?;
        blocks.push(Block::Image { path, caption: format!("Final samples and densities on {dataset} (data | samples | density or bound)") });
    }
    Ok(())
}

/// Image datasets: bits/dim (or nats for binarized data) with kinds, beside the published numbers, and sample quality.
fn section_images(dataset: &str, runs: &[&(PathBuf, Summary)], blocks: &mut Vec<Block>) {
    let header = [
        "experiment", "family", "test NLL", "unit", "kind", "test images", "steps", "train time (s)", "params", "Fréchet distance (floor)",
        "classes covered", "published",
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|(_, s)| {
            let (value, unit) = match s.bits_per_dim {
                Some(b) => (format!("{b:.4}"), "bits/dim"),
                None => (format!("{:.2}", s.test_nll_nats), "nats"),
            };
            let iq = s.image_quality.as_ref();
            let fd = iq.and_then(|q| Some(format!("{:.2} ({:.2}), n = {}", q["frechet_distance"].as_f64()?, q["frechet_floor"].as_f64()?, q["n"])));
            let cov = iq.and_then(|q| Some(format!("{}/10", q["class_coverage"].as_u64()?)));
            vec![
                s.experiment.clone(),
                s.family.clone(),
                value,
                unit.into(),
                s.nll_kind.clone(),
                s.test_n.to_string(),
                s.steps.to_string(),
                format!("{:.1}", s.train_time_s),
                s.params.to_string(),
                fd.unwrap_or_else(|| "-".into()),
                cov.unwrap_or_else(|| "-".into()),
                published(s),
            ]
        })
        .collect();
    let mut text = format!("## `{dataset}`: test likelihood with its kind, beside the published numbers\n\n");
    text += "bits/dim = NLL / (D ln 2) + 8 for pixels dequantized as (pixel + u)/256 on [0,1]^D; binarized images are in nats \
             (a different task: never compare the two columns). Published numbers come from REFERENCES.md and were reached \
             with far larger budgets than a CPU profile; the steps and training time are given beside ours.\n\n";
    text += "Fréchet distance: between Gaussians fitted to the penultimate features of relaxflow's own classifier of the \
             dataset (mnist-classifier / fashion-classifier: 128-d; cifar10-classifier: 256-d, trained at the runs' image size) \
             for n model samples and n test images; **not FID** (no Inception network), not comparable with \
             published FIDs. The floor is the same distance between n test and n training images (the estimate's bias at this n). \
             Classes covered: classes whose share of the samples is at least a quarter of their test-set share.\n\n";
    text += &md_table(&header, &rows);
    text += &ode_training_cost(runs);
    blocks.push(Block::Markdown(text));
}

/// The noise ablation of one sweep against its baseline: table, plot and the numbers that answer the question.
fn section_ablation(dir: &Path, a: &Ablation, build: &Path, blocks: &mut Vec<Block>, index: usize) -> Result<()> {
    let (sw, points) = sweep_report::load(&dir.join(&a.sweep))?;
    // The baseline is a one-point sweep (over seeds), labelled by what it is.
    let base = match &a.baseline {
        Some(b) => {
            let (bsw, bpoints) = sweep_report::load(&dir.join(b))?;
            let what = if bsw.fixed.is_empty() { bsw.experiment.clone() } else { bsw.fixed.join(" ").replace('"', "") };
            bpoints.into_iter().next().map(|p| sweep_report::PointRuns { label: format!("baseline: {what}"), ..p })
        }
        None => None,
    };
    let mut text = format!("### {}\n\nSwept `{}` over {} seed(s) each", a.title, sw.axes.iter().map(|x| x.key.as_str()).collect::<Vec<_>>().join(", "), sw.seeds.len());
    if let Some(b) = &base {
        text += &format!("; baseline: {} ({} seed(s))", b.runs.first().map_or("-".into(), |(_, s)| s.experiment.clone()), b.runs.len());
    }
    text += ". Mean ± standard deviation over seeds.\n\n";
    let all: Vec<&sweep_report::PointRuns> = base.iter().chain(points.iter()).collect();
    let (md, _) = sweep_report::table(&all);
    text += &md;
    if let Some(b) = &base {
        text += &differences(&points, b);
    }
    blocks.push(Block::Markdown(text));
    let path = build.join(format!("ablation-{index}.png"));
    sweep_report::plot(&a.title, &a.xlabel, &points, base.as_ref()).save(&path)?;
    blocks.push(Block::Image { path, caption: format!("{}: expressivity against the noise level (error bars: ± sd over seeds; dashed: baseline)", a.title) });
    Ok(())
}

/// Each point's difference from the baseline, in NLL gap (or NLL) and in mass outside the support, with the two
/// standard deviations combined: the numbers the §7.5 question is answered with.
fn differences(points: &[sweep_report::PointRuns], base: &sweep_report::PointRuns) -> String {
    let has_gap = base.gap().is_some();
    let metric = |p: &sweep_report::PointRuns| if has_gap { p.gap() } else { p.nll() };
    let diff = |a: Option<sweep_report::Stat>, b: Option<sweep_report::Stat>, digits: usize| match (a, b) {
        (Some(a), Some(b)) => {
            let sd = (a.sd.powi(2) + b.sd.powi(2)).sqrt();
            let d = a.mean - b.mean;
            let mark = if sd.is_finite() && d.abs() > 2.0 * sd { " (beyond 2 sd)" } else { "" };
            if sd.is_finite() { format!("{d:+.digits$} ± {sd:.digits$}{mark}") } else { format!("{d:+.digits$}") }
        }
        _ => "-".into(),
    };
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| vec![p.label.clone(), diff(metric(p), metric(base), 4), diff(p.outside(), base.outside(), 4)])
        .collect();
    let what = if has_gap { "NLL - true entropy" } else { "test NLL" };
    format!(
        "\nDifference from the baseline (negative: the noisy model is closer to the truth / smears less):\n\n{}",
        md_table(&["setting", &format!("Δ {what} (nats)"), "Δ outside support"], &rows)
    )
}

fn versions_block(runs: &[(PathBuf, Summary)], dir: &Path) -> String {
    let v = summary::versions();
    let mut text = "## How these numbers were made\n\n".to_string();
    text += &format!(
        "relaxflow {} (tch {}, libtorch {}), report written {} from `{}`.\n\n",
        v.relaxflow,
        v.tch,
        v.libtorch,
        chrono::Local::now().format("%Y-%m-%d %H:%M"),
        dir.display()
    );
    let mut seen = BTreeMap::new();
    for (_, s) in runs {
        *seen.entry((s.git_commit.clone(), s.device.clone(), s.threads)).or_insert(0usize) += 1;
    }
    for ((commit, device, threads), n) in seen {
        text += &format!("- {n} run(s) at commit `{commit}` on {device} with {threads} thread(s)\n");
    }
    if let Ok(cmds) = std::fs::read_to_string(dir.join("commands.sh")) {
        text += &format!("\nThe exact commands, in order:\n\n```sh\n{}```\n", cmds);
    }
    text
}

/// Writes `<out>/survey-comparison.{md,ipynb}` from the runs and sweeps under `dir`; returns their paths.
pub fn report(dir: &Path, out: &Path) -> Result<(PathBuf, PathBuf)> {
    anyhow::ensure!(dir.is_dir(), "{}: no such folder (run `make reproduce` first, or name the folder holding runs/ and sweeps/)", dir.display());
    let (mut runs, classifiers) = load_runs(dir)?;
    let ablations: Vec<Ablation> = match std::fs::read_to_string(dir.join("ablations.json")) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("{}: malformed ablations.json", dir.display()))?,
        Err(_) => Vec::new(),
    };
    anyhow::ensure!(!runs.is_empty() || !ablations.is_empty(), "{}: no finished runs under runs/ and no ablations.json", dir.display());
    runs.sort_by(|a, b| (family_rank(&a.1.family), &a.1.experiment).cmp(&(family_rank(&b.1.family), &b.1.experiment)));
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let build = out.join(".survey-comparison-build");
    std::fs::create_dir_all(&build).with_context(|| format!("creating {}", build.display()))?;
    let mut blocks = vec![Block::Markdown(format!(
        "# Normalizing flows and the models that relax them: the survey's comparison, measured\n\n\
         Every number below was read from a run folder's `summary.json` under `{}` (written by the training runs \
         themselves). Kinds of likelihood: **exact** (change of variables, or the PF-ODE with the exact divergence), \
         **bound** (an upper bound on the NLL: ELBO, IWBO(k), DDPM's VLB, an SNF's path ELBO) and **estimate** \
         (Hutchinson traces, importance sampling, a Monte-Carlo normaliser). A bound or an estimate is never an exact \
         NLL; compare kinds before numbers.",
        dir.display()
    ))];
    let mut datasets: Vec<String> = runs.iter().map(|(_, s)| s.dataset.clone()).collect();
    datasets.sort();
    datasets.dedup();
    let order = |d: &String| match d.as_str() {
        "checkerboard" => 0,
        "rings" => 1,
        "mnist" => 5,
        "fashion-mnist" => 6,
        "cifar10" => 7,
        _ => 2,
    };
    datasets.sort_by_key(order);
    for d in &datasets {
        let these: Vec<&(PathBuf, Summary)> = runs.iter().filter(|(_, s)| &s.dataset == d).collect();
        if d == "doublewell" {
            continue;
        }
        if these.iter().any(|(_, s)| s.dim > 16) {
            section_images(d, &these, &mut blocks);
        } else {
            section_2d(d, &these, &build, &mut blocks)?;
        }
    }
    if !classifiers.is_empty() {
        let rows: Vec<Vec<String>> = classifiers
            .iter()
            .map(|(_, v)| vec![v["experiment"].as_str().unwrap_or("?").into(), v["dataset"].as_str().unwrap_or("?").into(), f4(v["test_accuracy"].as_f64()), v["steps"].to_string()])
            .collect();
        blocks.push(Block::Markdown(format!("### The classifiers that score image samples\n\n{}", md_table(&["experiment", "dataset", "test accuracy", "steps"], &rows))));
    }
    // Figure 1: a flow with a Gaussian base against a target with sharp edges.
    let sharp = |s: &Summary| s.family == crate::model::Family::Flow.as_str() && ["checkerboard", "rings"].contains(&s.dataset.as_str());
    let figure1 = runs.iter().find(|(_, s)| sharp(s) && s.model_kind == "realnvp").or_else(|| runs.iter().find(|(_, s)| sharp(s)));
    if let Some((run, s)) = figure1 {
        if let Ok(pic) = super::contact::final_picture(run) {
            blocks.push(Block::Markdown(format!(
                "## Figure 1 of the survey: smearing\n\nA bijective flow with a Gaussian base ({}) cannot map the connected Gaussian onto \
                 the {}'s separated pieces without leaving mass between them: {} of its samples fall outside the data's {} \
                 (the data: {}).",
                s.experiment,
                s.dataset,
                f4(s.sample_outside_support),
                s.support_region.clone().unwrap_or_else(|| "support".into()),
                if s.dataset == "checkerboard" { "0" } else { "0.01" }
            )));
            blocks.push(Block::Image { path: pic, caption: format!("{}: data | samples | density", s.experiment) });
        }
    }
    // Figure 3: the double well, a flow against an SNF.
    let wells: Vec<PathBuf> = runs.iter().filter(|(_, s)| s.dataset == "doublewell").map(|(r, _)| r.clone()).collect();
    if !wells.is_empty() {
        let path = build.join("double-well.png");
        let table = super::figure::double_well(&wells, &path)?;
        blocks.push(Block::Markdown(format!(
            "## Figure 3 of the survey: the double well\n\nSamples of each model beside exact samples, and the free energy along x1 \
             (raw and reweighted by the importance weights), in kT.\n\n{table}"
        )));
        blocks.push(Block::Image { path, caption: "Double well: samples and free-energy profiles".into() });
    }
    if let Some(sbi) = super::sbi_table::blocks(&dir.join("sbi"))? {
        blocks.extend(sbi);
    }
    if let Some(md) = super::snf_table::section(dir)? {
        blocks.push(Block::Markdown(md));
    }
    if !ablations.is_empty() {
        blocks.push(Block::Markdown(
            "## The role of stochasticity (survey §7.5)\n\nDoes the noise in SNFs and DiffFlow let them represent sharp boundaries? \
             Each model is trained at several noise levels (DiffFlow's diffusion coefficient g, where g → 0 is a deterministic \
             flow; an SNF's Metropolis / Langevin layers, where `none` is the same flow without them) and compared with a plain \
             flow of matched size. Expressivity is read as the NLL gap to the true entropy and the mass outside the support. \
             Note the kinds: a DiffFlow PF-ODE NLL is exact, an SNF's NLL with stochastic layers is a bound (its gap over-states \
             the KL), so a noisy SNF that beats the exact flow's gap beats it for certain, while a noisy SNF that trails it may \
             not really be worse."
                .into(),
        ));
        for (i, a) in ablations.iter().enumerate() {
            section_ablation(dir, a, &build, &mut blocks, i)?;
        }
    }
    let curves: Vec<&(PathBuf, Summary)> = runs.iter().filter(|(r, _)| r.join("metrics.jsonl").exists()).collect();
    if !curves.is_empty() {
        blocks.push(Block::Markdown("## Loss curves\n\nTraining loss (the family's own objective, not comparable across families) and periodic test NLL of every run.".into()));
        for (i, (r, s)) in curves.into_iter().enumerate() {
            // Drawn afresh from metrics.jsonl, so every curve has the same axes and fonts whatever drew the run's own.
            let path = build.join(format!("loss-{i:02}-{}.png", s.experiment));
            crate::runner::pictures::loss_plot(r)?.save(&path).with_context(|| format!("drawing the loss curves of {}", r.display()))?;
            blocks.push(Block::Image { path, caption: format!("{} ({}): loss and test NLL against steps", s.experiment, s.family) });
        }
    }
    blocks.push(Block::Markdown(versions_block(&runs, dir)));
    let written = notebook::write(&blocks, out, "survey-comparison")?;
    std::fs::remove_dir_all(&build).ok();
    Ok(written)
}
