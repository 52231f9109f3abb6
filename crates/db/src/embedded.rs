//! The embedded PostgreSQL launcher: without `DATABASE_URL`, unboxd runs a private cluster
//! under its data directory.
//!
//! Layout, under `<data_dir>/postgres/` (the "cluster folder"):
//! - `data/`: PGDATA, created by `initdb` in `data.initdb/` and renamed into place, so a crash
//!   during the first run never leaves a half cluster behind;
//! - `postgres.log`: the server's log (`pg_ctl -l`);
//! - `run/`: the unix socket directory, unless its path is too long for a socket address (then
//!   `/tmp/unbox-pg-<16 hex of the data directory's path>`; see [`socket_dir_for`]);
//! - `owner.lock`, `control.lock`: advisory locks between unboxd processes.
//!
//! The cluster listens on no TCP port (`listen_addresses = ''`), only on a unix socket in a
//! 0700 directory owned by the cluster's user, so `trust` authentication reaches only that user
//! (and root). Settings are written to `data/unbox.conf` before every start and included from
//! `postgresql.conf`; `ALTER SYSTEM` still overrides them.
//!
//! As root, `initdb`, `pg_ctl` and `postgres` run as `UNBOX_PG_USER`, else the `postgres` system
//! user, else `nobody` (with a warning), and the cluster folder is handed to that user. That user
//! must be able to enter every directory down to the data directory: this is checked, and a
//! clear error names the directory that blocks it.
//!
//! Processes on one data directory: the serving process ([`ClusterRole::Owner`]) holds
//! `owner.lock` for its whole life and stops the cluster when it stops. An admin process
//! ([`ClusterRole::Guest`]) uses a running cluster, or starts one and stops it again only if no
//! Owner has appeared meanwhile. Every start and stop happens under `control.lock`, so two
//! processes never race `initdb`, start or stop. A running cluster is recognised by
//! `postmaster.pid` naming a live process whose socket accepts connections: a cluster left
//! behind by a killed unboxd is adopted; a stale pid file (after a reboot) is left to `pg_ctl`,
//! except one naming a zombie (an exited postmaster nobody reaped, e.g. under a container's
//! PID 1 that never reaps), which PostgreSQL would take for a live server: that one is removed.
//!
//! Dropping an [`EmbeddedCluster`] without [`EmbeddedCluster::stop`] is like a crash: the
//! cluster keeps running and the next start adopts it.

mod binaries;
mod host;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _};
use tokio::time::Instant;

pub use binaries::PgBinaries;
use host::{ClusterUser, FileLock, PidFile, ProcessState};
pub use host::{SOCKET_PORT, socket_dir_for};

/// The cluster's superuser (`initdb --username`).
pub const SUPERUSER: &str = "postgres";

/// `pg_ctl start -t`: a start after a crash replays WAL first, which may take a while.
const START_TIMEOUT_SECS: u32 = 120;
/// `pg_ctl stop -t`: a fast shutdown still writes a checkpoint.
const STOP_TIMEOUT_SECS: u32 = 120;
/// How long to wait for another process's start or stop (initdb + start at worst).
const CONTROL_LOCK_WAIT: Duration = Duration::from_secs(300);
/// How long an Owner retries `owner.lock` (a stopping Guest holds it for an instant).
const OWNER_LOCK_WAIT: Duration = Duration::from_millis(500);
/// How long a live postmaster may refuse connections (starting up, recovering) before we give up.
const READY_WAIT: Duration = Duration::from_secs(120);
/// Lines of the server log quoted in a start failure.
const LOG_TAIL_LINES: usize = 30;

const CONF_FILE: &str = "unbox.conf";
const CONF_INCLUDE: &str = "include = 'unbox.conf'";

/// Which kind of process uses the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRole {
    /// The serving process: one per data directory (`owner.lock`); stops the cluster when it stops.
    Owner,
    /// An `unboxd admin …` / `migrate` process: uses a running cluster, or runs one for its own
    /// duration.
    Guest,
}

