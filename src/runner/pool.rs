//! `relaxflow sweep --jobs N`: a sweep's runs as child processes of this binary (`relaxflow train ...`), N at a time.
//! Small models are bound by per-operation overhead, not by arithmetic, so N one-thread processes on N cores finish
//! a sweep about N times sooner than one process with N threads. Each child gets `OMP_NUM_THREADS` = cores / N
//! (unless set), its own process group (a Ctrl-C reaches only the sweep, which forwards it once, so every child
//! checkpoints before it exits), and its stderr is relayed line by line with the run's folder in front.
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One child: a label for its output lines and the arguments after the binary's name.
pub struct Job {
    pub label: String,
    pub args: Vec<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    /// Stopped by a signal after checkpointing (exit 130 or 143): resumable.
    Stopped,
    /// Its last error line.
    Failed(String),
}

struct Running {
    index: usize,
    child: Child,
    last_error: Arc<Mutex<String>>,
    relay: JoinHandle<()>,
}

/// Threads for each of `n` children: the cores divided among them, at least one.
pub fn threads_per_job(n: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    (cores / n.max(1)).max(1)
}

/// Runs every job, at most `n` at once, calling `done(index, outcome)` as each ends. After SIGINT/SIGTERM no job
/// starts, the signal is passed once to the running children, and this returns when they have stopped.
pub fn run(jobs: Vec<Job>, n: usize, mut done: impl FnMut(usize, Outcome)) -> std::io::Result<()> {
    super::interrupt::install();
    let exe = std::env::current_exe()?;
    let threads = threads_per_job(n).to_string();
    let mut queue = jobs.into_iter().enumerate();
    let mut running: Vec<Running> = Vec::new();
    let mut forwarded = false;
    loop {
        let signal = super::interrupt::pending();
        if signal.is_none() {
            while running.len() < n.max(1) {
                let Some((index, job)) = queue.next() else { break };
                running.push(spawn(&exe, index, job, &threads)?);
            }
        } else if !forwarded {
            running.iter().for_each(|r| forward(&r.child, signal.unwrap_or(signal_hook::consts::SIGTERM)));
            forwarded = true;
        }
        if running.is_empty() {
            return Ok(());
        }
        let mut i = 0;
        while i < running.len() {
            match running[i].child.try_wait()? {
                Some(status) => {
                    let r = running.swap_remove(i);
                    let _ = r.relay.join();
                    let outcome = match status.code() {
                        Some(0) => Outcome::Done,
                        Some(130) | Some(143) => Outcome::Stopped,
                        _ => {
                            let line = r.last_error.lock().map(|s| s.clone()).unwrap_or_default();
                            let why = if line.is_empty() { format!("the training process ended without an error line ({status})") } else { line };
                            Outcome::Failed(why)
                        }
                    };
                    done(r.index, outcome);
                }
                None => i += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(exe: &std::path::Path, index: usize, job: Job, threads: &str) -> std::io::Result<Running> {
    let mut cmd = Command::new(exe);
    cmd.args(&job.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0);
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        cmd.env("OMP_NUM_THREADS", threads);
    }
    let mut child = cmd.spawn()?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let last_error = Arc::new(Mutex::new(String::new()));
    let keep = last_error.clone();
    let label = job.label;
    let relay = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{label}] {line}");
            if let Some(msg) = line.strip_prefix("error: ") {
                if let Ok(mut k) = keep.lock() {
                    *k = msg.to_string();
                }
            }
        }
    });
    Ok(Running { index, child, last_error, relay })
}

/// Sends `signal` to a child (its own process group does not get the terminal's).
fn forward(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a pid we spawned and have not yet reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_shared_among_jobs() {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        assert_eq!(threads_per_job(1), cores);
        assert_eq!(threads_per_job(cores), 1);
        assert_eq!(threads_per_job(cores * 4), 1);
    }
}
