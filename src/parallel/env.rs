//! Who am I in which job: the launch read from the environment, the way torchrun and Slurm describe it.
//!
//! - torchrun (or plain variables): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Under torchrun's agent
//!   (TORCHELASTIC_USE_AGENT_STORE=True) the agent already serves the TCP store: every rank connects as a client, its
//!   keys under a prefix per restart (TORCHELASTIC_RESTART_COUNT).
//! - Slurm (`srun`): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the store on MASTER_ADDR, else the first host of
//!   SLURM_JOB_NODELIST, and MASTER_PORT, else a port derived from SLURM_JOB_ID (so two jobs on a node differ).
//!   Only a task srun started (SLURM_STEP_ID set) joins: a batch script itself sees the job's SLURM_NTASKS too, and
//!   is one process.
//! - Neither: a single process.
//!
//! RELAXFLOW_DIST_FILE=PATH meets through a FileStore at PATH instead of TCP (tests, shared file systems);
//! RELAXFLOW_DIST_TIMEOUT=SECONDS bounds the rendezvous and every collective (default 300);
//! RELAXFLOW_DIST_BACKEND=gloo|nccl chooses the backend (default: by the device, see `World::from_env_for`).
use super::group::{Backend, GroupOptions, Store};
use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// The default limit on the rendezvous and on each collective.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Which convention described the launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// RANK / WORLD_SIZE (torchrun, or set by hand).
    Torchrun,
    Slurm,
}

impl std::fmt::Display for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Launcher::Torchrun => "launched through RANK/WORLD_SIZE",
            Launcher::Slurm => "launched by Slurm",
        })
    }
}

/// One rank's place in a multi-process job, before any connection is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    /// The rank among the processes of this machine (which GPU to use).
    pub local_rank: usize,
    pub store: Store,
    pub prefix: Option<String>,
    pub timeout: Duration,
    /// Set by RELAXFLOW_DIST_BACKEND; else chosen by the device.
    pub backend: Option<Backend>,
}

impl Launch {
    /// The options of the group this rank joins.
    pub fn group_options(&self, backend: Backend) -> GroupOptions {
        GroupOptions {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            rank: self.rank,
            world_size: self.world_size,
            timeout: self.timeout,
            backend,
        }
    }
}

fn parse<T: std::str::FromStr>(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|e| anyhow!("{name}={v}: {e}")),
    }
}