/// What [`EmbeddedCluster::start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// First run: `initdb`, then started.
    Initialized,
    /// Started an existing cluster.
    Started,
    /// The cluster was already running (another process's, or left by a crashed one).
    Adopted,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    #[error("{}", binaries::NOT_FOUND_HELP)]
    BinariesNotFound,
    #[error(
        "UNBOX_PG_BIN is {dir}, which does not hold the PostgreSQL server binaries (missing: {missing}); \
         set it to the directory of initdb, pg_ctl and postgres, or unset it to search PATH and the usual places"
    )]
    BinariesNotInPgBin { dir: PathBuf, missing: String },
    #[error(
        "the embedded PostgreSQL cluster in {pgdata} was created by PostgreSQL {cluster}, but the server \
         binaries found are another version ({found}); install the PostgreSQL {cluster} server binaries (or set \
         UNBOX_PG_BIN to their directory), or upgrade the cluster with pg_upgrade"
    )]
    VersionMismatch {
        pgdata: PathBuf,
        cluster: String,
        found: String,
    },
    #[error(
        "{pgdata} exists but holds no PostgreSQL cluster (no PG_VERSION); move it aside so that a new one can be created"
    )]
    NotACluster { pgdata: PathBuf },
    #[error(
        "another unboxd is serving from {data_dir} (it holds {lock}); stop it first, or use another data directory"
    )]
    AnotherOwner { data_dir: PathBuf, lock: PathBuf },
    #[error(
        "gave up after {waited:?} waiting for {lock}: another unboxd process is starting or stopping the embedded PostgreSQL cluster"
    )]
    LockTimeout { lock: PathBuf, waited: Duration },
    #[error(
        "PostgreSQL refuses to run as root, and there is no system user `{user}` to run the embedded cluster as; \
         create it (e.g. `useradd --system {user}`), set UNBOX_PG_USER to another unprivileged user, \
         or set DATABASE_URL to use an existing server"
    )]
    NoSuchUser { user: String },
    #[error(
        "PostgreSQL refuses to run as root, and UNBOX_PG_USER is `{user}`, whose uid is 0; name an unprivileged user"
    )]
    RootUser { user: String },
    #[error(
        "the embedded PostgreSQL cluster runs as `{user}` (PostgreSQL refuses to run as root), but `{user}` cannot \
         enter {dir} (mode {mode:04o}, owner uid {owner}); let it through (e.g. `chmod o+x {dir}`), use a data \
         directory it can reach, or set DATABASE_URL to use an existing server"
    )]
    NotTraversable {
        user: String,
        dir: PathBuf,
        mode: u32,
        owner: u32,
    },
    #[error(
        "the socket directory {dir} {problem}; remove it, or use a shorter data directory path so that the socket fits inside it"
    )]
    SocketDir { dir: PathBuf, problem: String },
    #[error(
        "the path {path} contains a character pg_ctl cannot pass through its shell (one of \" $ ` \\ or a line break); \
         use a data directory without it"
    )]
    UnsupportedPath { path: PathBuf },
    #[error("{program} failed ({status}): {output}")]
    Command {
        program: String,
        status: String,
        output: String,
    },
    #[error("PostgreSQL did not start ({status}): {output}\nlast lines of {log}:\n{tail}")]
    StartFailed {
        status: String,
        output: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the PostgreSQL server in {pgdata} (pid {pid}) did not accept connections within {waited:?}: {source}"
    )]
    NotReady {
        pgdata: PathBuf,
        pid: i32,
        waited: Duration,
        #[source]
        source: sqlx::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Adds what was being done to an I/O error.
trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, EmbeddedError>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, EmbeddedError> {
        self.map_err(|source| EmbeddedError::Io {
            context: what(),
            source,
        })
    }
}

/// How to start the cluster; [`EmbeddedCluster::start`] takes [`EmbeddedOptions::from_env`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EmbeddedOptions {
    pub data_dir: PathBuf,
    pub role: ClusterRole,
    /// The directory of `initdb`, `pg_ctl` and `postgres`; None searches PATH and the usual places.
    pub pg_bin: Option<PathBuf>,
    /// The user to run PostgreSQL as when unboxd runs as root; None: `postgres`, else `nobody`.
    pub run_as: Option<String>,
    /// For test suites only: no fsync at all (`initdb --no-sync`, `fsync = off`,
    /// `synchronous_commit = off`, `full_page_writes = off`), several times faster on slow
    /// disks; an operating-system crash may then corrupt the cluster. Applies when this process
    /// initialises or starts the cluster, not when it adopts a running one.
    pub throwaway: bool,
}

