//! Per-example random draws that do not depend on how a batch is split across processes.
//!
//! In data-parallel training every rank takes a contiguous slice of the same global batch. For a run on N ranks to
//! follow the trajectory of one process on the whole batch, the noise of example i (a diffusion time, an ε, a
//! Langevin kick) must be the same whichever rank computes it. The runner declares the split with [`with_split`];
//! every per-example draw goes through [`draw`] (or `randn_like`, `rand_like`, `randint`), which then draws the
//! rows of the *whole* batch from the generator, exactly as the single process does, and keeps this rank's rows.
//! Outside a split, or for a draw whose row count is not this rank's share (a fixed number of proposals, say), it is
//! a plain draw. Draws that are not per example (a normaliser's proposals) stay plain and are the same on every rank
//! because every rank consumes the generator identically.
use std::cell::Cell;
use tch::{Device, Kind, Tensor};

/// This process's rows of a batch of `total`: `len` rows from `offset` — in each of `blocks` copies of the batch
/// stacked along dimension 0 (an importance-weighted bound's K samples per example), else once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub offset: i64,
    pub len: i64,
    pub total: i64,
    pub blocks: i64,
}

impl Split {
    /// The whole batch (one process).
    pub fn whole(total: i64) -> Self {
        Split { offset: 0, len: total, total, blocks: 1 }
    }

    /// Rank `rank` of `world` ranks: rows [⌊total·r/N⌋, ⌊total·(r+1)/N⌋), so shares differ by at most one row.
    pub fn of(total: i64, rank: usize, world: usize) -> Self {
        let (r, n) = (rank as i64, world as i64);
        let start = total * r / n;
        let end = total * (r + 1) / n;
        Split { offset: start, len: end - start, total, blocks: 1 }
    }

    /// The same rows in each of `c` stacked copies of the batch (rows j·total + i for copy j).
    pub fn repeated(self, c: i64) -> Self {
        Split { blocks: c, ..self }
    }

    /// This rank's share of the batch, as the weight of its mean in the mean over the whole batch.
    pub fn weight(&self) -> f64 {
        self.len as f64 / self.total.max(1) as f64
    }

    /// This rank's rows of a tensor holding the whole batch (`blocks` times) in dimension 0.
    pub fn rows_of(&self, t: &Tensor) -> Tensor {
        if self.blocks == 1 {
            return t.narrow(0, self.offset, self.len);
        }
        let rest = &t.size()[1..];
        let stacked: Vec<i64> = [self.blocks, self.total].iter().chain(rest).copied().collect();
        let mine: Vec<i64> = [self.blocks * self.len].iter().chain(rest).copied().collect();
        t.reshape(stacked.as_slice()).narrow(1, self.offset, self.len).reshape(mine.as_slice())
    }
}

thread_local! {
    static CURRENT: Cell<Option<Split>> = const { Cell::new(None) };
}

/// Runs `f` with per-example draws split as `split` says (nested calls restore the outer split).
pub fn with_split<R>(split: Split, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Split>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(Some(split))));
    f()
}

/// The split in force, if any.
pub fn current() -> Option<Split> {
    CURRENT.with(|c| c.get())
}

/// `n` rows drawn by `draw(m)` (which returns m rows in dimension 0): under a split where `n` is this rank's share,
/// the whole batch's rows are drawn and this rank's kept; otherwise `draw(n)`.
pub fn draw(n: i64, draw: impl FnOnce(i64) -> Tensor) -> Tensor {
    match current() {
        Some(s) if s.len * s.blocks == n && s.total != s.len => s.rows_of(&draw(s.total * s.blocks)),
        _ => draw(n),
    }
}

fn with_rows(shape: &[i64], m: i64) -> Vec<i64> {
    let mut s = shape.to_vec();
    s[0] = m;
    s
}

/// ε ~ N(0, I) shaped like `t` (dimension 0 = examples).
pub fn randn_like(t: &Tensor) -> Tensor {
    let (shape, kind, device) = (t.size(), t.kind(), t.device());
    if shape.is_empty() {
        return t.randn_like();
    }
    draw(shape[0], |m| Tensor::randn(with_rows(&shape, m).as_slice(), (kind, device)))
}

