//! Contact sheet: every run's final picture (2D: data | samples | density; images: sample grids), shrunk to one
//! width and tiled with the experiment's name above it, so runs are compared at a glance.
use crate::plot::{self, canvas, Canvas};
use crate::runner::summary;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The picture a finished run drew at its last step.
pub fn final_picture(run: &Path) -> Result<PathBuf> {
    let s = summary::read(run)?;
    let path = run.join("samples").join(format!("step-{:06}.png", s.steps));
    anyhow::ensure!(path.exists(), "{}: no final picture", path.display());
    Ok(path)
}

/// Tiles of `tile_width` pixels, `cols` per row, each titled with the run's experiment name (and its folder name
/// when two runs share an experiment).
pub fn sheet(runs: &[PathBuf], tile_width: u32, cols: usize) -> Result<Canvas> {
    anyhow::ensure!(!runs.is_empty(), "no runs for the contact sheet");
    let mut tiles = Vec::new();
    for run in runs {
        let s = summary::read(run)?;
        let pic = plot::read_png(&final_picture(run)?).with_context(|| format!("{}: reading its final picture", run.display()))?;
        let twin = runs.iter().filter(|r| summary::read(r).is_ok_and(|t| t.experiment == s.experiment)).count() > 1;
        let title = if twin { format!("{} {}", s.experiment, run.file_name().unwrap_or_default().to_string_lossy()) } else { s.experiment.clone() };
        tiles.push((title, canvas::shrunk_to_width(&pic, tile_width)));
    }
    let cols = cols.max(1);
    let rows = tiles
        .chunks(cols)
        .map(|chunk| plot::titled_row(&chunk.iter().map(|(t, c)| (t.as_str(), c.clone())).collect::<Vec<_>>()))
        .collect::<Result<Vec<Canvas>>>()?;
    Ok(canvas::stacked(&rows))
}
