//! The embedded PostgreSQL launcher against the real server binaries (found like unboxd finds
//! them). Each test has its own data directory under /tmp (made 0755, so that the cluster's
//! user can reach it when the tests run as root); tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use unbox_db::embedded::{
    ClusterRole, EmbeddedCluster, EmbeddedError, EmbeddedOptions, Startup, ensure_database,
};

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("unbox-embedded-")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A start without fsync (the tests' clusters are disposable; slow disks make fsync costly).
/// The first test uses the real defaults.
async fn start(dir: &Path, role: ClusterRole) -> Result<EmbeddedCluster, EmbeddedError> {
    let mut options = EmbeddedOptions::from_env(dir, role);
    options.throwaway = true;
    EmbeddedCluster::start_with(options).await
}

async fn select_one(options: &PgConnectOptions) -> i32 {
    let mut conn = options.connect().await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    one
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
    }
}

/// The server is gone: no postmaster.pid, and its process has exited.
async fn assert_stopped(pgdata: &Path, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while pgdata.join("postmaster.pid").exists() || alive(pid) {
        assert!(
            Instant::now() < deadline,
            "postgres (pid {pid}) still running on {}",
            pgdata.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn owner_starts_serves_and_stops() {
    let dir = data_dir();
    let cluster = EmbeddedCluster::start(dir.path(), ClusterRole::Owner)
        .await
        .unwrap();
    assert_eq!(cluster.startup(), Startup::Initialized);
    let canonical = dir.path().canonicalize().unwrap();
    assert_eq!(cluster.data_dir(), canonical);
    assert_eq!(cluster.pgdata(), canonical.join("postgres/data"));
    assert_eq!(cluster.socket_dir(), canonical.join("postgres/run"));
    assert!(dir.path().join("postgres/postgres.log").is_file());
    assert!(!dir.path().join("postgres/data.initdb").exists());

    let admin = cluster.connect_options("postgres");
    assert_eq!(select_one(&admin).await, 1);
    assert!(ensure_database(&admin, "unbox").await.unwrap(), "created");
    assert!(
        !ensure_database(&admin, "unbox").await.unwrap(),
        "already there"
    );

    // The URL form reaches the new database over the socket.
    let mut conn = PgConnection::connect(&cluster.database_url("unbox"))
        .await
        .unwrap();
    let (db, listen, fsync): (String, String, String) = sqlx::query_as(
        "SELECT current_database(), current_setting('listen_addresses'), current_setting('fsync')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (db.as_str(), listen.as_str(), fsync.as_str()),
        ("unbox", "", "on")
    );
    conn.close().await.unwrap();

    // The socket directory is private to the cluster's user, who owns PGDATA.
    let socket_dir = fs::metadata(cluster.socket_dir()).unwrap();
    let pgdata = fs::metadata(cluster.pgdata()).unwrap();
    assert_eq!(socket_dir.mode() & 0o777, 0o700);
    assert_eq!(pgdata.mode() & 0o777, 0o700);
    assert_eq!(socket_dir.uid(), pgdata.uid());
    if is_root() {
        assert_ne!(pgdata.uid(), 0, "the cluster must not run as root");
        assert_ne!(cluster.user(), "root");
    }

    let (pgdata, pid) = (cluster.pgdata().to_path_buf(), cluster.pid());
    assert!(alive(pid));
    cluster.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;
}

#[tokio::test]
async fn restart_reuses_the_cluster_and_its_data() {
    let dir = data_dir();
    let first = start(dir.path(), ClusterRole::Owner).await.unwrap();
    assert_eq!(first.startup(), Startup::Initialized);
    let options = first.connect_options("postgres");
    let mut conn = options.connect().await.unwrap();
    sqlx::raw_sql("CREATE TABLE survivor (note text); INSERT INTO survivor VALUES ('still here')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let initdb_stamp = fs::metadata(first.pgdata().join("PG_VERSION"))
        .unwrap()
        .modified()
        .unwrap();
    let (pgdata, pid) = (first.pgdata().to_path_buf(), first.pid());
    first.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;

    let second = start(dir.path(), ClusterRole::Owner).await.unwrap();
    assert_eq!(second.startup(), Startup::Started, "no second initdb");
    assert_eq!(
        fs::metadata(second.pgdata().join("PG_VERSION"))
            .unwrap()
            .modified()
            .unwrap(),
        initdb_stamp
    );
    let mut conn = second.connect_options("postgres").connect().await.unwrap();
    let note: String = sqlx::query_scalar("SELECT note FROM survivor")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(note, "still here");
    conn.close().await.unwrap();
    let pid = second.pid();
    second.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;
}

#[tokio::test]
async fn a_long_data_dir_path_moves_the_socket_to_a_short_private_dir() {
    let dir = data_dir();
    let long = dir.path().join("a".repeat(60)).join("b".repeat(60));
    assert!(long.as_os_str().len() > 120);
    fs::create_dir_all(&long).unwrap();

    let owner = start(&long, ClusterRole::Owner).await.unwrap();
    let socket_dir = owner.socket_dir().to_path_buf();
    assert!(
        socket_dir.to_string_lossy().starts_with("/tmp/unbox-pg-"),
        "{}",
        socket_dir.display()
    );
    assert!(socket_dir.as_os_str().len() + "/.s.PGSQL.5432".len() < 104);
    let metadata = fs::symlink_metadata(&socket_dir).unwrap();
    assert!(metadata.is_dir());
    assert_eq!(metadata.mode() & 0o777, 0o700);
    assert_eq!(metadata.uid(), fs::metadata(owner.pgdata()).unwrap().uid());
    assert_eq!(select_one(&owner.connect_options("postgres")).await, 1);
    let mut conn = PgConnection::connect(&owner.database_url("postgres"))
        .await
        .unwrap();
    conn.ping().await.unwrap();
    conn.close().await.unwrap();

    // Another process on the same data directory finds the same socket.
    let guest = start(&long, ClusterRole::Guest).await.unwrap();
    assert_eq!(guest.startup(), Startup::Adopted);
    assert_eq!(guest.socket_dir(), socket_dir);
    assert_eq!(select_one(&guest.connect_options("postgres")).await, 1);
    guest.stop().await.unwrap();

    let (pgdata, pid) = (owner.pgdata().to_path_buf(), owner.pid());
    owner.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;
    let _ = fs::remove_dir(&socket_dir);
}

#[tokio::test]
async fn the_cluster_folder_may_be_a_link_to_another_disk() {
    let dir = data_dir();
    let elsewhere = dir.path().join("other-disk/unbox-cluster");
    fs::create_dir_all(&elsewhere).unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink(&elsewhere, data.join("postgres")).unwrap();

    let owner = start(&data, ClusterRole::Owner).await.unwrap();
    let elsewhere = elsewhere.canonicalize().unwrap();
    assert_eq!(owner.pgdata(), elsewhere.join("data"));
    assert_eq!(
        fs::metadata(&elsewhere).unwrap().uid(),
        fs::metadata(owner.pgdata()).unwrap().uid()
    );
    assert_eq!(select_one(&owner.connect_options("postgres")).await, 1);
    let (pgdata, pid) = (owner.pgdata().to_path_buf(), owner.pid());
    owner.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;
}

#[tokio::test]
async fn a_guest_beside_an_owner_leaves_the_cluster_running() {
    let dir = data_dir();
    let owner = start(dir.path(), ClusterRole::Owner).await.unwrap();
    let mut owner_conn = owner.connect_options("postgres").connect().await.unwrap();

    let guest = start(dir.path(), ClusterRole::Guest).await.unwrap();
    assert_eq!(guest.startup(), Startup::Adopted);
    assert!(!guest.responsible());
    assert_eq!(guest.pid(), owner.pid());
    assert!(
        ensure_database(&guest.connect_options("postgres"), "unbox")
            .await
            .unwrap()
    );
    guest.stop().await.unwrap();

    // The owner still serves, on its open connection and on new ones.
    owner_conn.ping().await.unwrap();
    owner_conn.close().await.unwrap();
    assert_eq!(select_one(&owner.connect_options("unbox")).await, 1);

    let (pgdata, pid) = (owner.pgdata().to_path_buf(), owner.pid());
    owner.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;
}

#[tokio::test]
async fn a_guest_alone_runs_the_cluster_for_its_duration_and_owners_are_exclusive() {
    let dir = data_dir();
    let guest = start(dir.path(), ClusterRole::Guest).await.unwrap();
    assert_eq!(guest.startup(), Startup::Initialized);
    assert!(guest.responsible());
    assert_eq!(select_one(&guest.connect_options("postgres")).await, 1);
    let (pgdata, pid) = (guest.pgdata().to_path_buf(), guest.pid());
    guest.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;

    let owner = start(dir.path(), ClusterRole::Owner).await.unwrap();
    assert_eq!(owner.startup(), Startup::Started);
    let refused = start(dir.path(), ClusterRole::Owner).await.unwrap_err();
    assert!(
        matches!(refused, EmbeddedError::AnotherOwner { .. }),
        "{refused}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("another unboxd is serving from"),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().canonicalize().unwrap().display().to_string()),
        "{message}"
    );
    // The refusal left the running cluster alone.
    assert_eq!(select_one(&owner.connect_options("postgres")).await, 1);

    let pid = owner.pid();
    owner.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;
}

#[tokio::test]
async fn an_owner_that_appears_takes_over_a_guests_cluster() {
    let dir = data_dir();
    let guest = start(dir.path(), ClusterRole::Guest).await.unwrap();
    assert_eq!(guest.startup(), Startup::Initialized);
    let owner = start(dir.path(), ClusterRole::Owner).await.unwrap();
    assert_eq!(owner.startup(), Startup::Adopted);
    assert_eq!(owner.pid(), guest.pid());

    guest.stop().await.unwrap();
    assert!(
        alive(owner.pid()),
        "the guest must leave the owner's cluster running"
    );
    assert_eq!(select_one(&owner.connect_options("postgres")).await, 1);

    let (pgdata, pid) = (owner.pgdata().to_path_buf(), owner.pid());
    owner.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;
}

#[tokio::test]
async fn an_owner_adopts_the_cluster_of_a_crashed_owner() {
    let dir = data_dir();
    let crashed = start(dir.path(), ClusterRole::Owner).await.unwrap();
    let pid = crashed.pid();
    // A crash: the process's locks go, the cluster stays.
    drop(crashed);
    assert!(alive(pid));

    let owner = start(dir.path(), ClusterRole::Owner).await.unwrap();
    assert_eq!(owner.startup(), Startup::Adopted);
    assert_eq!(owner.pid(), pid);
    assert_eq!(select_one(&owner.connect_options("postgres")).await, 1);

    let pgdata = owner.pgdata().to_path_buf();
    owner.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;
}

/// Plants the lock files a server that died with the machine leaves behind, naming `pid`.
fn plant_stale_lock_files(pgdata: &Path, socket_dir: &Path, pid_file: &str, pid: u32) {
    let pid = pid.to_string();
    let mut lines: Vec<&str> = pid_file.lines().collect();
    lines[0] = &pid;
    let stale = format!("{}\n", lines.join("\n"));
    fs::write(pgdata.join("postmaster.pid"), &stale).unwrap();
    fs::write(socket_dir.join(".s.PGSQL.5432.lock"), &stale).unwrap();
}

async fn start_serve_stop(dir: &Path) {
    let cluster = start(dir, ClusterRole::Owner).await.unwrap();
    assert_eq!(cluster.startup(), Startup::Started);
    assert_eq!(select_one(&cluster.connect_options("postgres")).await, 1);
    let (pgdata, pid) = (cluster.pgdata().to_path_buf(), cluster.pid());
    cluster.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;
}

#[tokio::test]
async fn stale_lock_files_after_a_reboot_do_not_prevent_a_start() {
    let dir = data_dir();
    let first = start(dir.path(), ClusterRole::Owner).await.unwrap();
    let pid_file = fs::read_to_string(first.pgdata().join("postmaster.pid")).unwrap();
    let (pgdata, socket_dir, pid) = (
        first.pgdata().to_path_buf(),
        first.socket_dir().to_path_buf(),
        first.pid(),
    );
    first.stop().await.unwrap();
    assert_stopped(&pgdata, pid).await;

    // The machine went down with the server running: the lock files name a process that is gone.
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    let gone = exited.id();
    exited.wait().unwrap();
    plant_stale_lock_files(&pgdata, &socket_dir, &pid_file, gone);
    start_serve_stop(dir.path()).await;

    // A postmaster that exited but was never reaped (PID 1 of some containers never reaps):
    // PostgreSQL alone takes the zombie for a running server.
    if cfg!(target_os = "linux") {
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read_to_string(format!("/proc/{}/stat", zombie.id())).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }) {
            assert!(Instant::now() < deadline, "the child never became a zombie");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        plant_stale_lock_files(&pgdata, &socket_dir, &pid_file, zombie.id());
        start_serve_stop(dir.path()).await;
        zombie.wait().unwrap();
    }
}

#[tokio::test]
async fn as_root_a_data_dir_the_cluster_user_cannot_reach_is_explained() {
    if !is_root() {
        return; // Only root switches to another user.
    }
    let dir = tempfile::Builder::new()
        .prefix("unbox-embedded-")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let err = start(&dir.path().join("data"), ClusterRole::Owner)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, EmbeddedError::NotTraversable { .. }),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("chmod o+x"), "{message}");
    assert!(
        !dir.path().join("data/postgres").exists(),
        "nothing created before the check"
    );
}
