//! A c10d process group (Gloo, or NCCL with the `nccl` feature) owned from Rust: built by rendezvous through a
//! store, destroyed on drop, its collectives returning `anyhow` errors (never panics, never C++ exceptions).
use super::ffi;
use anyhow::{anyhow, bail, Result};
use std::ffi::CString;
use std::os::raw::c_char;
use std::path::PathBuf;
use std::ptr::{self, NonNull};
use std::time::Duration;
use tch::Tensor;

/// The communication library behind a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// CPU (and CUDA tensors through host copies); always built.
    Gloo,
    /// GPU; only in builds with the `nccl` feature.
    Nccl,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// Whether this build can make groups of this backend.
    pub fn available(self) -> bool {
        match self {
            Backend::Gloo => true,
            Backend::Nccl => (unsafe { ffi::rf_dist_has_nccl() }) != 0,
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            _ => bail!("unknown distributed backend `{s}` (known: gloo, nccl)"),
        }
    }
}

/// Where the ranks meet to exchange addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// c10d's TCPStore at host:port; `serve` on the one rank that runs the server (rank 0, unless a launcher such
    /// as torchrun's agent already serves it).
    Tcp { host: String, port: u16, serve: bool },
    /// c10d's FileStore: one file every rank can reach (a shared file system); it must not be left over from an
    /// earlier run.
    File { path: PathBuf },
}

/// Everything needed to build a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOptions {
    pub store: Store,
    /// Every store key under this prefix (e.g. one per launcher restart), or none.
    pub prefix: Option<String>,
    pub rank: usize,
    pub world_size: usize,
    /// For the rendezvous and for each collective: a dead or missing peer is an error after at most this long.
    pub timeout: Duration,
    pub backend: Backend,
}

/// One rank's handle on a process group. Not `Sync`: one thread issues its collectives.
pub struct ProcessGroup {
    raw: NonNull<ffi::RfDistGroup>,
    rank: usize,
    world_size: usize,
    backend: Backend,
    timeout: Duration,
}

// The group is owned by this handle alone; c10d lets its owner move between threads.
unsafe impl Send for ProcessGroup {}

/// Runs one shim call with an error slot; a failure becomes an error naming `what`.
fn call(what: impl FnOnce() -> String, timeout: Duration, f: impl FnOnce(*mut *mut c_char) -> i32) -> Result<()> {
    let mut err: *mut c_char = ptr::null_mut();
    let status = f(&mut err);
    if status == ffi::RF_DIST_OK {
        return Ok(());
    }
    let msg = crate::native::take_message(err, ffi::rf_dist_free_error);
    let kind = match status {
        ffi::RF_DIST_TIMEOUT => {
            format!(" (timed out; the limit is {} s, set by RELAXFLOW_DIST_TIMEOUT)", timeout.as_secs_f64())
        }
        ffi::RF_DIST_INVALID => " (invalid argument)".to_string(),
        ffi::RF_DIST_UNSUPPORTED => " (unsupported)".to_string(),
        ffi::RF_DIST_ERROR => String::new(),
        other => format!(" (status {other})"),
    };
    // A peer that ended (an error, a kill) closes its connections; its own output says why.
    let hint = if msg.contains("Connection closed by peer") || msg.contains("Connection reset by peer") {
        " (another rank has ended; its output says why)"
    } else {
        ""
    };
    Err(anyhow!("{}{kind}: {msg}{hint}", what()))
}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| anyhow!("{what} `{s}` contains a NUL byte"))
}

