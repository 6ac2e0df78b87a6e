//! Files that are never seen half-written: every file tinygpt writes goes to a temporary name
//! beside its destination and is renamed into place, so a reader (or a run interrupted by a
//! crash, Ctrl-C or a full disk) finds the old file or the new one, never a mix. A rename
//! within one directory is atomic on the file systems tinygpt targets.
//!
//! Directories (a checkpoint is several files) are swapped with the same idea one level up; see
//! [`crate::train::checkpoint`].

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// Write `contents` to `path` atomically (see the module docs).
///
/// # Errors
/// [`Error::Io`] naming `path` when the file cannot be written or moved into place; `path` is
/// then untouched.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomically_with(path, |tmp| {
        std::fs::write(tmp, contents).map_err(|err| Error::io(path, "write", err))
    })
}

/// Serialise `value` as pretty JSON into `path`, atomically.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    // tinygpt's records are structs of numbers, strings and lists, which always serialise.
    let text = serde_json::to_string_pretty(value).expect("tinygpt's records serialise to JSON");
    write_atomically(path, (text + "\n").as_bytes())
}

/// Let `write` produce the file at a temporary path, then rename it to `path`. The temporary
/// file is created first, exclusively, under a name no other file has (hidden, with this
/// process's id and a counter: `.loss.tmp-PID-N.png` for `loss.png`), so no file of the user's
/// is taken and no link followed; the name keeps the extension because some writers, such as
/// image encoders, pick the format from it. On failure the temporary file is removed and
/// `path` is untouched.
///
/// # Errors
/// `write`'s error, or [`Error::Io`] naming `path` when the temporary file cannot be created
/// or moved into place.
pub fn write_atomically_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = reserve_temporary(path)?;
    let written = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path)
            .map_err(|err| Error::io(path, "move a finished file into place", err))
    });
    if written.is_err() {
        // Best effort: a stale temporary file would only confuse.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Create an empty file beside `path` under a name nothing else has (see
/// [`write_atomically_with`]) and return its path.
fn reserve_temporary(path: &Path) -> Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let extension = path
        .extension()
        .map(|ext| format!(".{}", ext.to_string_lossy()))
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!(".{stem}.tmp-{}-{n}{extension}", std::process::id());
        let tmp = path.with_file_name(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(_) => return Ok(tmp),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(Error::io(path, "create a file beside", err)),
        }
    }
}

/// Refuse to write `out` inside `dir` (the checkpoint a command reads), `--force` or not:
/// the file would replace or mix with what is being read.
///
/// # Errors
/// [`Error::Config`] naming both.
pub fn refuse_inside(out: &Path, dir: &Path) -> Result<()> {
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // A directory that does not exist holds no checkpoint (the write will say what is wrong).
    if let (Ok(parent), Ok(dir)) = (parent.canonicalize(), dir.canonicalize())
        && parent.starts_with(&dir)
    {
        return Err(Error::Config(format!(
            "{} is inside the checkpoint being read ({}); write the file elsewhere",
            out.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Check, before any work, that a file can be written at `path`: its directory exists and
/// `path` is not a directory; and that it is not replaced unless `force`.
///
/// # Errors
/// [`Error::Config`] saying which.
pub fn check_output(path: &Path, force: bool) -> Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(Error::Config(format!(
            "{}: the directory {} does not exist",
            path.display(),
            parent.display()
        )));
    }
    if path.is_dir() {
        return Err(Error::Config(format!(
            "{} is a directory; give a file name",
            path.display()
        )));
    }
    if path.exists() && !force {
        return Err(Error::Config(format!(
            "{} exists; pick another file, or pass --force to replace it",
            path.display()
        )));
    }
    Ok(())
}

/// Give `path` the permissions a file newly created in its directory gets (the user's umask
/// applied to read and write for all), for files written by a library that creates them more
/// restrictively (Burn's safetensors writer publishes a private temporary file).
///
/// # Errors
/// [`Error::Io`] when the permissions cannot be read or set.
pub fn give_default_permissions(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let mut probe_name = std::ffi::OsString::from(".");
        probe_name.push(path.file_name().unwrap_or_default());
        probe_name.push(".mode-probe");
        let probe = path.with_file_name(probe_name);
        std::fs::File::create(&probe).map_err(|err| Error::io(&probe, "create", err))?;
        let mode = std::fs::metadata(&probe).map(|meta| meta.permissions());
        let _ = std::fs::remove_file(&probe);
        let mode = mode.map_err(|err| Error::io(&probe, "read the permissions of", err))?;
        std::fs::set_permissions(path, mode)
            .map_err(|err| Error::io(path, "set the permissions of", err))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Create `path` and its parents.
///
/// # Errors
/// [`Error::Io`] when it cannot be created.
pub fn ensure_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|err| Error::io(path, "create the directory", err))
}

/// Move `from` to `to`, replacing a file at `to`.
///
/// # Errors
/// [`Error::Io`] naming `to`.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|err| Error::io(to, "move a finished file into place", err))
}

/// Remove a directory and everything in it, if it exists.
///
/// # Errors
/// [`Error::Io`] when it exists but cannot be removed.
pub fn remove_dir_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(path, "remove the stale directory", err))
        }
        _ => Ok(()),
    }
}

/// Remove a file, if it exists.
///
/// # Errors
/// [`Error::Io`] when it exists but cannot be removed.
pub fn remove_file_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(path, "remove the stale file", err))
        }
        _ => Ok(()),
    }
}