impl EmbeddedOptions {
    pub fn from_env(data_dir: &Path, role: ClusterRole) -> EmbeddedOptions {
        let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        EmbeddedOptions {
            data_dir: data_dir.to_path_buf(),
            role,
            pg_bin: non_empty("UNBOX_PG_BIN").map(PathBuf::from),
            run_as: non_empty("UNBOX_PG_USER").map(|name| name.to_string_lossy().into_owned()),
            throwaway: false,
        }
    }
}

/// The files of one cluster folder.
#[derive(Debug, Clone)]
struct Paths {
    /// `<data_dir>/postgres`
    root: PathBuf,
    pgdata: PathBuf,
    initdb_tmp: PathBuf,
    log: PathBuf,
    owner_lock: PathBuf,
    control_lock: PathBuf,
}

impl Paths {
    fn new(root: PathBuf) -> Paths {
        Paths {
            pgdata: root.join("data"),
            initdb_tmp: root.join("data.initdb"),
            log: root.join("postgres.log"),
            owner_lock: root.join("owner.lock"),
            control_lock: root.join("control.lock"),
            root,
        }
    }
}

/// Runs the cluster's programs as the cluster's user.
#[derive(Debug, Clone)]
struct Runner {
    user: ClusterUser,
    bin: PgBinaries,
    version: String,
    paths: Paths,
    throwaway: bool,
}

impl Runner {
    /// A command for one of the server programs: as the cluster user, in the cluster folder,
    /// without the caller's PG* environment (PGPORT, PGDATA, … would change what runs), in a
    /// process group of its own (a Ctrl-C on the terminal reaches unboxd, not PostgreSQL).
    fn command(&self, program: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.as_bytes().starts_with(b"PG") {
                command.env_remove(key);
            }
        }
        command
            .env("HOME", &self.paths.root)
            .current_dir(&self.paths.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if self.user.switch {
            command.uid(self.user.uid).gid(self.user.gid);
            command
                .env("USER", &self.user.name)
                .env("LOGNAME", &self.user.name);
        }
        command
    }

    async fn output(&self, program: &Path, args: &[OsString]) -> Result<Output, EmbeddedError> {
        self.command(program)
            .args(args)
            .output()
            .await
            .context(|| format!("running {}", program.display()))
    }

    /// `initdb` into a temporary directory beside PGDATA, renamed into place when complete.
    async fn initdb(&self) -> Result<(), EmbeddedError> {
        let paths = &self.paths;
        if fs::symlink_metadata(&paths.initdb_tmp).is_ok() {
            tracing::info!(dir = %paths.initdb_tmp.display(), "removing an interrupted initdb");
            fs::remove_dir_all(&paths.initdb_tmp)
                .context(|| format!("removing {}", paths.initdb_tmp.display()))?;
        }
        host::private_dir(&paths.initdb_tmp, &self.user)?;
        let mut args: Vec<OsString> = vec![
            "--pgdata".into(),
            paths.initdb_tmp.clone().into(),
            "--auth=trust".into(),
            format!("--username={SUPERUSER}").into(),
            "--encoding=UTF8".into(),
            "--no-locale".into(),
        ];
        if self.throwaway {
            args.push("--no-sync".into());
        }
        let output = self.output(&self.bin.initdb, &args).await?;
        if !output.status.success() {
            return Err(EmbeddedError::Command {
                program: self.bin.initdb.display().to_string(),
                status: output.status.to_string(),
                output: command_output(&output),
            });
        }
        ensure_conf_include(&paths.initdb_tmp)?;
        fs::rename(&paths.initdb_tmp, &paths.pgdata).context(|| {
            format!(
                "renaming {} to {}",
                paths.initdb_tmp.display(),
                paths.pgdata.display()
            )
        })?;
        File::open(&paths.root)
            .and_then(|dir| dir.sync_all())
            .context(|| format!("syncing {}", paths.root.display()))?;
        Ok(())
    }

