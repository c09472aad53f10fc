//! What the multi-process tests share: a clean launch environment, free ports, and waiting on a child with a limit.
#![allow(dead_code)]
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// Every variable that describes a launch, so that one inherited from the shell (e.g. inside a Slurm job) cannot
/// leak into a test.
pub const LAUNCH_VARS: [&str; 19] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_RESTART_COUNT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_JOB_NODELIST",
    "SLURM_NODELIST",
    "SLURM_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_STEP_ID",
    "SLURM_STEPID",
    "RELAXFLOW_DIST_FILE",
    "RELAXFLOW_DIST_TIMEOUT",
    "RELAXFLOW_DIST_BACKEND",
];

/// The relaxflow binary with no launch variable inherited, one OpenMP thread, run from the repository root.
pub fn relaxflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_relaxflow"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    for v in LAUNCH_VARS {
        c.env_remove(v);
    }
    c.env("OMP_NUM_THREADS", "1");
    c
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The child's output, or a panic (after killing it) when it runs past `limit`: a hang fails the test instead of
/// stalling the suite.
pub fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} still running after {limit:?}; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Six CIFAR-10 batch files of whole 3073-byte records (label, then the R, G and B planes): 110 records in each
/// training batch, 260 in the test batch, smooth colour images whose mean depends on the label.
pub fn write_cifar10(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let batch = |name: &str, n: usize| {
        let mut bytes = Vec::with_capacity(n * 3073);
        for i in 0..n {
            let label = (i % 10) as u8;
            bytes.push(label);
            for c in 0..3usize {
                for p in 0..1024usize {
                    let (row, col) = (p / 32, p % 32);
                    bytes.push((20 + 18 * label as usize + 30 * c + 2 * row + col + (i * 7 + p * 13) % 17).min(255) as u8);
                }
            }
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for k in 1..=5 {
        batch(&format!("data_batch_{k}.bin"), 110);
    }
    batch("test_batch.bin", 260);
}
