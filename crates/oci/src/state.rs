//! Where containers live between commands: one directory per container under the state root
//! (`--root`), holding `state.json` (what `create` learnt: pid, bundle, cgroups, the config)
//! and, until `start`, the `exec.fifo` the container's init waits on. There is no daemon: the
//! processes and these files are the whole truth, and a command holds the container's lock
//! (flock on its directory) while it changes either.

use crate::cgroups::Manager;
use crate::{sys, Error, Result};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";
/// The OCI runtime-spec version our state output claims (runc 1.1 prints the same).
pub const OCI_VERSION: &str = "1.0.2-dev";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What is saved in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    pub pid: i32,
    /// The init's start time: a pid recycled by another process is not our container.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 with nanoseconds, UTC, as runc prints it.
    pub created: String,
    pub owner: String,
    pub rootless: bool,
    pub cgroup: Option<Manager>,
    /// config.json as it was at create, kept unparsed: most commands need only the hooks,
    /// annotations and cgroups below, and parsing a whole spec costs time and memory on
    /// every `start`/`state`/`delete` (`spec()` parses it for `exec` and `update`).
    pub config: Box<serde_json::value::RawValue>,
    #[serde(default)]
    pub oci_version: String,
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
    /// Set once `start` released the init (a created container that died is still stopped).
    #[serde(default)]
    pub started: bool,
}

/// The state as `runc state` prints it (and as hooks receive it on stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Public {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

/// A container's directory under the state root, locked for as long as this value lives.
pub struct ContainerDir {
    pub path: PathBuf,
    _lock: OwnedFd,
}

/// runc's rule: letters, digits, `_ + - .`, not `.` or `..`; nothing that could make the id
/// a path outside the state root.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Other(format!("invalid container id format: {id}")))
    }
}

fn lock(dir: &Path, exclusive: bool) -> Result<OwnedFd> {
    let fd = sys::open(dir, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotExist(
                dir.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        } else {
            io_err(dir, e)
        }
    })?;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(fd.as_raw_fd(), op) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io_err(dir, e));
        }
    }
    Ok(fd)
}

pub fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state root, created 0700 when missing.
pub fn ensure_root(root: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(|e| io_err(root, e))
}

impl ContainerDir {
    /// Makes the directory of a new container; fails when the id is taken.
    pub fn create(root: &Path, id: &str) -> Result<ContainerDir> {
        validate_id(id)?;
        ensure_root(root)?;
        let path = root.join(id);
        if let Err(e) = fs::create_dir(&path) {
            return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists(id.to_string())
            } else {
                io_err(&path, e)
            });
        }
        let lock = lock(&path, true)?;
        Ok(ContainerDir { path, _lock: lock })
    }

    /// Opens an existing container's directory, locked.
    pub fn open(root: &Path, id: &str) -> Result<ContainerDir> {
        validate_id(id)?;
        let path = root.join(id);
        let lock = lock(&path, true)?;
        // Deleted while we waited for the lock.
        if !path.join(STATE_FILE).exists() {
            return Err(Error::NotExist(id.to_string()));
        }
        Ok(ContainerDir { path, _lock: lock })
    }

    /// The lock's descriptor number (forked children close it).
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        self._lock.as_raw_fd()
    }

    pub fn fifo(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    pub fn load(&self) -> Result<Saved> {
        load_file(&self.path.join(STATE_FILE))
    }

    /// Written to a temporary name and renamed: a kill at any moment leaves the old or the
    /// new state, never half of one.
    pub fn save(&self, saved: &Saved) -> Result<()> {
        let tmp = self.path.join(".state.json.tmp");
        let data = serde_json::to_vec(saved).map_err(|e| Error::Other(e.to_string()))?;
        let mut f = fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(&data).map_err(|e| io_err(&tmp, e))?;
        drop(f);
        let dst = self.path.join(STATE_FILE);
        fs::rename(&tmp, &dst).map_err(|e| io_err(&dst, e))
    }

    pub fn remove(self) -> Result<()> {
        fs::remove_dir_all(&self.path).map_err(|e| io_err(&self.path, e))
    }
}

pub fn load_file(path: &Path) -> Result<Saved> {
    let data = fs::read(path).map_err(|e| io_err(path, e))?;
    serde_json::from_slice(&data)
        .map_err(|e| Error::Other(format!("{}: corrupt state file: {e}", path.display())))
}

impl Saved {
    /// The config saved at create.
    pub fn spec(&self) -> Result<Spec> {
        serde_json::from_str(self.config.get())
            .map_err(|e| Error::Other(format!("saved config of {}: {e}", self.id)))
    }

    pub fn init_alive(&self) -> bool {
        sys::process_exists(self.pid)
            && sys::start_time(self.pid) == Some(self.pid_start)
            && sys::proc_state(self.pid) != Some('Z')
    }

    /// The status as runc reports it, from the processes and files, not from memory.
    pub fn status(&self, dir: &Path) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if !self.started && dir.join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if let Some(cg) = &self.cgroup {
            if cg.is_frozen().unwrap_or(false) {
                return Status::Paused;
            }
        }
        Status::Running
    }

    pub fn public(&self, status: Status) -> Public {
        Public {
            oci_version: OCI_VERSION.to_string(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status: status.as_str().to_string(),
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations: self.annotations.clone().filter(|a| !a.is_empty()),
        }
    }
}

/// Every container under `root` (ids in name order), skipping entries that are not ours.
pub fn list(root: &Path) -> Result<Vec<(String, Saved)>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(root, e)),
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if validate_id(&name).is_err() {
            continue;
        }
        if let Ok(saved) = load_file(&entry.path().join(STATE_FILE)) {
            out.push((name, saved));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Now, as RFC 3339 with nanoseconds in UTC ("2024-05-01T10:20:30.123456789Z"), the form Go
/// prints and runc's users parse.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_767_225_599, 0), "2025-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn ids() {
        assert!(validate_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a b", "ü"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