    /// Starts the stopped cluster (creating it on the first run); runs under `control.lock`.
    async fn launch(&self, data_dir: &Path) -> Result<(Startup, PidFile), EmbeddedError> {
        let paths = &self.paths;
        let startup = if fs::symlink_metadata(&paths.pgdata).is_err() {
            tracing::info!(
                data_dir = %data_dir.display(),
                user = %self.user.name,
                "creating the embedded PostgreSQL cluster (initdb)"
            );
            self.initdb().await?;
            Startup::Initialized
        } else if paths.pgdata.join("PG_VERSION").is_file() {
            Startup::Started
        } else {
            return Err(EmbeddedError::NotACluster {
                pgdata: paths.pgdata.clone(),
            });
        };

        let socket_dir = socket_dir_for(&paths.root, data_dir);
        if socket_dir.starts_with(&paths.root) {
            host::private_dir(&socket_dir, &self.user)?;
        } else {
            if self.user.switch
                && let Some(parent) = socket_dir.parent()
            {
                self.user.check_traversable(parent)?;
            }
            host::prepare_shared_socket_dir(&socket_dir, &self.user)?;
        }
        ensure_conf_include(&paths.pgdata)?;
        write_conf(&paths.pgdata, &socket_dir, self.throwaway)?;
        self.user.chown_tree(&paths.root)?;
        fix_pgdata_mode(&paths.pgdata)?;

        self.pg_ctl_start().await?;
        let running =
            running_cluster(&paths.pgdata)
                .await?
                .ok_or_else(|| EmbeddedError::StartFailed {
                    status: "pg_ctl reported success".into(),
                    output: "but the server does not accept connections".into(),
                    log: paths.log.clone(),
                    tail: log_tail(&paths.log, 0, LOG_TAIL_LINES),
                })?;
        Ok((startup, running))
    }

    async fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        let log_offset = fs::metadata(&self.paths.log).map_or(0, |m| m.len());
        let args: Vec<OsString> = vec![
            "start".into(),
            "-D".into(),
            self.paths.pgdata.clone().into(),
            "-l".into(),
            self.paths.log.clone().into(),
            "-w".into(),
            "-t".into(),
            START_TIMEOUT_SECS.to_string().into(),
            "-s".into(),
            "-p".into(),
            self.bin.postgres.clone().into(),
        ];
        let output = self.output(&self.bin.pg_ctl, &args).await?;
        if output.status.success() {
            return Ok(());
        }
        Err(EmbeddedError::StartFailed {
            status: output.status.to_string(),
            output: command_output(&output),
            log: self.paths.log.clone(),
            tail: log_tail(&self.paths.log, log_offset, LOG_TAIL_LINES),
        })
    }

    async fn pg_ctl_stop(&self) -> Result<(), EmbeddedError> {
        let args: Vec<OsString> = vec![
            "stop".into(),
            "-D".into(),
            self.paths.pgdata.clone().into(),
            "-m".into(),
            "fast".into(),
            "-w".into(),
            "-t".into(),
            STOP_TIMEOUT_SECS.to_string().into(),
            "-s".into(),
        ];
        let output = self.output(&self.bin.pg_ctl, &args).await?;
        if output.status.success() {
            return Ok(());
        }
        Err(EmbeddedError::Command {
            program: format!("{} stop", self.bin.pg_ctl.display()),
            status: output.status.to_string(),
            output: command_output(&output),
        })
    }
}

/// A private PostgreSQL cluster under a data directory, started (or found running) by
/// [`EmbeddedCluster::start`]. Stop it with [`EmbeddedCluster::stop`]; dropping it without
/// stopping is like a crash: the cluster keeps running and the next start adopts it.
#[derive(Debug)]
pub struct EmbeddedCluster {
    role: ClusterRole,
    startup: Startup,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    pid: i32,
    runner: Runner,
    /// Held for an Owner's whole life.
    _owner_lock: Option<FileLock>,
    stopped: bool,
}

