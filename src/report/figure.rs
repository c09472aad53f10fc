//! `relaxflow figure double-well RUN...`: the survey's Figure 3 from finished runs (reads samples.npy, reference.npy
//! and summary.json): each run's samples beside exact samples, and the free-energy profiles along x1.
use crate::plot::{self, canvas, Bounds, Canvas, Figure, LinePlot};
use crate::runner::summary;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn columns(path: &Path) -> Result<(Vec<f32>, Vec<f32>)> {
    let x = Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))?.to_kind(Kind::Float);
    anyhow::ensure!(x.dim() == 2 && x.size()[1] >= 2, "{}: expected [N, >=2] points", path.display());
    let col = |i| Vec::<f32>::try_from(x.select(1, i).contiguous()).unwrap_or_default();
    Ok((col(0), col(1)))
}

fn profile(diag: &Value, key: &str) -> Option<(Vec<f64>, Vec<f64>)> {
    let f = &diag["free_energy_profile"];
    let xs = f["bin_centres"].as_array()?;
    let ys = f[key].as_array()?;
    Some(xs.iter().zip(ys).filter_map(|(x, y)| Some((x.as_f64()?, y.as_f64()?))).unzip())
}

/// Draws the figure and returns the text table printed beside it.
pub fn double_well(runs: &[PathBuf], out: &Path) -> Result<String> {
    anyhow::ensure!(!runs.is_empty(), "name the runs to draw (e.g. an nf-doublewell and an snf-doublewell run)");
    let bounds = Bounds { xmin: -3.0, xmax: 3.0, ymin: -4.0, ymax: 4.0 };
    let mut panels = Vec::new();
    let mut curves: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut table = String::from(
        "| run | P(x1<0) raw | P(x1<0) reweighted | exact | F error raw (kT) | F error reweighted (kT) | ESS / 1000 |\n|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        let s = summary::read(run)?;
        let (xs, ys) = columns(&run.join("samples.npy"))?;
        panels.push((s.experiment.clone(), plot::scatter_density(&xs, &ys, bounds, 256)));
        let Some(d) = s.diagnostics.as_ref() else { continue };
        if curves.is_empty() {
            if let Some((x, y)) = profile(d, "exact_kT") {
                curves.push(("exact".into(), x, y));
            }
        }
        if let Some((x, y)) = profile(d, "reweighted_mean_kT") {
            curves.push((format!("{} reweighted", s.experiment), x, y));
        }
        if let Some((x, y)) = profile(d, "raw_mean_kT") {
            curves.push((format!("{} raw", s.experiment), x, y));
        }
        let g = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.3}"));
        table += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            s.experiment,
            g(&d["mode_weight_raw"]["mean"]),
            g(&d["mode_weight_reweighted"]["mean"]),
            g(&d["exact"]["mode_weight_x1_lt_0"]),
            g(&d["free_energy_profile"]["raw"]["combined_kT"]),
            g(&d["free_energy_profile"]["reweighted"]["combined_kT"]),
            g(&d["ess_per_1000"]["mean"]),
        );
    }
    let (xs, ys) = columns(&runs[0].join("reference.npy"))?;
    panels.push(("exact".into(), plot::scatter_density(&xs, &ys, bounds, 256)));
    let named = panels.iter().map(|(n, c)| Ok((n.as_str(), plot::panels::framed(c, bounds)?))).collect::<Result<Vec<(&str, Canvas)>>>()?;
    let row = plot::titled_row(&named)?;
    let profiles = curves.iter().fold(LinePlot::new("Free energy along x1", "x1", "free energy (kT)", (row.width().max(480), 380)), |p, (n, x, y)| p.series(n, x, y));
    plot::save_png(&canvas::stacked(&[row, profiles.png()?]), out)?;
    // The profiles alone as SVG beside the picture (the sample panels are pixels).
    let svg = out.with_extension("svg");
    crate::files::write_atomic(&svg, profiles.svg()?.as_bytes()).with_context(|| format!("writing {}", svg.display()))?;
    Ok(table)
}
