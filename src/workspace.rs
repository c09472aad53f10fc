//! Where relaxflow reads experiment files and writes runs. Library code takes these paths from a [`Workspace`]
//! value; only the command line resolves one from its surroundings (a flag, then an environment variable, then a
//! default), so nothing depends on a path baked in at compile time or on the current folder by accident.
use std::path::{Path, PathBuf};

/// The folders of a relaxflow workspace.
#[derive(Clone, Debug, PartialEq)]
pub struct Workspace {
    /// Named experiments: `<experiments>/<NAME>.toml`.
    pub experiments: PathBuf,
    /// Run folders: `<runs>/<NAME>/<stamp>`, sweeps in `<runs>/sweeps/<NAME>`, classifiers looked up in
    /// `<runs>/<mnist|fashion>-classifier`.
    pub runs: PathBuf,
}

impl Default for Workspace {
    /// `experiments/` and `runs/` in the current folder.
    fn default() -> Self {
        Workspace { experiments: PathBuf::from("experiments"), runs: PathBuf::from("runs") }
    }
}

/// Environment variables the command line reads when no flag is given.
pub const EXPERIMENTS_VAR: &str = "RELAXFLOW_EXPERIMENTS";
pub const RUNS_VAR: &str = "RELAXFLOW_RUNS";

impl Workspace {
    /// The command line's workspace. Experiments: `flag`, else `$RELAXFLOW_EXPERIMENTS`, else `./experiments` when
    /// it exists, else the `experiments/` folder that ships with the binary (beside it, or at the crate root above
    /// `target/<profile>/`), else `./experiments`. Runs: `flag`, else `$RELAXFLOW_RUNS`, else `./runs`.
    pub fn resolve(experiments: Option<PathBuf>, runs: Option<PathBuf>) -> Workspace {
        let env = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
        let exe = std::env::current_exe().ok();
        let experiments = experiments.or_else(|| env(EXPERIMENTS_VAR)).unwrap_or_else(|| shipped_experiments(Path::new("."), exe.as_deref()));
        let runs = runs.or_else(|| env(RUNS_VAR)).unwrap_or_else(|| PathBuf::from("runs"));
        Workspace { experiments, runs }
    }
}

/// `cwd/experiments` if it is a folder, else the first of `<exe dir>/experiments` and `<exe dir>/../../experiments`
/// that is one, else `experiments` (whose absence the caller then reports).
fn shipped_experiments(cwd: &Path, exe: Option<&Path>) -> PathBuf {
    let local = cwd.join("experiments");
    if local.is_dir() {
        return PathBuf::from("experiments");
    }
    let beside = exe.and_then(Path::parent).into_iter().flat_map(|d| [d.join("experiments"), d.join("../../experiments")]);
    beside.into_iter().find(|p| p.is_dir()).unwrap_or_else(|| PathBuf::from("experiments"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiments_are_found_here_then_beside_the_binary() {
        let tmp = tempfile::tempdir().unwrap();
        let (cwd, install) = (tmp.path().join("work"), tmp.path().join("opt/relaxflow"));
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::create_dir_all(install.join("target/release")).unwrap();
        let exe = install.join("target/release/relaxflow");
        // Nothing anywhere: the plain relative default, reported missing later.
        assert_eq!(shipped_experiments(&cwd, Some(&exe)), PathBuf::from("experiments"));
        // A cargo-built binary finds the crate's experiments two levels up.
        std::fs::create_dir_all(install.join("experiments")).unwrap();
        assert_eq!(shipped_experiments(&cwd, Some(&exe)), install.join("target/release/../../experiments"));
        // An installed binary with experiments beside it prefers those.
        std::fs::create_dir_all(install.join("target/release/experiments")).unwrap();
        assert_eq!(shipped_experiments(&cwd, Some(&exe)), install.join("target/release/experiments"));
        // A local experiments/ wins.
        std::fs::create_dir_all(cwd.join("experiments")).unwrap();
        assert_eq!(shipped_experiments(&cwd, Some(&exe)), PathBuf::from("experiments"));
    }

    #[test]
    fn flags_win_over_everything() {
        let ws = Workspace::resolve(Some("/a/exps".into()), Some("/b/runs".into()));
        assert_eq!(ws, Workspace { experiments: "/a/exps".into(), runs: "/b/runs".into() });
    }
}