impl EmbeddedCluster {
    /// Finds the binaries, runs `initdb` on the first run, and starts the cluster unless one
    /// already runs on this data directory. `UNBOX_PG_BIN` and `UNBOX_PG_USER` apply (see
    /// [`EmbeddedOptions`]).
    pub async fn start(
        data_dir: &Path,
        role: ClusterRole,
    ) -> Result<EmbeddedCluster, EmbeddedError> {
        Self::start_with(EmbeddedOptions::from_env(data_dir, role)).await
    }

    pub async fn start_with(options: EmbeddedOptions) -> Result<EmbeddedCluster, EmbeddedError> {
        let EmbeddedOptions {
            data_dir,
            role,
            pg_bin,
            run_as,
            throwaway,
        } = options;
        fs::create_dir_all(&data_dir)
            .context(|| format!("creating the data directory {}", data_dir.display()))?;
        let data_dir = fs::canonicalize(&data_dir)
            .context(|| format!("resolving the data directory {}", data_dir.display()))?;
        let user = ClusterUser::resolve(run_as.as_deref())?;
        if user.switch {
            user.check_traversable(&data_dir)?;
        }
        let (bin, version) =
            choose_binaries(pg_bin.as_deref(), &data_dir.join("postgres/data")).await?;
        check_shell_safe(&bin.postgres)?;

        // The cluster folder; it may be a symbolic link to another disk.
        let root = data_dir.join("postgres");
        host::create_dir(&root)?;
        let root = fs::canonicalize(&root).context(|| format!("resolving {}", root.display()))?;
        check_shell_safe(&root)?;
        if user.switch
            && let Some(parent) = root.parent()
            && parent != data_dir
        {
            user.check_traversable(parent)?;
        }
        host::private_dir(&root, &user)?;
        let paths = Paths::new(root);
        let runner = Runner {
            user,
            bin,
            version,
            paths,
            throwaway,
        };
        let paths = &runner.paths;

        let owner_lock = match role {
            ClusterRole::Guest => None,
            ClusterRole::Owner => Some(
                FileLock::acquire(&paths.owner_lock, OWNER_LOCK_WAIT)
                    .await?
                    .ok_or_else(|| EmbeddedError::AnotherOwner {
                        data_dir: data_dir.clone(),
                        lock: paths.owner_lock.clone(),
                    })?,
            ),
        };
        let control = control_lock(paths).await?;

        let (startup, running) = match running_cluster(&paths.pgdata).await? {
            Some(running) => (Startup::Adopted, running),
            None => runner.launch(&data_dir).await?,
        };
        drop(control);

        let socket_dir = running
            .socket_dir
            .unwrap_or_else(|| socket_dir_for(&paths.root, &data_dir));
        let message = match startup {
            Startup::Initialized => "embedded PostgreSQL cluster created and started",
            Startup::Started => "embedded PostgreSQL cluster started",
            Startup::Adopted => "embedded PostgreSQL cluster already running; using it",
        };
        tracing::info!(
            data_dir = %data_dir.display(),
            socket_dir = %socket_dir.display(),
            pid = running.pid,
            role = ?role,
            user = %runner.user.name,
            version = %runner.version,
            binaries = %runner.bin.dir.display(),
            "{message}"
        );
        Ok(EmbeddedCluster {
            role,
            startup,
            data_dir,
            socket_dir,
            port: running.port,
            pid: running.pid,
            runner,
            _owner_lock: owner_lock,
            stopped: false,
        })
    }

    /// A connection URL for database `dbname` over the unix socket:
    /// `postgres:///DBNAME?host=SOCKET_DIR&port=5432&user=postgres&sslmode=disable`.
    pub fn database_url(&self, dbname: &str) -> String {
        format!(
            "postgres:///{}?host={}&port={}&user={}&sslmode=disable",
            percent_encode(dbname.as_bytes(), false),
            percent_encode(self.socket_dir.as_os_str().as_bytes(), true),
            self.port,
            SUPERUSER,
        )
    }

