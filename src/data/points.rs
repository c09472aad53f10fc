//! A user's own points: .npy (any float or integer dtype) or .csv (comma-separated, optional header), shape [N, D].
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// Loads an [N, D] array of points as f32 (at least 2 rows); errors name the file and what is wrong.
pub fn load_points(path: &Path) -> Result<Tensor> {
    let x = load_matrix(path)?;
    if x.size()[0] < 2 {
        bail!("{}: needs at least 2 rows, got {}", path.display(), x.size()[0]);
    }
    Ok(x)
}

/// Loads an [N, D] matrix (N ≥ 1, finite) as f32: points or the contexts of points.
pub fn load_matrix(path: &Path) -> Result<Tensor> {
    if !path.exists() {
        bail!("{}: data file not found", path.display());
    }
    let x = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => super::npy::read(path)?,
        Some("csv") => read_csv(path)?,
        _ => bail!("{}: unsupported data file (expected .npy or .csv)", path.display()),
    };
    if x.dim() != 2 {
        bail!("{}: expected a 2-D array [N, D] of points, got shape {:?}", path.display(), x.size());
    }
    if x.size()[0] < 1 {
        bail!("{}: holds no rows", path.display());
    }
    let x = x.to_kind(Kind::Double);
    let bad = x.isfinite().logical_not().any_dim(1, false).nonzero();
    if bad.size()[0] > 0 {
        bail!("{}: row {} (0-based) holds a NaN or infinite value", path.display(), bad.int64_value(&[0, 0]));
    }
    let x32 = x.to_kind(Kind::Float);
    if x32.isfinite().logical_not().any().int64_value(&[]) != 0 {
        bail!("{}: values beyond the range of f32 (|x| > 3.4e38)", path.display());
    }
    Ok(x32)
}

/// A header names columns: at least one field that is not a number at all (not even a malformed one like `1.2.3`).
fn looks_like_header(line: &str) -> bool {
    line.split(',').any(|v| {
        let v = v.trim().trim_matches('"');
        !v.is_empty() && v.chars().any(|c| c.is_alphabetic()) && v.parse::<f64>().is_err()
    })
}

/// Columns that hold one value only: a density on R^D is degenerate there (the NLL runs off to -inf and means
/// nothing), so they are refused rather than trained on.
pub fn check_not_constant(x: &Tensor, path: &Path) -> Result<()> {
    if x.size()[0] < 2 {
        return Ok(());
    }
    let (lo, hi) = (x.amin(0, false), x.amax(0, false));
    let constant: Vec<i64> = Vec::try_from(lo.eq_tensor(&hi).nonzero().view([-1]))?;
    if let Some(&c) = constant.first() {
        let v = lo.double_value(&[c]);
        bail!(
            "{}: column {c} (0-based) holds the single value {v} in every row: a density over it is degenerate (NLL -> -inf); drop the column{}",
            path.display(),
            if constant.len() > 1 { format!(" (constant columns: {constant:?})") } else { String::new() }
        );
    }
    Ok(())
}

/// Columns with few distinct values (integer codes, rounded measurements): a density there can grow without bound
/// and the NLL stops meaning anything; warns (it may be intended) with what to do.
pub fn warn_if_discrete(x: &Tensor, path: &Path) {
    let n = x.size()[0];
    if n < 500 {
        return;
    }
    for c in 0..x.size()[1] {
        let distinct = x.select(1, c).unique_dim(0, false, false, false).0.size()[0];
        if distinct <= 256 && distinct * 10 <= n {
            eprintln!(
                "warning: {}: column {c} takes only {distinct} distinct values in {n} rows: a continuous density on it can grow without bound (NLL -> -inf); add uniform noise of one quantisation step (dequantize) first",
                path.display()
            );
        }
    }
}