impl ProcessGroup {
    /// Rendezvous with the other ranks and build the group; blocks until all `world_size` ranks have joined, or
    /// fails after `opts.timeout`.
    pub fn new(opts: &GroupOptions) -> Result<Self> {
        if opts.world_size == 0 || opts.rank >= opts.world_size {
            bail!("rank {} is outside a world of size {}", opts.rank, opts.world_size);
        }
        if !opts.backend.available() {
            bail!("the {} backend is not in this build (cargo feature `nccl`)", opts.backend.name());
        }
        let (kind, host, port, serve, path) = match &opts.store {
            Store::Tcp { host, port, serve } => (ffi::RF_STORE_TCP, Some(cstring("host", host)?), *port, *serve, None),
            Store::File { path } => {
                let p = path.to_str().ok_or_else(|| anyhow!("store file {} is not UTF-8", path.display()))?;
                (ffi::RF_STORE_FILE, None, 0, false, Some(cstring("store file", p)?))
            }
        };
        let prefix = opts.prefix.as_deref().map(|p| cstring("store prefix", p)).transpose()?;
        let c_opts = ffi::RfDistOptions {
            store_kind: kind,
            host: host.as_ref().map_or(ptr::null(), |h| h.as_ptr()),
            port,
            serve: serve as i32,
            path: path.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
            prefix: prefix.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
            rank: i32::try_from(opts.rank)?,
            world_size: i32::try_from(opts.world_size)?,
            timeout_ms: i64::try_from(opts.timeout.as_millis()).unwrap_or(i64::MAX).max(1),
            backend: match opts.backend {
                Backend::Gloo => ffi::RF_BACKEND_GLOO,
                Backend::Nccl => ffi::RF_BACKEND_NCCL,
            },
        };
        let mut raw: *mut ffi::RfDistGroup = ptr::null_mut();
        let store = match &opts.store {
            Store::Tcp { host, port, serve } => format!("TCP store {host}:{port}{}", if *serve { ", served here" } else { "" }),
            Store::File { path } => format!("file store {}", path.display()),
        };
        call(
            || format!("joining the {} group as rank {} of {} ({store})", opts.backend.name(), opts.rank, opts.world_size),
            opts.timeout,
            |err| unsafe { ffi::rf_dist_group_new(&c_opts, &mut raw, err) },
        )?;
        let raw = NonNull::new(raw).ok_or_else(|| anyhow!("the c10d shim returned no group"))?;
        Ok(ProcessGroup { raw, rank: opts.rank, world_size: opts.world_size, backend: opts.backend, timeout: opts.timeout })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn what(&self, op: &str) -> String {
        format!("{op} on rank {} of {} ({})", self.rank, self.world_size, self.backend.name())
    }

    /// c10d writes into the tensor's storage behind autograd's back (no version bump): refuse tensors that take
    /// part in autograd; gradients and parameters under `no_grad` are fine.
    fn check(&self, op: &str, t: &Tensor) -> Result<()> {
        if t.requires_grad() {
            bail!("{}: the tensor requires grad; pass a gradient, or a parameter under tch::no_grad", self.what(op));
        }
        Ok(())
    }

    /// In place: the sum of `t` over all ranks, on every rank.
    pub fn allreduce_sum_(&self, t: &mut Tensor) -> Result<()> {
        self.reduce(t, ffi::RF_OP_SUM)
    }

    /// In place: the elementwise minimum of `t` over all ranks.
    pub fn allreduce_min_(&self, t: &mut Tensor) -> Result<()> {
        self.reduce(t, ffi::RF_OP_MIN)
    }

    /// In place: the elementwise maximum of `t` over all ranks.
    pub fn allreduce_max_(&self, t: &mut Tensor) -> Result<()> {
        self.reduce(t, ffi::RF_OP_MAX)
    }

    fn reduce(&self, t: &mut Tensor, op: i32) -> Result<()> {
        self.check("allreduce", t)?;
        call(|| self.what("allreduce"), self.timeout, |err| unsafe { ffi::rf_dist_allreduce(self.raw.as_ptr(), t.as_mut_ptr(), op, err) })
    }

    /// In place: the mean of `t` over all ranks (Gloo has no average: the sum, divided by the world size).
    pub fn allreduce_mean_(&self, t: &mut Tensor) -> Result<()> {
        if !t.is_floating_point() {
            bail!("{}: the mean needs a floating-point tensor, not {:?}", self.what("allreduce"), t.kind());
        }
        self.allreduce_sum_(t)?;
        let _ = t.f_div_scalar_(self.world_size as f64)?;
        Ok(())
    }

    /// In place: `t` of rank `root` on every rank.
    pub fn broadcast_(&self, t: &mut Tensor, root: usize) -> Result<()> {
        self.check("broadcast", t)?;
        if root >= self.world_size {
            bail!("{}: root {root} is outside the group", self.what("broadcast"));
        }
        call(|| self.what("broadcast"), self.timeout, |err| unsafe {
            ffi::rf_dist_broadcast(self.raw.as_ptr(), t.as_mut_ptr(), root as i32, err)
        })
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        call(|| self.what("barrier"), self.timeout, |err| unsafe { ffi::rf_dist_barrier(self.raw.as_ptr(), err) })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        unsafe { ffi::rf_dist_group_free(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup({}, rank {} of {})", self.backend.name(), self.rank, self.world_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn options(path: &std::path::Path, rank: usize) -> GroupOptions {
        GroupOptions {
            store: Store::File { path: path.to_path_buf() },
            prefix: Some("unit".into()),
            rank,
            world_size: 2,
            timeout: Duration::from_secs(20),
            backend: Backend::Gloo,
        }
    }

    /// Two ranks as two threads of this process (a FileStore in a temporary folder): the collectives' results, and
    /// the shim's refusals reported as errors.
    #[test]
    fn two_ranks_in_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                let o = options(&store, rank);
                std::thread::spawn(move || -> Result<(Vec<f64>, Vec<f32>, String, String)> {
                    let g = ProcessGroup::new(&o)?;
                    assert_eq!((g.rank(), g.world_size(), g.backend()), (rank, 2, Backend::Gloo));
                    let mut s = Tensor::from_slice(&[rank as f64 + 1.0, 0.25]);
                    g.allreduce_mean_(&mut s)?;
                    let mut b = Tensor::from_slice(&[rank as f32, 10.0 * rank as f32]);
                    g.broadcast_(&mut b, 1)?;
                    g.barrier()?;
                    let mut strided = Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu)).tr();
                    let e1 = format!("{:#}", g.allreduce_sum_(&mut strided).unwrap_err());
                    let mut p = Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
                    let e2 = format!("{:#}", g.broadcast_(&mut p, 0).unwrap_err());
                    Ok((Vec::try_from(&s)?, Vec::try_from(&b)?, e1, e2))
                })
            })
            .collect();
        for (rank, h) in ranks.into_iter().enumerate() {
            let (s, b, e1, e2) = h.join().unwrap().unwrap();
            assert_eq!(s, vec![1.5, 0.25], "rank {rank}");
            assert_eq!(b, vec![1.0, 10.0], "rank {rank}");
            assert!(e1.contains("contiguous") && e1.contains("invalid argument") && e1.contains(&format!("rank {rank} of 2")), "{e1}");
            assert!(e2.contains("requires grad"), "{e2}");
        }
    }

    #[test]
    fn bad_options_are_refused_before_any_rendezvous() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(&dir.path().join("s"), 2);
        assert!(ProcessGroup::new(&o).unwrap_err().to_string().contains("outside"));
        o.rank = 0;
        o.prefix = Some("a\0b".into());
        assert!(ProcessGroup::new(&o).unwrap_err().to_string().contains("NUL"));
        if !Backend::Nccl.available() {
            o.prefix = None;
            o.backend = Backend::Nccl;
            assert!(ProcessGroup::new(&o).unwrap_err().to_string().contains("nccl"));
        }
        assert_eq!("Gloo".parse::<Backend>().unwrap(), Backend::Gloo);
    }

    /// A rank alone at a store meant for two gives up after the timeout with an error, not a hang.
    #[test]
    fn a_missing_peer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(&dir.path().join("s"), 0);
        o.timeout = Duration::from_millis(1500);
        let start = std::time::Instant::now();
        let e = format!("{:#}", ProcessGroup::new(&o).unwrap_err());
        assert!(start.elapsed() < Duration::from_secs(15), "took {:?}", start.elapsed());
        assert!(e.contains("joining the gloo group as rank 0 of 2"), "{e}");
        assert!(!e.contains("frame #"), "{e}");
    }
}
