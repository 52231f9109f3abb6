//! The operating-system side of the embedded cluster: the user it runs as, ownership and
//! permissions, the socket directory, advisory locks and `postmaster.pid`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::{Pid, Uid, User};
use tokio::time::Instant;

use super::{EmbeddedError, IoContext};

/// The port in the socket's name (`.s.PGSQL.5432`). The cluster listens on no TCP port, so it
/// cannot clash with another server; every cluster has a socket directory of its own.
pub const SOCKET_PORT: u16 = 5432;

/// `sizeof(sockaddr_un.sun_path)`, the terminating NUL included.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SUN_PATH_LEN: usize = 108;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SUN_PATH_LEN: usize = 104;

/// The system user run as when unboxd runs as root and UNBOX_PG_USER is not set.
const DEFAULT_USER: &str = "postgres";
/// …and when that does not exist either.
const FALLBACK_USER: &str = "nobody";

/// Who runs `initdb`, `pg_ctl` and `postgres`.
#[derive(Debug, Clone)]
pub struct ClusterUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// True when unboxd runs as root: children switch to `uid`/`gid` (std also drops the
    /// supplementary groups when root spawns with a uid), and the cluster folder is chowned.
    pub switch: bool,
}

impl ClusterUser {
    /// Not root: the current user. Root: `requested` (UNBOX_PG_USER), else the `postgres`
    /// system user, else `nobody`.
    pub fn resolve(requested: Option<&str>) -> Result<ClusterUser, EmbeddedError> {
        let lookup = |name: &str| {
            User::from_name(name).map_err(|errno| EmbeddedError::Io {
                context: format!("looking up the system user `{name}`"),
                source: errno.into(),
            })
        };
        if !Uid::effective().is_root() {
            let uid = Uid::effective();
            let name = User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |user| user.name);
            return Ok(ClusterUser {
                name,
                uid: uid.as_raw(),
                gid: nix::unistd::Gid::effective().as_raw(),
                switch: false,
            });
        }
        let user = match requested {
            Some(name) => lookup(name)?.ok_or_else(|| EmbeddedError::NoSuchUser {
                user: name.to_owned(),
            })?,
            None => match lookup(DEFAULT_USER)? {
                Some(user) => user,
                None => {
                    let user = lookup(FALLBACK_USER)?.ok_or_else(|| EmbeddedError::NoSuchUser {
                        user: DEFAULT_USER.to_owned(),
                    })?;
                    tracing::warn!(
                        "no `postgres` system user: the embedded PostgreSQL cluster runs as `nobody`, \
                         so any other process running as `nobody` can reach it; create a `postgres` \
                         system user (e.g. `useradd --system postgres`) or set UNBOX_PG_USER"
                    );
                    user
                }
            },
        };
        if user.uid.is_root() {
            return Err(EmbeddedError::RootUser { user: user.name });
        }
        Ok(ClusterUser {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            switch: true,
        })
    }

    /// Whether this user may enter `dir` (search permission): POSIX mode bits, where the owner
    /// class wins over the group class over others. Supplementary groups do not count (they
    /// are dropped when switching users); ACLs are not consulted.
    fn can_enter(&self, metadata: &fs::Metadata) -> bool {
        let mode = metadata.mode();
        let bit = if metadata.uid() == self.uid {
            0o100
        } else if metadata.gid() == self.gid {
            0o010
        } else {
            0o001
        };
        mode & bit != 0
    }

    /// Fails with the first directory from `/` down to `dir` (included) this user cannot enter.
    pub fn check_traversable(&self, dir: &Path) -> Result<(), EmbeddedError> {
        let mut ancestors: Vec<&Path> = dir.ancestors().collect();
        ancestors.reverse();
        for ancestor in ancestors {
            let metadata =
                fs::metadata(ancestor).context(|| format!("reading {}", ancestor.display()))?;
            if !self.can_enter(&metadata) {
                return Err(EmbeddedError::NotTraversable {
                    user: self.name.clone(),
                    dir: ancestor.to_path_buf(),
                    mode: metadata.mode() & 0o7777,
                    owner: metadata.uid(),
                });
            }
        }
        Ok(())
    }

    /// Hands `path` to this user (when switching users).
    pub fn chown(&self, path: &Path) -> Result<(), EmbeddedError> {
        if self.switch {
            std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid)).context(|| {
                format!(
                    "changing the owner of {} to `{}`",
                    path.display(),
                    self.name
                )
            })?;
        }
        Ok(())
    }

    /// Hands the whole tree under `root` to this user (when switching users), touching only
    /// entries with another owner; symbolic links are changed, never followed.
    pub fn chown_tree(&self, root: &Path) -> Result<(), EmbeddedError> {
        if !self.switch {
            return Ok(());
        }
        let mut pending = vec![root.to_path_buf()];
        while let Some(path) = pending.pop() {
            let metadata = match fs::symlink_metadata(&path) {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).context(|| format!("reading {}", path.display())),
            };
            if metadata.uid() != self.uid || metadata.gid() != self.gid {
                self.chown(&path)?;
            }
            if metadata.is_dir() {
                for entry in
                    fs::read_dir(&path).context(|| format!("listing {}", path.display()))?
                {
                    pending.push(
                        entry
                            .context(|| format!("listing {}", path.display()))?
                            .path(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Creates `dir` with mode 0700 unless it exists.
pub fn create_dir(dir: &Path) -> Result<(), EmbeddedError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).context(|| format!("creating {}", dir.display())),
    }
}

/// Creates `dir` (mode 0700) if it does not exist, hands it to `user` and makes its mode 0700.
pub fn private_dir(dir: &Path, user: &ClusterUser) -> Result<(), EmbeddedError> {
    create_dir(dir)?;
    user.chown(dir)?;
    set_mode(dir, 0o700)
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), EmbeddedError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .context(|| format!("setting the mode of {} to {mode:o}", path.display()))
}

/// Where the cluster's socket goes: `<cluster>/run` when `<cluster>/run/.s.PGSQL.5432` fits in
/// a unix socket address; else `/tmp/unbox-pg-<16 hex>`, named after the canonical data
/// directory so that every process on that data directory derives the same one.
pub fn socket_dir_for(cluster_dir: &Path, data_dir: &Path) -> PathBuf {
    let run = cluster_dir.join("run");
    let socket_name_len = format!("/.s.PGSQL.{SOCKET_PORT}").len();
    if run.as_os_str().len() + socket_name_len < SUN_PATH_LEN {
        run
    } else {
        PathBuf::from(format!(
            "/tmp/unbox-pg-{:016x}",
            fnv1a(data_dir.as_os_str().as_bytes())
        ))
    }
}

/// FNV-1a, 64 bits: stable across releases and platforms (unlike std's `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Prepares a socket directory outside the cluster folder (in /tmp, shared with everyone):
/// creates it 0700 for `user`, or accepts an existing one only if it is a real directory owned
/// by `user` (or by root, which then hands it over).
pub fn prepare_shared_socket_dir(dir: &Path, user: &ClusterUser) -> Result<(), EmbeddedError> {
    create_dir(dir)?;
    let metadata = fs::symlink_metadata(dir).context(|| format!("reading {}", dir.display()))?;
    let problem = if !metadata.is_dir() {
        Some("exists but is not a directory".to_owned())
    } else if metadata.uid() != user.uid && !(user.switch && metadata.uid() == 0) {
        Some(format!(
            "belongs to uid {}, not to `{}` (uid {})",
            metadata.uid(),
            user.name,
            user.uid
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(EmbeddedError::SocketDir {
            dir: dir.to_path_buf(),
            problem,
        });
    }
    user.chown(dir)?;
    if metadata.mode() & 0o777 != 0o700 {
        set_mode(dir, 0o700)?;
    }
    Ok(())
}

/// An advisory lock (flock) on a file, released when dropped. flock locks belong to the open
/// file, so two opens in one process exclude each other too (threads, tests), and the kernel
/// releases them when the process dies, however it dies. The file is opened close-on-exec, so
/// `postgres` never inherits it.
#[derive(Debug)]
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Takes the lock if it is free; `None` when another holder has it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>, EmbeddedError> {
        let file = open_lock_file(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(FileLock { _lock: lock })),
            Err((_, errno)) if errno == Errno::EWOULDBLOCK || errno == Errno::EINTR => Ok(None),
            Err((_, errno)) => Err(EmbeddedError::Io {
                context: format!("locking {}", path.display()),
                source: errno.into(),
            }),
        }
    }

    /// Takes the lock, polling until `wait` has passed; `None` if it is still held then.
    pub async fn acquire(path: &Path, wait: Duration) -> Result<Option<FileLock>, EmbeddedError> {
        let deadline = Instant::now() + wait;
        let mut file = open_lock_file(path)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Some(FileLock { _lock: lock })),
                Err((back, errno)) if errno == Errno::EWOULDBLOCK || errno == Errno::EINTR => {
                    file = back
                }
                Err((_, errno)) => {
                    return Err(EmbeddedError::Io {
                        context: format!("locking {}", path.display()),
                        source: errno.into(),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File, EmbeddedError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .context(|| format!("opening {}", path.display()))
}

/// What `postmaster.pid` says about a (possibly) running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    pub pid: i32,
    pub port: u16,
    /// The first unix socket directory; None when the server has none.
    pub socket_dir: Option<PathBuf>,
}

impl PidFile {
    /// Reads `<pgdata>/postmaster.pid`; None when it does not exist (or is being written).
    pub fn read(pgdata: &Path) -> Result<Option<PidFile>, EmbeddedError> {
        let path = pgdata.join("postmaster.pid");
        match fs::read(&path) {
            Ok(bytes) => Ok(PidFile::parse(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context(|| format!("reading {}", path.display())),
        }
    }

    /// Lines: pid, data directory, start time, port, first socket directory, listen address,
    /// shared memory key, status.
    pub fn parse(bytes: &[u8]) -> Option<PidFile> {
        let mut lines = bytes.split(|b| *b == b'\n');
        let pid: i32 = std::str::from_utf8(lines.next()?)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let port = lines
            .nth(2)
            .and_then(|line| std::str::from_utf8(line).ok()?.trim().parse().ok());
        let socket_dir = lines
            .next()
            .filter(|line| !line.is_empty())
            .map(|line| PathBuf::from(std::ffi::OsStr::from_bytes(line)));
        Some(PidFile {
            pid,
            port: port.unwrap_or(SOCKET_PORT),
            socket_dir,
        })
    }

    /// The state of the process named in the file. After a reboot the pid may belong to another
    /// process: the caller confirms with a connection.
    pub fn process_state(&self) -> ProcessState {
        process_state(self.pid)
    }

    /// Removes `postmaster.pid` and the socket's lock file when they name a zombie: a postmaster
    /// that exited but was not reaped (PID 1 in some containers never reaps), which PostgreSQL
    /// itself would take for a running server and refuse to start.
    pub fn remove_zombie_lock_files(&self, pgdata: &Path) -> Result<(), EmbeddedError> {
        if self.process_state() != ProcessState::Zombie {
            return Ok(());
        }
        tracing::warn!(pid = self.pid, pgdata = %pgdata.display(), "the previous postmaster exited but was never reaped; removing its lock files");
        let mut files = vec![pgdata.join("postmaster.pid")];
        if let Some(socket_dir) = &self.socket_dir {
            let socket_lock = socket_dir.join(format!(".s.PGSQL.{}.lock", self.port));
            let names_pid = fs::read(&socket_lock)
                .ok()
                .and_then(|bytes| PidFile::parse(&bytes))
                .is_some_and(|lock| lock.pid == self.pid);
            if names_pid {
                files.push(socket_lock);
            }
        }
        for file in files {
            match fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context(|| format!("removing {}", file.display())),
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    /// Exited, not yet reaped by its parent (detected on Linux only).
    Zombie,
    Gone,
}

pub fn process_state(pid: i32) -> ProcessState {
    if pid <= 0 {
        return ProcessState::Gone;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return ProcessState::Gone,
    }
    #[cfg(target_os = "linux")]
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S …": the state follows the last ')'.
        if let Some((_, rest)) = stat.rsplit_once(')')
            && rest.trim_start().starts_with(['Z', 'X'])
        {
            return ProcessState::Zombie;
        }
    }
    ProcessState::Running
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn socket_dir_moves_to_tmp_when_the_path_is_too_long() {
        let short = Path::new("/srv/unbox/data");
        assert_eq!(
            socket_dir_for(&short.join("postgres"), short),
            Path::new("/srv/unbox/data/postgres/run")
        );
        let long = PathBuf::from(format!("/srv/{}", "x".repeat(100)));
        let dir = socket_dir_for(&long.join("postgres"), &long);
        assert!(
            dir.starts_with("/tmp") && dir.to_string_lossy().starts_with("/tmp/unbox-pg-"),
            "{dir:?}"
        );
        assert_eq!(
            dir,
            socket_dir_for(&long.join("postgres"), &long),
            "deterministic"
        );
        let other = PathBuf::from(format!("/srv/{}", "y".repeat(100)));
        assert_ne!(dir, socket_dir_for(&other.join("postgres"), &other));
        // The boundary: the longest path that still fits.
        let name_len = "/.s.PGSQL.5432".len();
        let fits = PathBuf::from(format!(
            "/{}",
            "a".repeat(SUN_PATH_LEN - 1 - name_len - 1 - "/postgres/run".len())
        ));
        assert_eq!(
            fits.join("postgres/run").as_os_str().len() + name_len,
            SUN_PATH_LEN - 1
        );
        assert!(socket_dir_for(&fits.join("postgres"), &fits).ends_with("postgres/run"));
        let longer = PathBuf::from(format!("{}b", fits.display()));
        assert!(socket_dir_for(&longer.join("postgres"), &longer).starts_with("/tmp"));
    }

    #[test]
    fn pid_file_parsing() {
        let text = b"4242\n/srv/data/postgres/data\n1700000000\n5432\n/srv/data/postgres/run\n\n  5432001    32768\nready   \n";
        assert_eq!(
            PidFile::parse(text),
            Some(PidFile {
                pid: 4242,
                port: 5432,
                socket_dir: Some(PathBuf::from("/srv/data/postgres/run"))
            })
        );
        assert_eq!(
            PidFile::parse(b"4242\n/x\n"),
            Some(PidFile {
                pid: 4242,
                port: 5432,
                socket_dir: None
            })
        );
        assert_eq!(PidFile::parse(b""), None);
        assert_eq!(PidFile::parse(b"garbage\n"), None);
    }

    #[test]
    fn process_states() {
        assert_eq!(
            process_state(std::process::id() as i32),
            ProcessState::Running
        );
        assert_eq!(process_state(0), ProcessState::Gone);
        assert_eq!(process_state(-1), ProcessState::Gone);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        #[cfg(target_os = "linux")]
        {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while process_state(pid) != ProcessState::Zombie {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the unreaped child never showed as a zombie"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        child.wait().unwrap();
        assert_eq!(process_state(pid), ProcessState::Gone);
    }

    #[tokio::test]
    async fn locks_exclude_each_other_within_one_process() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("test.lock");
        let first = FileLock::try_acquire(&path).unwrap();
        assert!(first.is_some());
        assert!(FileLock::try_acquire(&path).unwrap().is_none());
        assert!(
            FileLock::acquire(&path, Duration::from_millis(50))
                .await
                .unwrap()
                .is_none()
        );
        drop(first);
        assert!(
            FileLock::acquire(&path, Duration::from_millis(50))
                .await
                .unwrap()
                .is_some()
        );
    }
}
