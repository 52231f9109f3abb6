//! The `unboxd` binary as an operator runs it: subcommands, the embedded cluster, an admin
//! command beside a serving process, signals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const UNBOXD: &str = env!("CARGO_BIN_EXE_unboxd");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `unboxd` to completion with the given environment; returns (status, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String, String) {
    let mut command = Command::new(UNBOXD);
    command.args(args).env_remove("DATABASE_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("running unboxd");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spawn_serve(data_dir: &Path, port: u16, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(UNBOXD);
    command
        .args([
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("spawning unboxd")
}

/// Polls /readyz until 200, or fails with the server's stderr if it died.
async fn wait_ready(child: &mut Child, port: u16) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            panic!("unboxd exited with {status}: {err}");
        }
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "unboxd did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "unboxd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse_bootstrap(stdout: &str) -> serde_json::Value {
    assert_eq!(
        stdout.lines().count(),
        1,
        "admin commands print only their JSON on stdout: {stdout:?}"
    );
    let v: serde_json::Value = serde_json::from_str(stdout).expect("JSON on stdout");
    for key in ["tenantId", "clientId", "clientSecret"] {
        assert!(v[key].is_string(), "{key} in {stdout}");
    }
    v
}

/// Without DATABASE_URL: an admin command starts the embedded cluster for its own duration;
/// a serving unboxd owns it; an admin command beside it uses it; SIGTERM stops both cleanly.
#[tokio::test]
async fn embedded_cluster_serve_and_admin_side_by_side() {
    // Under /tmp so that the cluster's unprivileged user can reach it when tests run as root.
    let dir = tempfile::Builder::new()
        .prefix("unboxd-e2e-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();

    let (status, stdout, stderr) = run(
        &[
            "admin",
            "bootstrap",
            "--tenant-name",
            "Contoso",
            "--tenant-domain",
            "contoso.com",
            "--data-dir",
            data_arg,
        ],
        &[],
    );
    assert!(status.success(), "{stderr}");
    parse_bootstrap(&stdout);
    assert!(
        stderr.contains("unboxd configuration"),
        "the banner goes to stderr"
    );
    let pid_file = data.join("postgres/data/postmaster.pid");
    assert!(
        !pid_file.exists(),
        "the admin command stopped the cluster it started"
    );

    let port = free_port();
    let mut server = spawn_serve(&data, port, &[]);
    wait_ready(&mut server, port).await;
    assert!(pid_file.exists());

    // An admin command beside the serving process uses its cluster and leaves it running.
    let (status, stdout, stderr) = run(
        &[
            "admin",
            "bootstrap",
            "--tenant-name",
            "Fabrikam",
            "--tenant-domain",
            "fabrikam.com",
            "--data-dir",
            data_arg,
        ],
        &[],
    );
    assert!(status.success(), "{stderr}");
    let second = parse_bootstrap(&stdout);
    let token = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", second["clientId"].as_str().unwrap()),
            ("client_secret", second["clientSecret"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        token.status(),
        200,
        "the serving process sees what the admin command wrote"
    );

    let status = terminate(&mut server);
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    assert!(
        !pid_file.exists(),
        "the serving process stopped its cluster"
    );
    assert!(data.join("signing-key.pem").exists());
}

/// With DATABASE_URL naming a database that does not exist yet: it is created and migrated.
#[tokio::test]
async fn database_url_creates_and_migrates_its_database() {
    let options = unbox_db::testing::fresh_database().await;
    let url = unbox_db::testing::url_of(&options);
    let fresh_name = format!("unbox_cli_{}", std::process::id());
    let url = url.replacen(options.get_database().unwrap(), &fresh_name, 1);
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = run(
        &["migrate", "--data-dir", dir.path().to_str().unwrap()],
        &[("DATABASE_URL", &url)],
    );
    assert!(status.success(), "{stderr}");
    let (status, stdout, stderr) = run(
        &[
            "admin",
            "bootstrap",
            "--tenant-name",
            "Contoso",
            "--tenant-domain",
            "contoso.com",
        ],
        &[
            ("DATABASE_URL", &url),
            ("UNBOX_DATA_DIR", dir.path().to_str().unwrap()),
        ],
    );
    assert!(status.success(), "{stderr}");
    parse_bootstrap(&stdout);
    assert!(!stderr.contains(":unbox@"), "no password in logs");

    let (status, _, stderr) = run(
        &[
            "admin",
            "bootstrap",
            "--tenant-name",
            "",
            "--tenant-domain",
            "nodots",
        ],
        &[("DATABASE_URL", &url)],
    );
    assert!(!status.success());
    assert!(
        stderr.contains("displayName") && stderr.contains("domain"),
        "{stderr}"
    );
}
