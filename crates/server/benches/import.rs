//! Bulk registration throughput (design.md, "Performance targets"): 100,000 synthetic rows
//! uploaded as one CSV file through the real HTTP server, from the first byte of the upload to
//! the job's `complete`, against a raw `COPY` of the same rows into a table of the devices'
//! columns with a primary key, on the same PostgreSQL in the same run. Target: at least half
//! of COPY's rows per second.
//!
//! `cargo bench -p unbox-server --bench import` (DATABASE_URL names a PostgreSQL server, else
//! the tests' private cluster is used, which runs without fsync: for figures, name a durable
//! server; the bench makes a database of its own and drops it at the end).
//! `UNBOX_BENCH_ROWS` changes the row count.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use sqlx::Connection;
use unbox_domain::hardware_hash::{HashSpec, build, decode};
use unbox_domain::identity::Identity;
use unbox_server::auth::Scope;
use unbox_server::auth::tokens::{LocalKey, TokenService};
use unbox_server::config::Cli;
use uuid::Uuid;

// The server runs in this process: give it unboxd's allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// COPY's text format: backslash, tab, newline and carriage return escaped; `\N` is NULL.
fn copy_field(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("\\N"),
        Some(v) => {
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

async fn copy_rate(conn: &mut sqlx::PgConnection, table: &str, data: &[u8], rows: usize) -> f64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (LIKE devices INCLUDING DEFAULTS, PRIMARY KEY (tenant_id, id))"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {table} (tenant_id, id, serial_number, manufacturer, model, group_tag, os_type, \
             os_version, hardware_hash, identity, tpm_ek_sha256) FROM STDIN"
        ))
        .await
        .unwrap();
    for chunk in data.chunks(1 << 20) {
        copy.send(chunk).await.unwrap();
    }
    let copied = copy.finish().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(copied, rows as u64);
    rows as f64 / elapsed.as_secs_f64()
}

async fn run() {
    let rows: usize = std::env::var("UNBOX_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let options = unbox_db::testing::fresh_database().await;
    let pool = unbox_db::connect(options.clone(), &unbox_db::PoolSettings::default())
        .await
        .expect("connecting");

    // The server, as unboxd builds it, on a listener of its own.
    let data_dir = tempfile::tempdir().unwrap();
    let cli = Cli::parse_from(["unboxd", "--data-dir", data_dir.path().to_str().unwrap()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let key = LocalKey::load_or_generate(&data_dir.path().join("signing-key.pem")).unwrap();
    let tokens = TokenService::new(base.clone(), Duration::from_secs(3600), key, None);
    let state =
        unbox_server::startup::app_state(pool.clone(), tokens.clone(), &cli.global, &cli.serve);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(unbox_server::startup::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let tenant = unbox_server::startup::bootstrap(&pool, "Bench", "bench.example")
        .await
        .unwrap();
    let token = tokens
        .issue(
            tenant.client_id,
            Some(tenant.tenant_id),
            None,
            &[
                Scope::ImportsWrite.as_str().to_owned(),
                Scope::ImportsRead.as_str().to_owned(),
            ],
        )
        .unwrap();

    // The rows: a third of the machines with a TPM, as a fleet of mixed ages has.
    eprintln!("building {rows} synthetic hashes…");
    let mut csv =
        String::from("Device Serial Number,Windows Product ID,Hardware Hash,Group Tag\r\n");
    let mut copy = String::new();
    for i in 0..rows {
        let serial = format!("BENCH-{i:07}");
        let mut spec = HashSpec {
            manufacturer: "Dell Inc.".into(),
            model: "Latitude 7440".into(),
            serial: serial.clone(),
            macs: vec![[0x10, 0x20, 0x30, (i >> 16) as u8, (i >> 8) as u8, i as u8]],
            ..HashSpec::default()
        };
        if i % 3 == 0 {
            spec.tpm_ek_modulus = Some(serial.bytes().cycle().take(256).collect());
        }
        let hash = build(&spec).unwrap();
        let tag = format!("Wave-{}", i % 10);
        csv.push_str(&format!("{serial},,{hash},{tag}\r\n"));
        // The same row as the devices table holds it.
        let decoded = decode(&hash).unwrap();
        let identity = serde_json::to_string(&Identity::from_hash(&decoded)).unwrap();
        let fields = [
            Some(tenant.tenant_id.to_string()),
            Some(Uuid::now_v7().to_string()),
            Some(serial),
            Some("Dell Inc.".to_owned()),
            Some("Latitude 7440".to_owned()),
            Some(tag),
            Some("Windows".to_owned()),
            decoded.os_version().map(str::to_owned),
            Some(decoded.normalized_base64()),
            Some(identity),
            decoded.tpm_ek_sha256().map(str::to_owned),
        ];
        for (n, field) in fields.iter().enumerate() {
            if n > 0 {
                copy.push('\t');
            }
            copy_field(&mut copy, field.as_deref());
        }
        copy.push('\n');
    }
    eprintln!(
        "CSV upload: {:.1} MB; COPY input: {:.1} MB",
        csv.len() as f64 / 1e6,
        copy.len() as f64 / 1e6
    );

    let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
    let copy_before = copy_rate(&mut conn, "bench_copy_before", copy.as_bytes(), rows).await;
    eprintln!("COPY (before): {copy_before:.0} rows/s");

    // The import, end to end over HTTP.
    let client = reqwest::Client::new();
    let started = Instant::now();
    let answer = client
        .post(format!("{base}/v1/imports"))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202, "{}", answer.text().await.unwrap());
    let uploaded = started.elapsed();
    let job: serde_json::Value = answer.json().await.unwrap();
    let location = format!("{base}/v1/imports/{}", job["id"].as_str().unwrap());
    let job = loop {
        let job: serde_json::Value = client
            .get(&location)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] != "queued" && job["status"] != "processing" {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(job["succeeded"], rows);
    let import = rows as f64 / elapsed.as_secs_f64();

    let copy_after = copy_rate(&mut conn, "bench_copy_after", copy.as_bytes(), rows).await;
    eprintln!("COPY (after): {copy_after:.0} rows/s");
    let copy_best = copy_before.max(copy_after);
    println!("rows:            {rows}");
    println!(
        "import:          {import:.0} rows/s  ({:.2} s: upload and check {:.2} s, registration {:.2} s)",
        elapsed.as_secs_f64(),
        uploaded.as_secs_f64(),
        (elapsed - uploaded).as_secs_f64()
    );
    println!("COPY:            {copy_before:.0} rows/s before, {copy_after:.0} rows/s after");
    println!(
        "ratio:           {:.2} of the faster COPY ({:.2} of the slower); target 0.50",
        import / copy_best,
        import / copy_before.min(copy_after)
    );
    let _ = stop.send(());
    let _ = server.await;
    drop(conn);
    pool.close().await;
    unbox_db::testing::drop_database(&options).await;
}