    /// Connect options for database `dbname` over the unix socket, as the superuser.
    pub fn connect_options(&self, dbname: &str) -> PgConnectOptions {
        connect_options(&self.socket_dir, self.port, dbname)
    }

    pub fn role(&self) -> ClusterRole {
        self.role
    }

    pub fn startup(&self) -> Startup {
        self.startup
    }

    /// Whether [`EmbeddedCluster::stop`] may stop the cluster: always for an Owner; for a Guest,
    /// when it started the cluster (and then only if no Owner has appeared by then).
    pub fn responsible(&self) -> bool {
        self.role == ClusterRole::Owner || self.startup != Startup::Adopted
    }

    /// The canonical data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pgdata(&self) -> &Path {
        &self.runner.paths.pgdata
    }

    pub fn log_file(&self) -> &Path {
        &self.runner.paths.log
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id (when started or adopted).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The system user the server runs as.
    pub fn user(&self) -> &str {
        &self.runner.user.name
    }

    /// The server's major version ("15").
    pub fn version(&self) -> &str {
        &self.runner.version
    }

    /// Stops the cluster if this process is responsible for it: an Owner always; a Guest only if
    /// it started the cluster and no Owner serves from the data directory now (one that
    /// appeared meanwhile takes the cluster over). A cluster that is not running is fine.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        self.stopped = true;
        if !self.responsible() {
            tracing::debug!(data_dir = %self.data_dir.display(), "leaving the embedded PostgreSQL cluster running (not started here)");
            return Ok(());
        }
        let paths = &self.runner.paths;
        let _control = control_lock(paths).await?;
        if self.role == ClusterRole::Guest {
            // An instant's hold: an Owner that starts now waits for control.lock and then finds
            // the cluster stopped, and starts it.
            if FileLock::try_acquire(&paths.owner_lock)?.is_none() {
                tracing::info!(
                    data_dir = %self.data_dir.display(),
                    "an unboxd server now serves from this data directory; leaving the embedded PostgreSQL cluster running for it"
                );
                return Ok(());
            }
        }
        match PidFile::read(&paths.pgdata)? {
            Some(pid_file) if pid_file.process_state() == ProcessState::Running => {
                self.runner.pg_ctl_stop().await?;
                tracing::info!(
                    data_dir = %self.data_dir.display(),
                    socket_dir = %self.socket_dir.display(),
                    "embedded PostgreSQL cluster stopped"
                );
            }
            _ => {
                tracing::info!(data_dir = %self.data_dir.display(), "embedded PostgreSQL cluster was not running")
            }
        }
        // `owner_lock` (an Owner's) is released when `self` drops, after the stop.
        Ok(())
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        if !self.stopped && self.responsible() {
            tracing::warn!(
                data_dir = %self.data_dir.display(),
                "embedded PostgreSQL cluster dropped without stop(): it keeps running, and the next start adopts it"
            );
        }
    }
}

/// Creates database `name` on the server `options` connects to (any existing database on it,
/// e.g. `postgres`) unless it exists. Safe against concurrent creators. Returns whether it
/// created the database. Works with any server, embedded or not.
pub async fn ensure_database(options: &PgConnectOptions, name: &str) -> Result<bool, sqlx::Error> {
    let mut conn = options.connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    let created = if exists {
        false
    } else {
        let statement = format!("CREATE DATABASE {}", quote_identifier(name));
        match sqlx::raw_sql(AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
        {
            Ok(_) => {
                tracing::info!(database = name, "database created");
                true
            }
            // 42P04 duplicate_database; 23505 when a concurrent CREATE DATABASE wins the race
            // on pg_database's unique index.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) =>
            {
                false
            }
            Err(e) => return Err(e),
        }
    };
    conn.close().await?;
    Ok(created)
}

/// `"name"`, with embedded quotes doubled.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn connect_options(socket_dir: &Path, port: u16, dbname: &str) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .socket(socket_dir)
        .port(port)
        .username(SUPERUSER)
        .database(dbname)
        .ssl_mode(PgSslMode::Disable)
}