/// The launch described by the variables `get` returns (`None`: a single process). World size 1 is a single
/// process too: it builds no group.
pub fn launch_from(get: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
    let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
    let (launcher, rank, world_size, local_rank) = if get("RANK").is_some() || get("WORLD_SIZE").is_some() {
        let rank: usize = parse(&get, "RANK")?.context("WORLD_SIZE is set but RANK is not")?;
        let world: usize = parse(&get, "WORLD_SIZE")?.context("RANK is set but WORLD_SIZE is not")?;
        (Launcher::Torchrun, rank, world, parse(&get, "LOCAL_RANK")?.unwrap_or(rank))
    } else if get("SLURM_PROCID").is_some() && get("SLURM_NTASKS").is_some() && get("SLURM_STEP_ID").or_else(|| get("SLURM_STEPID")).is_none() {
        // A batch script itself (not a task that srun started) sees the job's SLURM_NTASKS but is one process.
        if get("SLURM_NTASKS").is_some_and(|n| n.trim() != "1") {
            eprintln!("note: SLURM_NTASKS is set but this process was not started by srun (no SLURM_STEP_ID): one process; start it with `srun` to train data parallel");
        }
        return Ok(None);
    } else if get("SLURM_PROCID").is_some() && get("SLURM_NTASKS").is_some() {
        let rank: usize = parse(&get, "SLURM_PROCID")?.unwrap();
        let world: usize = parse(&get, "SLURM_NTASKS")?.unwrap();
        (Launcher::Slurm, rank, world, parse(&get, "SLURM_LOCALID")?.unwrap_or(0))
    } else {
        return Ok(None);
    };
    if world_size == 0 || rank >= world_size {
        bail!("rank {rank} is outside a world of size {world_size}");
    }
    // World size 1 builds no group, unless a backend is asked for by name (e.g. to exercise NCCL on one GPU).
    if world_size == 1 && get("RELAXFLOW_DIST_BACKEND").is_none() {
        return Ok(None);
    }
    let timeout = match parse::<f64>(&get, "RELAXFLOW_DIST_TIMEOUT")? {
        None => DEFAULT_TIMEOUT,
        Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
        Some(s) => bail!("RELAXFLOW_DIST_TIMEOUT={s}: seconds, positive"),
    };
    let backend = parse::<Backend>(&get, "RELAXFLOW_DIST_BACKEND")?;
    let agent_store = get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let prefix = agent_store.then(|| format!("relaxflow/attempt_{}", get("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into())));
    let store = if let Some(path) = get("RELAXFLOW_DIST_FILE") {
        Store::File { path: PathBuf::from(path) }
    } else {
        let host = match (get("MASTER_ADDR"), launcher) {
            (Some(h), _) => h,
            (None, Launcher::Slurm) => {
                let list = get("SLURM_JOB_NODELIST").or_else(|| get("SLURM_NODELIST"));
                let list = list.context("Slurm launch: neither MASTER_ADDR nor SLURM_JOB_NODELIST is set")?;
                first_host(&list).with_context(|| format!("SLURM_JOB_NODELIST={list}"))?
            }
            (None, Launcher::Torchrun) => bail!("RANK and WORLD_SIZE are set but MASTER_ADDR is not (or set RELAXFLOW_DIST_FILE)"),
        };
        let port: u16 = match (parse(&get, "MASTER_PORT")?, launcher) {
            (Some(p), _) => p,
            (None, Launcher::Slurm) => {
                let job: u64 = parse(&get, "SLURM_JOB_ID")?.unwrap_or(0);
                15000 + (job % 20000) as u16
            }
            (None, Launcher::Torchrun) => bail!("RANK and WORLD_SIZE are set but MASTER_PORT is not (or set RELAXFLOW_DIST_FILE)"),
        };
        Store::Tcp { host, port, serve: rank == 0 && !agent_store }
    };
    Ok(Some(Launch { launcher, rank, world_size, local_rank, store, prefix, timeout, backend }))
}

/// The launch described by this process's environment.
pub fn launch_from_env() -> Result<Option<Launch>> {
    launch_from(|k| std::env::var(k).ok()).context("reading the distributed launch from the environment")
}

/// The first host of a Slurm node list: `node[01-03],gpu7` -> `node01`, `a[2,5-7]-ib` -> `a2-ib`.
pub fn first_host(list: &str) -> Result<String> {
    let mut host = String::new();
    let mut chars = list.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                let inner: String = chars.by_ref().take_while(|&c| c != ']').collect();
                let first = inner.split(',').next().unwrap_or("").split('-').next().unwrap_or("").trim();
                if first.is_empty() || !first.chars().all(|c| c.is_ascii_digit()) {
                    bail!("cannot read the range [{inner}]");
                }
                host.push_str(first);
            }
            ']' => bail!("unbalanced ]"),
            c => host.push(c),
        }
    }
    if host.is_empty() {
        bail!("empty node list");
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        launch_from(move |k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_is_one_process() {
        assert_eq!(launch(&[]).unwrap(), None);
        assert_eq!(launch(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap(), None, "world size 1 builds no group");
        assert_eq!(launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1"), ("SLURM_STEP_ID", "0"), ("SLURM_JOB_NODELIST", "n1")]).unwrap(), None);
        // A batch script with --ntasks=4 running relaxflow directly (not through srun) is one process.
        assert_eq!(launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4"), ("SLURM_JOB_NODELIST", "n1")]).unwrap(), None);
        let asked = launch(&[("RANK", "0"), ("WORLD_SIZE", "1"), ("RELAXFLOW_DIST_FILE", "/tmp/s"), ("RELAXFLOW_DIST_BACKEND", "gloo")]);
        assert_eq!(asked.unwrap().map(|l| (l.world_size, l.backend)), Some((1, Some(Backend::Gloo))), "a named backend builds a group of one");
    }

    #[test]
    fn torchrun_variables() {
        let l = launch(&[("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "10.0.0.2"), ("MASTER_PORT", "29501")])
            .unwrap()
            .unwrap();
        assert_eq!((l.launcher, l.rank, l.world_size, l.local_rank), (Launcher::Torchrun, 1, 4, 1));
        assert_eq!(l.store, Store::Tcp { host: "10.0.0.2".into(), port: 29501, serve: false });
        assert_eq!((l.prefix, l.timeout, l.backend), (None, DEFAULT_TIMEOUT, None));
        let l0 = launch(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")]).unwrap().unwrap();
        assert_eq!(l0.store, Store::Tcp { host: "h".into(), port: 1, serve: true }, "rank 0 serves the store");
        assert_eq!(l0.local_rank, 0);
    }

    #[test]
    fn torchrun_agent_store_makes_every_rank_a_client_under_a_prefix() {
        let vars = [
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "3"),
        ];
        let l = launch(&vars).unwrap().unwrap();
        assert_eq!(l.store, Store::Tcp { host: "127.0.0.1".into(), port: 29500, serve: false });
        assert_eq!(l.prefix.as_deref(), Some("relaxflow/attempt_3"));
    }

    #[test]
    fn slurm_variables() {
        let vars = [("SLURM_PROCID", "5"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "1"), ("SLURM_STEP_ID", "0"), ("SLURM_JOB_NODELIST", "node[01-03],gpu7"), ("SLURM_JOB_ID", "123456")];
        let l = launch(&vars).unwrap().unwrap();
        assert_eq!((l.launcher, l.rank, l.world_size, l.local_rank), (Launcher::Slurm, 5, 8, 1));
        assert_eq!(l.store, Store::Tcp { host: "node01".into(), port: 15000 + 3456, serve: false });
        let mut with_master = vars.to_vec();
        with_master.extend([("MASTER_ADDR", "head"), ("MASTER_PORT", "4000")]);
        assert_eq!(launch(&with_master).unwrap().unwrap().store, Store::Tcp { host: "head".into(), port: 4000, serve: false });
        // torchrun's variables win over Slurm's (torchrun started inside an allocation).
        let mut both = vars.to_vec();
        both.extend([("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "x"), ("MASTER_PORT", "9")]);
        assert_eq!(launch(&both).unwrap().unwrap().launcher, Launcher::Torchrun);
    }

    #[test]
    fn file_store_timeout_and_backend() {
        let vars = [("RANK", "1"), ("WORLD_SIZE", "2"), ("RELAXFLOW_DIST_FILE", "/tmp/s"), ("RELAXFLOW_DIST_TIMEOUT", "2.5"), ("RELAXFLOW_DIST_BACKEND", "NCCL")];
        let l = launch(&vars).unwrap().unwrap();
        assert_eq!(l.store, Store::File { path: "/tmp/s".into() });
        assert_eq!(l.timeout, Duration::from_millis(2500));
        assert_eq!(l.backend, Some(Backend::Nccl));
        let o = l.group_options(Backend::Gloo);
        assert_eq!((o.rank, o.world_size, o.backend), (1, 2, Backend::Gloo));
    }

    #[test]
    fn bad_launches_are_named() {
        let err = |vars: &[(&str, &str)]| format!("{:#}", launch(vars).unwrap_err());
        assert!(err(&[("RANK", "0")]).contains("WORLD_SIZE"));
        assert!(err(&[("RANK", "x"), ("WORLD_SIZE", "2")]).contains("RANK=x"));
        assert!(err(&[("RANK", "2"), ("WORLD_SIZE", "2")]).contains("outside"));
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")]).contains("MASTER_ADDR"));
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]).contains("MASTER_PORT"));
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("RELAXFLOW_DIST_FILE", "f"), ("RELAXFLOW_DIST_TIMEOUT", "0")]).contains("TIMEOUT"));
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("RELAXFLOW_DIST_FILE", "f"), ("RELAXFLOW_DIST_BACKEND", "mpi")]).contains("mpi"));
        assert!(err(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"), ("SLURM_STEPID", "3")]).contains("SLURM_JOB_NODELIST"));
    }

    #[test]
    fn slurm_node_lists() {
        assert_eq!(first_host("node[01-03],gpu7").unwrap(), "node01");
        assert_eq!(first_host("gpu7,node[01-03]").unwrap(), "gpu7");
        assert_eq!(first_host("n[7,9-12]").unwrap(), "n7");
        assert_eq!(first_host("rack[2-3]-node[010-012]").unwrap(), "rack2-node010");
        assert_eq!(first_host("a[2,5-7]-ib,b1").unwrap(), "a2-ib");
        assert_eq!(first_host("single").unwrap(), "single");
        assert!(first_host("").is_err());
        assert!(first_host("n[x-y]").is_err());
        assert!(first_host("n]").is_err());
    }
}
