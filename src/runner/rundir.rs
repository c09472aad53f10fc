//! Run folders that are never lost, never shared and never half-made.
//!
//! - A new run is built in a hidden staging folder beside its target (`run.json`, `config.toml`, the step-0
//!   checkpoint) and renamed into place only when complete: a run folder either does not exist or can be resumed.
//!   The rename fails when the target holds anything, so two runs can never share a folder.
//! - Every process that writes a run folder holds an exclusive `flock` on its `.lock` file for its whole life; a
//!   second writer gets an error naming the holder's pid. The lock dies with the process (no stale locks).
//! - `run.json` marks a folder as relaxflow's: tools that would move or reuse a folder check for it first, and
//!   nothing in relaxflow deletes a run folder.
use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a run (or sweep) folder.
pub const LOCK: &str = ".lock";

/// An exclusive lock on a folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

impl FolderLock {
    /// Locks `dir` (which must exist) or says who holds it.
    pub fn acquire(dir: &Path) -> Result<FolderLock> {
        let path = dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { "another relaxflow process".to_string() } else { format!("another relaxflow process (pid {holder})") };
                bail!("{} is in use by {who}; wait for it to finish or stop it, then try again", dir.display());
            }
            Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
        // Best effort: the pid is only for the message above.
        let _ = file.set_len(0).and_then(|_| file.rewind()).and_then(|_| write!(file, "{}\n", std::process::id()));
        Ok(FolderLock { _file: file })
    }
}

/// Whether `dir` holds a run relaxflow made: a `run.json` naming an experiment and relaxflow's version.
pub fn is_run(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("run.json")) else { return false };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    v.get("experiment").is_some_and(|e| e.is_string()) && v.pointer("/versions/relaxflow").is_some()
}

/// Whether `dir` is absent or an empty folder (a place a new run may go).
pub fn is_free(dir: &Path) -> bool {
    match std::fs::symlink_metadata(dir) {
        Err(_) => true,
        Ok(m) if m.is_dir() => std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()),
        Ok(_) => false,
    }
}

/// A run folder under construction, hidden beside its target and locked; removed if never published.
pub struct Staging {
    dir: PathBuf,
    lock: Option<FolderLock>,
    published: bool,
}

impl Staging {
    /// A fresh staging folder in `parent` (created if needed).
    pub fn new(parent: &Path) -> Result<Staging> {
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let stamp = chrono::Local::now().format("%Y%m%d%H%M%S%f");
        let dir = parent.join(format!(".relaxflow-new-{}-{stamp}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock = FolderLock::acquire(&dir)?;
        Ok(Staging { dir, lock: Some(lock), published: false })
    }

    /// Where to write the run's files before publishing.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renames the staged run to the first free name among `targets` (an absent path or an empty folder); returns
    /// the folder and its lock. Fails, leaving every target untouched, when none is free.
    pub fn publish(mut self, targets: impl IntoIterator<Item = PathBuf>) -> Result<(PathBuf, FolderLock)> {
        let mut tried = Vec::new();
        for target in targets {
            if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            if is_free(&target) && std::fs::rename(&self.dir, &target).is_ok() {
                super::files::sync_dir(target.parent());
                self.published = true;
                let lock = self.lock.take().expect("a staging folder holds its lock until published");
                return Ok((target, lock));
            }
            tried.push(target);
            if tried.len() >= 1000 {
                break;
            }
        }
        match tried.as_slice() {
            [one] if is_run(one) => bail!("{} already holds a run; continue it with --resume {}", one.display(), one.display()),
            [one] => bail!("{} already holds files; choose an empty or new folder for --out", one.display()),
            _ => bail!("no free run folder among {} candidates", tried.len()),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            // Ours alone: created above with a unique name, never renamed.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_folder_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FolderLock::acquire(dir.path()).unwrap();
        let err = FolderLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use") && err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(lock);
        FolderLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn publishing_never_overwrites_and_cleans_up_after_itself() {
        let dir = tempfile::tempdir().unwrap();
        let busy = dir.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("thesis.tex"), "mine").unwrap();
        let s = Staging::new(dir.path()).unwrap();
        std::fs::write(s.dir().join("config.toml"), "x").unwrap();
        let err = s.publish([busy.clone()]).unwrap_err().to_string();
        assert!(err.contains("already holds files"), "{err}");
        assert_eq!(std::fs::read_to_string(busy.join("thesis.tex")).unwrap(), "mine");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the failed staging folder is gone");

        let s = Staging::new(dir.path()).unwrap();
        std::fs::write(s.dir().join("config.toml"), "x").unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let (run, _lock) = s.publish([busy.clone(), empty.clone()]).unwrap();
        assert_eq!(run, empty);
        assert!(empty.join("config.toml").exists());
        let err = FolderLock::acquire(&empty).unwrap_err().to_string();
        assert!(err.contains("in use"), "the lock moves with the folder: {err}");
    }
}