/// Percent-encodes all but RFC 3986's unreserved characters (and `/` when `keep_slash`).
fn percent_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && byte == b'/')
        {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// pg_ctl hands the data directory, log file and postgres paths to `/bin/sh` inside double
/// quotes, where these characters would be interpreted.
fn check_shell_safe(path: &Path) -> Result<(), EmbeddedError> {
    if path
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b'"' | b'$' | b'`' | b'\\' | b'\n' | b'\r'))
    {
        return Err(EmbeddedError::UnsupportedPath {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Picks the binaries: for an existing cluster, the first candidate of its major version.
async fn choose_binaries(
    pg_bin: Option<&Path>,
    pgdata: &Path,
) -> Result<(PgBinaries, String), EmbeddedError> {
    let path_var = std::env::var_os("PATH");
    let candidates =
        binaries::candidates(pg_bin, path_var.as_deref(), binaries::DISTRIBUTION_LAYOUTS)?;
    let cluster_version = match fs::read_to_string(pgdata.join("PG_VERSION")) {
        Ok(text) => Some(text.trim().to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).context(|| format!("reading {}", pgdata.join("PG_VERSION").display()));
        }
    };
    let mut seen = Vec::new();
    for candidate in candidates {
        let version = candidate.major_version().await?;
        if cluster_version
            .as_deref()
            .is_none_or(|wanted| wanted == version)
        {
            return Ok((candidate, version));
        }
        seen.push(format!("{version} in {}", candidate.dir.display()));
    }
    Err(EmbeddedError::VersionMismatch {
        pgdata: pgdata.to_path_buf(),
        cluster: cluster_version.unwrap_or_default(),
        found: seen.join(", "),
    })
}

async fn control_lock(paths: &Paths) -> Result<FileLock, EmbeddedError> {
    FileLock::acquire(&paths.control_lock, CONTROL_LOCK_WAIT)
        .await?
        .ok_or_else(|| EmbeddedError::LockTimeout {
            lock: paths.control_lock.clone(),
            waited: CONTROL_LOCK_WAIT,
        })
}

/// The running server on `pgdata`, if any: `postmaster.pid` names a live process and its socket
/// accepts connections. A live postmaster that refuses connections for now (starting up,
/// recovering) is waited for; a pid file without a listening socket is stale (pg_ctl copes).
async fn running_cluster(pgdata: &Path) -> Result<Option<PidFile>, EmbeddedError> {
    let Some(pid_file) = PidFile::read(pgdata)? else {
        return Ok(None);
    };
    let Some(socket_dir) = pid_file.socket_dir.clone() else {
        return Ok(None);
    };
    let options = connect_options(&socket_dir, pid_file.port, "postgres");
    let deadline = Instant::now() + READY_WAIT;
    loop {
        match pid_file.process_state() {
            ProcessState::Running => {}
            ProcessState::Gone => return Ok(None),
            ProcessState::Zombie => {
                pid_file.remove_zombie_lock_files(pgdata)?;
                return Ok(None);
            }
        }
        let error = match tokio::time::timeout(Duration::from_secs(10), options.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                return Ok(Some(pid_file));
            }
            Ok(Err(sqlx::Error::Io(e)))
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Ok(Err(e)) => e,
            Err(_) => sqlx::Error::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "connecting timed out",
            )),
        };
        if Instant::now() >= deadline {
            return Err(EmbeddedError::NotReady {
                pgdata: pgdata.to_path_buf(),
                pid: pid_file.pid,
                waited: READY_WAIT,
                source: error,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends the include of `unbox.conf` to `postgresql.conf` unless it is there.
fn ensure_conf_include(pgdata: &Path) -> Result<(), EmbeddedError> {
    let path = pgdata.join("postgresql.conf");
    let text = fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
    if text.lines().any(|line| line.trim() == CONF_INCLUDE) {
        return Ok(());
    }
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .context(|| format!("opening {}", path.display()))?;
    let addition = format!("\n# unboxd's settings, rewritten before every start\n{CONF_INCLUDE}\n");
    io::Write::write_all(&mut file, addition.as_bytes())
        .context(|| format!("writing {}", path.display()))
}

/// The settings unboxd relies on, rewritten before every start (the socket directory follows
/// the data directory if it moves).
fn write_conf(pgdata: &Path, socket_dir: &Path, throwaway: bool) -> Result<(), EmbeddedError> {
    let socket_dir = socket_dir.to_string_lossy().replace('\'', "''");
    let durable = if throwaway { "off" } else { "on" };
    let text = format!(
        "# Written by unboxd before every start of its embedded PostgreSQL cluster: edits here are lost.\n\
         # To change a setting, use ALTER SYSTEM (postgresql.auto.conf), which takes precedence.\n\
         listen_addresses = ''\n\
         port = {SOCKET_PORT}\n\
         unix_socket_directories = '\"{socket_dir}\"'\n\
         unix_socket_permissions = 0700\n\
         max_connections = 100\n\
         shared_buffers = '128MB'\n\
         fsync = {durable}\n\
         synchronous_commit = {durable}\n\
         full_page_writes = {durable}\n\
         logging_collector = off\n\
         log_destination = 'stderr'\n\
         log_line_prefix = '%m [%p] '\n"
    );
    let path = pgdata.join(CONF_FILE);
    fs::write(&path, text).context(|| format!("writing {}", path.display()))
}

/// PostgreSQL refuses a PGDATA that group or others may write or enter beyond 0750.
fn fix_pgdata_mode(pgdata: &Path) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(pgdata)
        .context(|| format!("reading {}", pgdata.display()))?
        .permissions()
        .mode();
    if mode & 0o027 != 0 {
        host::set_mode(pgdata, 0o700)?;
    }
    Ok(())
}

/// A command's stdout and stderr, trimmed to their last lines.
pub(crate) fn command_output(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let text = last_lines(text.trim(), LOG_TAIL_LINES);
    if text.is_empty() {
        "(no output)".to_owned()
    } else {
        text
    }
}

/// The last `count` lines of `log` written from `offset` on (reading at most the last 64 KiB).
fn log_tail(log: &Path, offset: u64, count: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(log)?;
        let len = file.metadata()?.len();
        let start = offset.min(len).max(len.saturating_sub(64 * 1024));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) if !text.trim().is_empty() => last_lines(text.trim_end(), count),
        Ok(_) => "(the log is empty)".to_owned(),
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::str::FromStr;

    #[test]
    fn database_url_round_trips_through_sqlx() {
        let socket_dir = Path::new("/tmp/odd dir/with%percent&amp/it's");
        let url = format!(
            "postgres:///{}?host={}&port={}&user={}&sslmode=disable",
            percent_encode("my db/x".as_bytes(), false),
            percent_encode(socket_dir.as_os_str().as_bytes(), true),
            5432,
            SUPERUSER,
        );
        let options = PgConnectOptions::from_str(&url).unwrap();
        assert_eq!(options.get_socket(), Some(&socket_dir.to_path_buf()));
        assert_eq!(options.get_database(), Some("my db/x"));
        assert_eq!(options.get_username(), SUPERUSER);
        assert_eq!(options.get_port(), 5432);
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Disable));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("unbox"), "\"unbox\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn shell_unsafe_paths_are_refused() {
        assert!(check_shell_safe(Path::new("/srv/unbox data/it's-fine")).is_ok());
        for bad in [
            "/srv/$HOME",
            "/srv/a\"b",
            "/srv/`x`",
            "/srv/a\\b",
            "/srv/a\nb",
        ] {
            assert!(
                matches!(
                    check_shell_safe(Path::new(bad)),
                    Err(EmbeddedError::UnsupportedPath { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn log_tail_reads_only_the_new_part() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("postgres.log");
        fs::write(&log, "old 1\nold 2\n").unwrap();
        let offset = fs::metadata(&log).unwrap().len();
        fs::write(&log, "old 1\nold 2\nnew 1\nnew 2\nnew 3\n").unwrap();
        assert_eq!(log_tail(&log, offset, 2), "new 2\nnew 3");
        assert_eq!(log_tail(&log, 0, 10), "old 1\nold 2\nnew 1\nnew 2\nnew 3");
        assert!(
            log_tail(&tmp.path().join("missing.log"), 0, 5).starts_with("(cannot read the log")
        );
    }
}