/// u ~ U[0, 1) shaped like `t` (dimension 0 = examples).
pub fn rand_like(t: &Tensor) -> Tensor {
    let (shape, kind, device) = (t.size(), t.kind(), t.device());
    if shape.is_empty() {
        return t.rand_like();
    }
    draw(shape[0], |m| Tensor::rand(with_rows(&shape, m).as_slice(), (kind, device)))
}

/// `shape` (dimension 0 = examples) integers uniform in [0, high).
pub fn randint(high: i64, shape: &[i64], device: Device) -> Tensor {
    draw(shape[0], |m| Tensor::randint(high, with_rows(shape, m).as_slice(), (Kind::Int64, device)))
}

/// `shape` (dimension 0 = examples) standard normal draws.
pub fn randn(shape: &[i64], opts: (Kind, Device)) -> Tensor {
    draw(shape[0], |m| Tensor::randn(with_rows(shape, m).as_slice(), opts))
}

/// `shape` (dimension 0 = examples) uniform draws on [0, 1).
pub fn rand(shape: &[i64], opts: (Kind, Device)) -> Tensor {
    draw(shape[0], |m| Tensor::rand(with_rows(shape, m).as_slice(), opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_once() {
        for (total, world) in [(10, 3), (7, 2), (8, 4), (1, 2)] {
            let splits: Vec<Split> = (0..world).map(|r| Split::of(total, r, world)).collect();
            assert_eq!(splits[0].offset, 0);
            for w in splits.windows(2) {
                assert_eq!(w[0].offset + w[0].len, w[1].offset);
            }
            let last = splits[world - 1];
            assert_eq!(last.offset + last.len, total);
            let weights: f64 = splits.iter().map(Split::weight).sum();
            assert!((weights - 1.0).abs() < 1e-12);
        }
    }

    /// Two ranks' draws, made one after the other from the same seed, are the two halves of the whole batch's draw,
    /// and the generator ends in the same state (the next plain draw agrees).
    #[test]
    fn split_draws_are_the_rows_of_the_whole_draw() {
        let x = Tensor::zeros([6, 3], (Kind::Float, Device::Cpu));
        tch::manual_seed(5);
        let whole = (randn_like(&x), randint(10, &[6], Device::Cpu), rand_like(&x), Tensor::randn([4], (Kind::Float, Device::Cpu)));
        for rank in 0..2 {
            let s = Split::of(6, rank, 2);
            tch::manual_seed(5);
            let local = x.narrow(0, s.offset, s.len);
            let (a, b, c) = with_split(s, || (randn_like(&local), randint(10, &[s.len], Device::Cpu), rand_like(&local)));
            let after = Tensor::randn([4], (Kind::Float, Device::Cpu));
            assert!(a.equal(&s.rows_of(&whole.0)), "rank {rank}: randn rows differ");
            assert!(b.equal(&s.rows_of(&whole.1)), "rank {rank}: randint rows differ");
            assert!(c.equal(&s.rows_of(&whole.2)), "rank {rank}: rand rows differ");
            assert!(after.equal(&whole.3), "rank {rank}: the generator is not where the whole draw left it");
        }
        assert_eq!(current(), None, "the split is undone after with_split");
    }

    /// Three stacked copies of a batch of 5 split 2 + 3: each rank's draw is its rows of every copy.
    #[test]
    fn repeated_splits_take_their_rows_of_every_copy() {
        tch::manual_seed(9);
        let whole = Tensor::randn([15, 2], (Kind::Float, Device::Cpu));
        for rank in 0..2 {
            let s = Split::of(5, rank, 2).repeated(3);
            tch::manual_seed(9);
            let mine = with_split(s, || randn(&[3 * s.len, 2], (Kind::Float, Device::Cpu)));
            let want = Tensor::cat(&(0..3).map(|j| whole.narrow(0, j * 5 + s.offset, s.len)).collect::<Vec<_>>(), 0);
            assert!(mine.equal(&want), "rank {rank}");
        }
    }

    #[test]
    fn draws_of_another_size_are_plain() {
        let s = Split::of(6, 1, 2);
        tch::manual_seed(3);
        let plain = Tensor::randn([5], (Kind::Float, Device::Cpu));
        tch::manual_seed(3);
        let inside = with_split(s, || randn(&[5], (Kind::Float, Device::Cpu)));
        assert!(inside.equal(&plain));
    }
}