/// Comma-separated numbers; a first line that does not parse is taken as a header.
fn read_csv(path: &Path) -> Result<Tensor> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read (is it UTF-8 text?)", path.display()))?;
    // Spreadsheet exports often start with a UTF-8 byte-order mark; it is not part of the first value.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed: Result<Vec<f32>, _> = line.split(',').map(|v| v.trim().parse::<f32>()).collect();
        match parsed {
            Ok(row) => {
                if let Some(first) = rows.first() {
                    if first.len() != row.len() {
                        bail!("{}: line {} has {} columns, earlier lines have {}", path.display(), i + 1, row.len(), first.len());
                    }
                }
                rows.push(row);
            }
            Err(_) if i == 0 && looks_like_header(line) => continue,
            Err(e) => bail!("{}: line {}: not a number ({e}): `{line}`", path.display(), i + 1),
        }
    }
    if rows.is_empty() {
        bail!("{}: no rows of numbers", path.display());
    }
    let d = rows[0].len() as i64;
    let flat: Vec<f32> = rows.concat();
    Ok(Tensor::from_slice(&flat).view([-1, d]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_and_npy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("p.csv");
        std::fs::write(&csv, "x,y\n1.5,2\n-3,4e-1\n").unwrap();
        let x = load_points(&csv).unwrap();
        assert_eq!(x.size(), vec![2, 2]);
        assert!((x.double_value(&[1, 1]) - 0.4).abs() < 1e-6);
        let npy = dir.path().join("p.npy");
        x.to_kind(Kind::Double).write_npy(&npy).unwrap();
        assert!(load_points(&npy).unwrap().equal(&x));
    }

    #[test]
    fn bad_files_are_named_with_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let ragged = dir.path().join("r.csv");
        std::fs::write(&ragged, "1,2\n3,4,5\n").unwrap();
        let err = load_points(&ragged).unwrap_err().to_string();
        assert!(err.contains("r.csv") && err.contains("line 2 has 3 columns"), "{err}");
        let nan = dir.path().join("n.csv");
        std::fs::write(&nan, "1,2\nnan,4\n").unwrap();
        assert!(load_points(&nan).unwrap_err().to_string().contains("row 1 (0-based) holds a NaN"));
        let missing = dir.path().join("none.npy");
        assert!(load_points(&missing).unwrap_err().to_string().contains("none.npy: data file not found"));
        let garbage = dir.path().join("g.npy");
        std::fs::write(&garbage, "not numpy").unwrap();
        assert!(load_points(&garbage).unwrap_err().to_string().contains("g.npy: not a readable .npy file"));
        let one_d = dir.path().join("v.npy");
        Tensor::from_slice(&[1.0f32, 2.0, 3.0]).write_npy(&one_d).unwrap();
        assert!(load_points(&one_d).unwrap_err().to_string().contains("expected a 2-D array"));
    }

    #[test]
    fn a_byte_order_mark_keeps_the_first_row() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("bom.csv");
        std::fs::write(&csv, "\u{feff}1,2\n3,4\n5,7\n").unwrap();
        assert_eq!(load_points(&csv).unwrap().size(), vec![3, 2]);
        let csv = dir.path().join("bomh.csv");
        std::fs::write(&csv, "\u{feff}x,y\n3,4\n5,7\n").unwrap();
        assert_eq!(load_points(&csv).unwrap().size(), vec![2, 2]);
        // A first line that is a malformed number is an error, not a silently dropped header.
        let csv = dir.path().join("typo.csv");
        std::fs::write(&csv, "1.2.3,4\n3,4\n").unwrap();
        assert!(load_points(&csv).unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn constant_columns_are_refused() {
        let x = Tensor::from_slice(&[1.0f32, 5.0, 2.0, 5.0, 3.0, 5.0]).view([3, 2]);
        let err = check_not_constant(&x, Path::new("c.npy")).unwrap_err().to_string();
        assert!(err.contains("column 1") && err.contains("single value 5"), "{err}");
        assert!(check_not_constant(&x.narrow(1, 0, 1), Path::new("c.npy")).is_ok());
    }
}
