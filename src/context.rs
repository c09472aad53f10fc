//! The conditioning input c of a conditional model p(x | c): one type for the whole crate.
//!
//! A context is either a continuous vector per example ([B, K], f32) or a class index per example ([B], i64). A
//! model's [`ContextSpec`] says which, and how wide; [`ContextSpec::check`] turns every mismatch (a missing context, a
//! wrong width, a class out of range, a row count that does not match x) into an error naming what is wrong.
//! Networks never see the raw context: `nets::embed::ContextEncoder` turns it into features h(c) [B, E] once, and
//! every conditioner reads `[x_a, h(c)]`.
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// What a conditional model is conditioned on (recorded in run.json and summary.json).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContextSpec {
    /// A continuous vector of `width` numbers per example.
    Vector { width: i64 },
    /// A class index in 0..`classes` per example.
    Class { classes: i64 },
}

/// A batch of contexts, one row per example.
#[derive(Debug)]
pub enum Context {
    /// An unconditional model's (empty) context.
    None,
    /// [B, K] f32.
    Vector(Tensor),
    /// [B] i64.
    Class(Tensor),
}

impl Context {
    /// The rows `idx` (an i64 index tensor) of this context, on `device`.
    pub fn rows(&self, idx: &Tensor, device: Device) -> Context {
        match self {
            Context::None => Context::None,
            Context::Vector(c) => Context::Vector(c.index_select(0, &idx.to_device(c.device())).to_device(device)),
            Context::Class(c) => Context::Class(c.index_select(0, &idx.to_device(c.device())).to_device(device)),
        }
    }

    /// Rows `start..start + len`, on `device`.
    pub fn narrow(&self, start: i64, len: i64, device: Device) -> Context {
        match self {
            Context::None => Context::None,
            Context::Vector(c) => Context::Vector(c.narrow(0, start, len).to_device(device)),
            Context::Class(c) => Context::Class(c.narrow(0, start, len).to_device(device)),
        }
    }

    /// The same context on `device`.
    pub fn to_device(&self, device: Device) -> Context {
        match self {
            Context::None => Context::None,
            Context::Vector(c) => Context::Vector(c.to_device(device)),
            Context::Class(c) => Context::Class(c.to_device(device)),
        }
    }

    /// `n` rows: rows 0, 1, ... of this context, cycled (the contexts samples are drawn at).
    pub fn cycled(&self, n: i64) -> Context {
        match self.len() {
            None => Context::None,
            Some(m) => {
                let idx = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(m.max(1));
                let device = self.tensor().map_or(Device::Cpu, |t| t.device());
                self.rows(&idx, device)
            }
        }
    }

    /// Every row repeated `k` times in a block: row i at k·i .. k·i + k (one sample block per context row).
    pub fn repeat_rows(&self, k: i64) -> Context {
        match self {
            Context::None => Context::None,
            Context::Vector(c) => Context::Vector(c.repeat_interleave_self_int(k, 0, None)),
            Context::Class(c) => Context::Class(c.repeat_interleave_self_int(k, 0, None)),
        }
    }

    /// Rows in the batch, or None for no context.
    pub fn len(&self) -> Option<i64> {
        self.tensor().map(|t| t.size()[0])
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Context::None)
    }

    pub fn tensor(&self) -> Option<&Tensor> {
        match self {
            Context::None => None,
            Context::Vector(c) | Context::Class(c) => Some(c),
        }
    }

    pub fn shallow_clone(&self) -> Context {
        match self {
            Context::None => Context::None,
            Context::Vector(c) => Context::Vector(c.shallow_clone()),
            Context::Class(c) => Context::Class(c.shallow_clone()),
        }
    }
}

impl ContextSpec {
    /// Checks that `c` is this kind of context with `rows` rows; the error names what is wrong.
    pub fn check(&self, c: &Context, rows: i64) -> Result<()> {
        match (self, c) {
            (_, Context::None) => bail!("the model is conditional ({}) but no context was given", self.describe()),
            (ContextSpec::Vector { width }, Context::Vector(t)) => {
                ensure!(t.dim() == 2, "the context must be a [rows, {width}] matrix, got shape {:?}", t.size());
                ensure!(t.size()[1] == *width, "the context has width {}, but the model was trained with width {width}", t.size()[1]);
                ensure!(t.size()[0] == rows, "{} context rows for {rows} data rows", t.size()[0]);
                let bad = t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
                ensure!(bad == 0, "the context has {bad} non-finite value(s)");
                Ok(())
            }
            (ContextSpec::Class { classes }, Context::Class(t)) => {
                ensure!(t.dim() == 1, "class contexts must be a vector of indices, got shape {:?}", t.size());
                ensure!(t.size()[0] == rows, "{} context rows for {rows} data rows", t.size()[0]);
                if rows > 0 {
                    let (lo, hi) = (t.min().int64_value(&[]), t.max().int64_value(&[]));
                    ensure!(lo >= 0 && hi < *classes, "class {} is out of range: the model knows classes 0..={}", if lo < 0 { lo } else { hi }, classes - 1);
                }
                Ok(())
            }
            (ContextSpec::Vector { width }, Context::Class(_)) => bail!("the model takes a vector context of width {width}, not a class"),
            (ContextSpec::Class { classes }, Context::Vector(_)) => bail!("the model takes a class (0..={}) as context, not a vector", classes - 1),
        }
    }