/// Name of the lock file [`DirLock`] keeps in a directory.
pub const LOCK_FILE: &str = ".tinygpt.lock";

/// A directory reserved for one process: while it lives, `DIR/.tinygpt.lock` holds this
/// process's id (and, on Linux, when it started), and [`DirLock::acquire`] in any other
/// process fails with [`Error::Locked`] naming it. Dropping it removes the file. A lock left
/// behind by a process that is gone (it was killed, or the machine restarted) is taken over,
/// where the system lets us tell (Linux: `/proc/PID`): also when its process id now belongs to
/// another process, which started at another time.
#[derive(Debug)]
pub struct DirLock {
    file: PathBuf,
}

impl DirLock {
    /// Lock `dir`, which must exist.
    ///
    /// # Errors
    /// [`Error::Locked`] when a live process holds it, [`Error::Io`] when the lock file cannot
    /// be written.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let file = dir.join(LOCK_FILE);
        // Two tries: the second after removing a lock whose process is gone.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
            {
                Ok(mut handle) => {
                    use std::io::Write;
                    let pid = std::process::id();
                    let started = start_time(pid).map(|t| format!(" {t}")).unwrap_or_default();
                    writeln!(handle, "{pid}{started}")
                        .map_err(|err| Error::io(&file, "write", err))?;
                    return Ok(Self { file });
                }
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&file).ok().and_then(|text| {
                        let mut fields = text.split_whitespace();
                        let pid = fields.next()?.parse::<u32>().ok()?;
                        Some((pid, fields.next().and_then(|t| t.parse::<u64>().ok())))
                    });
                    match holder {
                        Some((pid, started)) if holds_lock(pid, started) => {
                            return Err(Error::Locked {
                                path: dir.to_path_buf(),
                                pid,
                                lock_file: file,
                            });
                        }
                        // Gone, or a file we cannot read: stale.
                        _ => {
                            let _ = std::fs::remove_file(&file);
                        }
                    }
                }
                Err(err) => return Err(Error::io(&file, "create the lock file", err)),
            }
        }
        Err(Error::io(
            &file,
            "create the lock file",
            std::io::Error::other("it reappeared after a stale one was removed"),
        ))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Whether the process that wrote a lock (`pid`, started at `started` when the lock says)
/// still runs: a process of that id runs, and (when both are known) it started then.
fn holds_lock(pid: u32, started: Option<u64>) -> bool {
    if !process_is_running(pid) {
        return false;
    }
    match (started, start_time(pid)) {
        (Some(recorded), Some(actual)) => recorded == actual,
        _ => true,
    }
}

/// When process `pid` started, in clock ticks since boot (Linux's `/proc/PID/stat`, field 22);
/// `None` where the system does not say.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` runs. Without a way to tell, assume it does: a wrongly kept lock
/// costs a message, a wrongly broken one a corrupted run.
fn process_is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_file_keeps_the_extension_and_takes_no_existing_name() {
        let dir = std::env::temp_dir().join(format!("tinygpt-tmpname-{}", std::process::id()));
        ensure_dir(&dir).unwrap();
        let png = reserve_temporary(&dir.join("loss.png")).unwrap();
        assert_eq!(png.extension().unwrap(), "png");
        assert!(
            png.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".loss.tmp-")
        );
        // A file of the user's at the old fixed name is left alone.
        std::fs::write(dir.join("notes.tmp.jsonl"), "mine").unwrap();
        write_atomically(&dir.join("notes.jsonl"), b"new").unwrap();
        assert_eq!(std::fs::read(dir.join("notes.tmp.jsonl")).unwrap(), b"mine");
        assert_ne!(
            reserve_temporary(&dir.join("a")).unwrap(),
            reserve_temporary(&dir.join("a")).unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("tinygpt-fs-{}", std::process::id()));
        ensure_dir(&dir).unwrap();
        let path = dir.join("kept.txt");
        write_atomically(&path, b"old").unwrap();
        let failed = write_atomically_with(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::Data("the writer failed".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "a temporary file was left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_directory_names_its_process_and_a_stale_lock_is_taken_over() {
        let dir = std::env::temp_dir().join(format!("tinygpt-lock-{}", std::process::id()));
        ensure_dir(&dir).unwrap();
        let lock = DirLock::acquire(&dir).unwrap();
        match DirLock::acquire(&dir) {
            Err(Error::Locked { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected the directory to be locked, got {other:?}"),
        }
        drop(lock);
        assert!(!dir.join(LOCK_FILE).exists());
        // A lock left by a process that no longer runs (pid_max on Linux is at most 2^22).
        std::fs::write(dir.join(LOCK_FILE), "4194304\n").unwrap();
        let taken_over = DirLock::acquire(&dir);
        assert!(taken_over.is_ok(), "{taken_over:?}");
        drop(taken_over);
        if let Some(started) = start_time(std::process::id()) {
            // A live process id that started at another time: the id was reused, the lock is
            // stale.
            let reused = format!("{} {}\n", std::process::id(), started + 1);
            std::fs::write(dir.join(LOCK_FILE), reused).unwrap();
            let taken_over = DirLock::acquire(&dir);
            assert!(taken_over.is_ok(), "{taken_over:?}");
            drop(taken_over);
            // The same id and start time: the holder runs.
            let live = format!("{} {started}\n", std::process::id());
            std::fs::write(dir.join(LOCK_FILE), live).unwrap();
            assert!(matches!(DirLock::acquire(&dir), Err(Error::Locked { .. })));
            std::fs::remove_file(dir.join(LOCK_FILE)).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
