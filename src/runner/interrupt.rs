//! SIGINT and SIGTERM: the training loop finishes its current step, writes a checkpoint and stops with exit code 130
//! or 143 and a line saying how to resume (Slurm and Kubernetes send SIGTERM before they kill). A second signal
//! while the first is handled ends the process at once.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

struct Flags {
    requested: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Installs the handlers once (later calls do nothing).
pub fn install() {
    FLAGS.get_or_init(|| {
        let flags = Flags { requested: Arc::new(AtomicBool::new(false)), signal: Arc::new(AtomicUsize::new(0)) };
        for (sig, code) in [(signal_hook::consts::SIGINT, 130), (signal_hook::consts::SIGTERM, 143)] {
            // Order matters: the conditional exit checks the flag before this signal's handler sets it.
            let _ = signal_hook::flag::register_conditional_shutdown(sig, code, flags.requested.clone());
            let _ = signal_hook::flag::register_usize(sig, flags.signal.clone(), sig as usize);
            let _ = signal_hook::flag::register(sig, flags.requested.clone());
        }
        flags
    });
}

/// The signal received since `install`, if any.
pub fn pending() -> Option<i32> {
    let f = FLAGS.get()?;
    f.requested.load(Ordering::SeqCst).then(|| f.signal.load(Ordering::SeqCst) as i32)
}

/// The error a run stops with after a signal; `main` turns it into exit code 128 + signal.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: i32,
    pub message: String,
}

impl Interrupted {
    pub fn exit_code(&self) -> i32 {
        128 + self.signal
    }

    fn name(&self) -> &'static str {
        match self.signal {
            signal_hook::consts::SIGINT => "SIGINT",
            signal_hook::consts::SIGTERM => "SIGTERM",
            _ => "a signal",
        }
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by {}: {}", self.name(), self.message)
    }
}

impl std::error::Error for Interrupted {}

/// `Err(Interrupted)` when a signal is pending, with `message` (what was saved, how to resume).
pub fn check(message: impl FnOnce() -> String) -> anyhow::Result<()> {
    match pending() {
        Some(signal) => Err(Interrupted { signal, message: message() }.into()),
        None => Ok(()),
    }
}

/// Whether an error (anywhere in its chain) is an interruption, which sweeps and scripts must not swallow.
pub fn is_interrupted(e: &anyhow::Error) -> Option<&Interrupted> {
    e.chain().find_map(|c| c.downcast_ref::<Interrupted>())
}
