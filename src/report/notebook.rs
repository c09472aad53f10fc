//! A document written twice from one list of blocks: markdown with images beside it, and a Jupyter notebook
//! (nbformat 4.5) whose markdown cells carry their images as base64 attachments, so the .ipynb is self-contained.
use anyhow::{Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// One piece of the document.
pub enum Block {
    /// Markdown text (one notebook cell).
    Markdown(String),
    /// A PNG file with a caption (one notebook cell with the image attached, and the SVG of the same plot beside it
    /// when there is one: `NAME.svg` next to `NAME.png`).
    Image { path: PathBuf, caption: String },
}

/// A file name safe for attachments and the image folder: the source path's components joined by `-`.
fn image_name(path: &Path, index: usize) -> String {
    let stem: String = path
        .components()
        .rev()
        .filter(|c| !c.as_os_str().to_string_lossy().starts_with('.'))
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .collect();
    format!("{index:02}-{stem}")
}

fn source_lines(text: &str) -> Value {
    let lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    json!(lines)
}

/// Writes `<out_dir>/<stem>.md` (images copied into `<stem>-files/`) and `<out_dir>/<stem>.ipynb`.
/// Returns the two paths.
pub fn write(blocks: &[Block], out_dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
    let files = out_dir.join(format!("{stem}-files"));
    // Images of an earlier report would linger beside the new one.
    if files.is_dir() {
        std::fs::remove_dir_all(&files).with_context(|| format!("clearing {}", files.display()))?;
    }
    std::fs::create_dir_all(&files).with_context(|| format!("creating {}", files.display()))?;
    let mut md = String::new();
    let mut cells = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let id = format!("cell-{i:03}");
        match block {
            Block::Markdown(text) => {
                md += text;
                md += "\n\n";
                cells.push(json!({ "cell_type": "markdown", "id": id, "metadata": {}, "source": source_lines(text) }));
            }
            Block::Image { path, caption } => {
                let bytes = std::fs::read(path).with_context(|| format!("reading image {}", path.display()))?;
                anyhow::ensure!(bytes.starts_with(b"\x89PNG"), "{}: not a PNG file", path.display());
                let name = image_name(path, i);
                crate::runner::files::write_atomic(&files.join(&name), &bytes)?;
                md += &format!("![{caption}]({stem}-files/{name})\n\n*{caption}*\n\n");
                let mut bundle = json!({ "image/png": base64::engine::general_purpose::STANDARD.encode(&bytes) });
                let svg = path.with_extension("svg");
                if svg.is_file() {
                    let text = std::fs::read_to_string(&svg).with_context(|| format!("reading {}", svg.display()))?;
                    bundle["image/svg+xml"] = json!(text);
                }
                cells.push(json!({
                    "cell_type": "markdown", "id": id, "metadata": {},
                    "source": source_lines(&format!("![{caption}](attachment:{name})\n\n*{caption}*")),
                    "attachments": { name: bundle },
                }));
            }
        }
    }
    let nb = json!({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": { "language_info": { "name": "python" }, "relaxflow": { "generated_by": "relaxflow report" } },
        "cells": cells,
    });
    let (md_path, nb_path) = (out_dir.join(format!("{stem}.md")), out_dir.join(format!("{stem}.ipynb")));
    crate::runner::files::write_atomic(&md_path, md.as_bytes())?;
    crate::runner::files::write_atomic(&nb_path, (serde_json::to_string_pretty(&nb)? + "\n").as_bytes())?;
    Ok((md_path, nb_path))
}

/// Checks a notebook file against the parts of nbformat 4 that Jupyter needs to open it, and that every
/// `attachment:NAME` a cell references is attached as a decodable PNG. Returns the number of embedded images.
pub fn validate(path: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let nb: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    anyhow::ensure!(nb["nbformat"] == 4 && nb["nbformat_minor"].as_i64().is_some_and(|m| m >= 5), "nbformat 4.5 expected");
    anyhow::ensure!(nb["metadata"].is_object(), "notebook metadata missing");
    let cells = nb["cells"].as_array().context("cells missing")?;
    let mut images = 0;
    let mut ids = std::collections::HashSet::new();
    for (i, c) in cells.iter().enumerate() {
        let kind = c["cell_type"].as_str().with_context(|| format!("cell {i}: no cell_type"))?;
        anyhow::ensure!(["markdown", "code", "raw"].contains(&kind), "cell {i}: cell_type {kind}");
        let id = c["id"].as_str().with_context(|| format!("cell {i}: no id"))?;
        anyhow::ensure!(ids.insert(id.to_string()), "cell {i}: duplicate id {id}");
        anyhow::ensure!(c["metadata"].is_object(), "cell {i}: metadata missing");
        let source: String = match &c["source"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts.iter().map(|p| p.as_str().unwrap_or_default()).collect(),
            _ => anyhow::bail!("cell {i}: source missing"),
        };
        for part in source.split("(attachment:").skip(1) {
            let name = part.split(')').next().unwrap_or_default();
            let data = c["attachments"][name]["image/png"].as_str().with_context(|| format!("cell {i}: attachment {name} missing"))?;
            let png = base64::engine::general_purpose::STANDARD.decode(data).with_context(|| format!("cell {i}: {name} is not base64"))?;
            anyhow::ensure!(png.starts_with(b"\x89PNG"), "cell {i}: {name} is not a PNG");
            images += 1;
        }
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_notebook_carry_the_same_images() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        crate::plot::save_png(&crate::plot::Canvas::from_pixel(4, 3, image::Rgb([255, 0, 0])), &png).unwrap();
        let blocks = vec![Block::Markdown("# title\nline two".into()), Block::Image { path: png, caption: "a picture".into() }];
        let (md, nb) = write(&blocks, dir.path(), "doc").unwrap();
        let md = std::fs::read_to_string(md).unwrap();
        assert!(md.starts_with("# title\nline two") && md.contains("](doc-files/01-"), "{md}");
        assert_eq!(validate(&nb).unwrap(), 1);
        assert!(!std::fs::read_to_string(&nb).unwrap().contains("image/svg+xml"), "no SVG beside a.png");
        // A plot's SVG beside its PNG travels in the same attachment.
        std::fs::write(dir.path().join("a.svg"), "<svg>plot</svg>").unwrap();
        let (_, nb2) = write(&blocks, dir.path(), "doc2").unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&nb2).unwrap()).unwrap();
        let att = &v["cells"][1]["attachments"];
        let bundle = att.as_object().unwrap().values().next().unwrap();
        assert_eq!(bundle["image/svg+xml"], "<svg>plot</svg>");
        assert_eq!(validate(&nb2).unwrap(), 1);
        // A reference without its attachment is caught.
        let broken = std::fs::read_to_string(&nb).unwrap().replace("\"image/png\"", "\"image/gif\"");
        std::fs::write(&nb, broken).unwrap();
        assert!(validate(&nb).is_err());
    }
}
