//! Imports survive the death of `unboxd`: the real binary is killed with SIGKILL while it
//! writes an import, restarted, and the job finishes with every row accounted for exactly
//! once and no machine registered twice. And `unboxd admin partner create`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use unbox_domain::hardware_hash::{HashSpec, build};

const UNBOXD: &str = env!("CARGO_BIN_EXE_unboxd");
const HEADER: &str = "Device Serial Number,Windows Product ID,Hardware Hash";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn admin(data_dir: &Path, url: &str, args: &[&str]) -> Value {
    let out = Command::new(UNBOXD)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("admin")
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .expect("running unboxd admin");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "unboxd admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the JSON on stdout: {stdout}"
    );
    serde_json::from_str(&stdout).expect("JSON on stdout")
}

struct Server {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Server {
    async fn start(data_dir: &Path, url: &str, name: &str) -> Server {
        let port = free_port();
        let log = data_dir.join(format!("{name}.log"));
        let child = Command::new(UNBOXD)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", url)
            .env("UNBOX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawning unboxd");
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("unboxd exited ({status}):\n{}", server.logs());
            }
            if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await
                && r.status() == 200
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "unboxd not ready:\n{}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to finish anything.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and wait for the exit.
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

async fn get_token(base: &str, client_id: &str, secret: &str) -> String {
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"].as_str().unwrap().to_owned()
}

fn machine(serial: &str, capture: u32) -> String {
    build(&HashSpec {
        manufacturer: "HP".into(),
        model: "EliteBook 840".into(),
        serial: serial.into(),
        capture,
        ..HashSpec::default()
    })
    .unwrap()
}

const MACHINES: usize = 30_000;
const REPEATS: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_import_resumes_and_accounts_for_every_row_once() {
    let options = unbox_db::testing::fresh_database().await;
    let url = unbox_db::testing::url_of(&options);
    let pool = PgPool::connect_with(options).await.unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let made = admin(
        data_dir.path(),
        &url,
        &[
            "bootstrap",
            "--tenant-name",
            "Contoso",
            "--tenant-domain",
            "contoso.com",
        ],
    );
    let mut server = Server::start(data_dir.path(), &url, "first").await;
    let token = get_token(
        &server.base,
        made["clientId"].as_str().unwrap(),
        made["clientSecret"].as_str().unwrap(),
    )
    .await;

    // 30,000 machines, then the first 2,000 again (other captures): the repeats are
    // `ZtdDeviceDuplicated`, which needs the duplicate check rebuilt after the restart.
    let mut text = format!("{HEADER}\r\n");
    for i in 0..MACHINES {
        text.push_str(&format!(
            "KILL-{i},,{}\r\n",
            machine(&format!("KILL-{i}"), 0)
        ));
    }
    for i in 0..REPEATS {
        text.push_str(&format!(
            "KILL-{i},,{}\r\n",
            machine(&format!("KILL-{i}"), 1)
        ));
    }
    let total = MACHINES + REPEATS;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/imports", server.base))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    let id: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(job["total"], total);

    // Kill it as soon as a chunk is committed.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (checkpoint, status): (Option<i64>, String) =
            sqlx::query_as("SELECT checkpoint_row, status FROM imports WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        if checkpoint.is_some() {
            break;
        }
        assert!(
            status == "queued" || status == "processing",
            "{status}:\n{}",
            server.logs()
        );
        assert!(
            Instant::now() < deadline,
            "no chunk committed:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();

    // What survived is whole: the checkpoint, the counts and the items agree, and every
    // registered device has its item.
    let (status, checkpoint, succeeded, failed): (String, i64, i64, i64) = sqlx::query_as(
        "SELECT status, checkpoint_row, succeeded, failed FROM imports WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "processing", "the job was killed mid-way");
    let (items, last_line): (i64, i64) =
        sqlx::query_as("SELECT count(*), max(line) FROM import_items WHERE import_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        items > 0 && items < i64::try_from(total).unwrap(),
        "{items}"
    );
    assert_eq!(items, succeeded + failed);
    assert_eq!(last_line, checkpoint);
    let devices: i64 = sqlx::query_scalar("SELECT count(*) FROM devices")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(devices, succeeded);

    // Restart: the job is taken up again and finishes.
    let mut server = Server::start(data_dir.path(), &url, "second").await;
    let token = get_token(
        &server.base,
        made["clientId"].as_str().unwrap(),
        made["clientSecret"].as_str().unwrap(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(300);
    let job = loop {
        let job: Value = client
            .get(format!("{}/v1/imports/{id}", server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "partial" || job["status"] == "complete" || job["status"] == "error" {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish: {job}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "partial", "{job}");
    assert_eq!(job["succeeded"], MACHINES);
    assert_eq!(job["failed"], REPEATS);

    // Every row once, in order; every machine registered once.
    let lines: Vec<i64> =
        sqlx::query_scalar("SELECT line FROM import_items WHERE import_id = $1 ORDER BY line")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<i64> = (2..2 + i64::try_from(total).unwrap()).collect();
    assert_eq!(lines, expected);
    let counts: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM devices), (SELECT count(DISTINCT serial_number) FROM devices),
                (SELECT count(*) FROM identity_claims),
                (SELECT count(DISTINCT device_id) FROM import_items WHERE import_id = $1 AND status = 'complete')",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let machines = i64::try_from(MACHINES).unwrap();
    assert_eq!(counts, (machines, machines, machines, machines));
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM import_items i LEFT JOIN devices d ON d.id = i.device_id
         WHERE i.import_id = $1 AND i.status = 'complete' AND d.id IS NULL",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0);
    let repeats: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT line, error_name, message FROM import_items
         WHERE import_id = $1 AND status = 'error' ORDER BY line",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(repeats.len(), REPEATS);
    for (k, (line, name, message)) in repeats.iter().enumerate() {
        assert_eq!(*line, 2 + i64::try_from(MACHINES + k).unwrap());
        assert_eq!(name, "ZtdDeviceDuplicated");
        assert!(message.contains(&format!("row {} ", k + 2)), "{message}");
    }
    let finished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'import.finish' AND resource_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(finished, 1);
    // The upload is removed once the job is done.
    let spooled: Vec<String> = std::fs::read_dir(data_dir.path().join("imports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    assert!(spooled.is_empty(), "{spooled:?}");
    server.stop();
}

#[tokio::test]
async fn admin_partner_create_prints_a_partner_client() {
    let options = unbox_db::testing::fresh_database().await;
    let url = unbox_db::testing::url_of(&options);
    let data_dir = tempfile::tempdir().unwrap();
    let made = admin(
        data_dir.path(),
        &url,
        &["partner", "create", "--name", "Dell OEM"],
    );
    for field in ["partnerId", "clientId", "clientSecret"] {
        assert!(made[field].is_string(), "{made}");
    }
    let mut server = Server::start(data_dir.path(), &url, "partner").await;
    let token = get_token(
        &server.base,
        made["clientId"].as_str().unwrap(),
        made["clientSecret"].as_str().unwrap(),
    )
    .await;
    // A partner token, accepted by partner endpoints (a job that is not its own: 404).
    let r = reqwest::Client::new()
        .get(format!(
            "{}/v1/partner/imports/{}",
            server.base,
            uuid::Uuid::now_v7()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let bad = Command::new(UNBOXD)
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["admin", "partner", "create", "--name", " "])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(bad.stdout.is_empty());
    server.stop();
}