    /// A context of this kind from a [N, K] matrix of numbers (a .npy/.csv file or a command line): class indices
    /// must be whole numbers in one column.
    pub fn from_matrix(&self, m: &Tensor) -> Result<Context> {
        ensure!(m.dim() == 2, "a context file must hold a [rows, width] matrix, got shape {:?}", m.size());
        let c = match self {
            ContextSpec::Vector { .. } => Context::Vector(m.to_kind(Kind::Float)),
            ContextSpec::Class { .. } => {
                ensure!(m.size()[1] == 1, "a class context has one column (the class index), got {}", m.size()[1]);
                let v = m.select(1, 0).to_kind(Kind::Double);
                let frac = (&v - v.round()).abs().max().double_value(&[]);
                ensure!(m.size()[0] == 0 || frac == 0.0, "class indices must be whole numbers");
                Context::Class(v.to_kind(Kind::Int64))
            }
        };
        self.check(&c, m.size()[0])?;
        Ok(c)
    }

    /// One context row from "0.5,1.2" (a vector) or "3" (a class).
    pub fn parse_row(&self, text: &str) -> Result<Context> {
        let values: Vec<f64> = text
            .split(',')
            .map(|s| s.trim().parse::<f64>().map_err(|_| anyhow::anyhow!("`{}` in the context \"{text}\" is not a number", s.trim())))
            .collect::<Result<_>>()?;
        let n = values.len() as i64;
        self.from_matrix(&Tensor::from_slice(&values).view([1, n]))
    }

    /// Every class once (0..classes), or None for a vector context.
    pub fn all_classes(&self, device: Device) -> Option<Context> {
        match self {
            ContextSpec::Class { classes } => Some(Context::Class(Tensor::arange(*classes, (Kind::Int64, device)))),
            ContextSpec::Vector { .. } => None,
        }
    }

    /// "vector of width 3" / "10 classes", for messages.
    pub fn describe(&self) -> String {
        match self {
            ContextSpec::Vector { width } => format!("a vector context of width {width}"),
            ContextSpec::Class { classes } => format!("{classes} classes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mismatch_is_named() {
        let v = ContextSpec::Vector { width: 2 };
        let ok = Context::Vector(Tensor::zeros([3, 2], (Kind::Float, Device::Cpu)));
        assert!(v.check(&ok, 3).is_ok());
        let e = |s: &ContextSpec, c: &Context, n| s.check(c, n).unwrap_err().to_string();
        assert!(e(&v, &Context::None, 3).contains("no context"));
        assert!(e(&v, &Context::Vector(Tensor::zeros([3, 4], (Kind::Float, Device::Cpu))), 3).contains("width 4"));
        assert!(e(&v, &ok, 5).contains("3 context rows for 5"));
        assert!(e(&v, &Context::Vector(Tensor::full([3, 2], f64::NAN, (Kind::Float, Device::Cpu))), 3).contains("non-finite"));
        let c = ContextSpec::Class { classes: 10 };
        assert!(e(&c, &Context::Class(Tensor::from_slice(&[1i64, 10])), 2).contains("class 10 is out of range"));
        assert!(e(&c, &Context::Class(Tensor::from_slice(&[-1i64, 3])), 2).contains("class -1"));
        assert!(e(&c, &ok, 3).contains("not a vector"));
        assert!(c.parse_row("3").is_ok() && c.parse_row("3.5").is_err() && c.parse_row("x").unwrap_err().to_string().contains("`x`"));
        assert!(v.parse_row("0.5, 1.2").is_ok() && v.parse_row("0.5").unwrap_err().to_string().contains("width 1"));
    }

    #[test]
    fn cycled_and_repeated_rows() {
        let c = Context::Class(Tensor::from_slice(&[4i64, 7]));
        assert_eq!(Vec::<i64>::try_from(c.cycled(5).tensor().unwrap()).unwrap(), vec![4, 7, 4, 7, 4]);
        assert_eq!(Vec::<i64>::try_from(c.repeat_rows(2).tensor().unwrap()).unwrap(), vec![4, 4, 7, 7]);
    }
}
