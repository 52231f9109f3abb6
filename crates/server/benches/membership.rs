//! Dynamic groups at scale (issue 4's figures): 1,000,000 devices in one tenant and 50 dynamic
//! groups with the typical rules of the conformance file; the real `unboxd` serving them.
//!
//! - time from a rule change (through the API) to stored membership complete, for a change
//!   that alters 100,000 memberships and one that alters all 1,000,000;
//! - resolution with those 50 rules in-process (p50, p99), and a single-device read over HTTP;
//! - unboxd's resident memory while serving, and its peak (the recompute included).
//!
//! Run: `DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench -p unbox-server --bench membership`
//! (without DATABASE_URL a private cluster is started). `UNBOX_BENCH_DEVICES` changes the size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
use common::proc_status_kib;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use unbox_domain::api::{AssignmentMode, AssignmentTarget};
use unbox_domain::resolution::{AssignmentFact, GroupMembership, MembershipReason, resolve};
use unbox_domain::rule_device::{RuleDevice, RuleDeviceFields};
use uuid::Uuid;

const TYPICAL_RULES: [&str; 49] = [
    r#"(device.devicePhysicalIDs -any (_ -startsWith "[ZTDid]"))"#,
    r#"(device.devicePhysicalIds -any (_ -eq "[OrderID]:Sales"))"#,
    r#"(device.devicePhysicalIds -any (_ -eq "[PurchaseOrderId]:PO-1001"))"#,
    r#"(device.devicePhysicalIds -any (_ -match "^\[OrderID\]:F1\.C1"))"#,
    r#"(device.deviceOSType -eq "Windows") and (device.devicePhysicalIDs -all (_ -notStartsWith "[ZTDID]"))"#,
    r#"(device.devicePhysicalIds -all (_ -startsWith "["))"#,
    r#"device.deviceManufacturer -eq "Dell Inc.""#,
    r#"(device.deviceManufacturer -eq "Microsoft Corporation") and (device.deviceModel -startsWith "Surface")"#,
    r#"(device.deviceModel -contains "VMware") or (device.deviceManufacturer -contains "Oracle")"#,
    r#"(device.deviceModel -notContains "Virtual") and (device.deviceManufacturer -notContains "VMware")"#,
    r#"device.displayName -match "^AVD-HP-[0-9]+$""#,
    r#"device.displayName -match "kiosk""#,
    r#"device.displayName -notMatch "^SALES-""#,
    r#"device.displayName -endsWith "-01""#,
    r#"device.deviceOwnership -in ["Company", "Unknown"]"#,
    r#"device.deviceOwnership -notIn ["Company"]"#,
    r#"device.accountEnabled -eq false"#,
    r#"device.objectId -ne null"#,
    r#"device.enrollmentProfileName -eq null"#,
    r#"device.extensionAttribute1 -eq "emea""#,
    r#"device.groupTag -startsWith "F1""#,
    r#"device.groupTag -notStartsWith "F1""#,
    r#"(device.deviceOSType -eq "Windows") -and -not (device.devicePhysicalIds -any (_ -startsWith "[ZTDId]"))"#,
    r#"-not (device.deviceOwnership -eq "Company")"#,
    r#"device.deviceOwnership -eq "Company" -or device.deviceModel -eq "20XW" -and device.accountEnabled -eq false"#,
    r#"device.deviceModel EQ "20xw" OR device.deviceModel -Eq "Latitude 7440""#,
    r#"(device.systemLabels -any (_ -eq "MultiUser"))"#,
    r#"device.serialNumber -startsWith "VMware-""#,
    r#"device.userPrincipalName -eq null"#,
    r#"(device.devicePhysicalIDs -any (_ -eq "[OrderID]:Autopilot-SelfDeploying")) -and ((device.devicePhysicalIDs -any (_ -contains "[ZTDId]")) -or (device.deviceOwnership -eq "Company"))"#,
    r#"device.groupTag -eq "Lab""#,
    r#"device.groupTag -in ["F1.C1.1", "F1.C1.2", "F1.C1.3"]"#,
    r#"device.deviceModel -startsWith "HP EliteBook""#,
    r#"device.deviceManufacturer -eq "LENOVO" -and device.deviceModel -startsWith "21""#,
    r#"device.serialNumber -match "^SER0000[0-9]{4}$""#,
    r#"device.purchaseOrderId -eq "PO-1001""#,
    r#"device.purchaseOrderId -startsWith "PO-2""#,
    r#"device.displayName -startsWith "LAB-""#,
    r#"device.deviceOSVersion -startsWith "10.0.26100""#,
    r#"device.deviceCategory -eq "Kiosk""#,
    r#"device.extensionAttribute2 -eq "finance""#,
    r#"(device.devicePhysicalIds -any (_ -endsWith ":Lab"))"#,
    r#"device.groupTag -contains ".C1.""#,
    r#"device.deviceManufacturer -in ["HP", "Dell Inc."] -and device.accountEnabled -eq true"#,
    r#"device.userPrincipalName -endsWith "@contoso.com""#,
    r#"device.displayName -notMatch "^(AVD|KIOSK)-""#,
    r#"device.systemLabels -all (_ -ne "MultiUser")"#,
    r#"device.deviceOwnership -eq "Personal""#,
    r#"device.enrollmentProfileName -ne null"#,
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Server {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    /// Changes a group's rule through the API and waits until its stored membership is
    /// complete; returns the time it took and the member count.
    async fn change_rule(&self, group: Uuid, rule: &str) -> (Duration, i64) {
        let started = Instant::now();
        self.call(
            reqwest::Method::PATCH,
            &format!("/v1/groups/{group}"),
            Some(json!({"membershipRule": rule})),
        )
        .await;
        loop {
            let g = self
                .call(reqwest::Method::GET, &format!("/v1/groups/{group}"), None)
                .await;
            if g["processingStatus"]["status"] == "updateComplete" {
                return (
                    started.elapsed(),
                    g["processingStatus"]["memberCount"].as_i64().unwrap(),
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::main]
async fn main() {
    let devices: i64 = std::env::var("UNBOX_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!("membership benchmark: {devices} devices, 50 dynamic groups, 2 cores");
    let options = unbox_db::testing::fresh_database().await;
    let pool = unbox_db::connect(options.clone(), &unbox_db::PoolSettings::default())
        .await
        .unwrap();
    let tenant = unbox_server::startup::bootstrap(&pool, "Bench", "bench.example")
        .await
        .unwrap();

    let seeding = Instant::now();
    // 10% Sales, 10% Lab, the rest F1.C1.n; every device enabled; four makers.
    sqlx::query(
        "INSERT INTO devices (tenant_id, id, serial_number, manufacturer, model, group_tag,
                              purchase_order_id, display_name, os_type, os_version, identity,
                              account_enabled, device_ownership, user_principal_name)
         SELECT $1, gen_random_uuid(), 'SER' || lpad(n::text, 8, '0'),
                (ARRAY['Dell Inc.', 'HP', 'LENOVO', 'Microsoft Corporation'])[1 + n % 4],
                (ARRAY['Latitude 7440', 'HP EliteBook 840 G8', '21R3001BUK', 'Surface Laptop 5'])[1 + n % 4],
                CASE n % 10 WHEN 0 THEN 'Sales' WHEN 1 THEN 'Lab' ELSE 'F1.C1.' || (n % 7) END,
                'PO-' || (1000 + n % 50), 'PC-' || n, 'Windows', '10.0.26100.2314', '{}'::jsonb,
                true, CASE WHEN n % 20 = 0 THEN 'Personal' ELSE 'Company' END,
                CASE WHEN n % 3 = 0 THEN 'user' || n || '@contoso.com' END
         FROM generate_series(1, $2::bigint) AS n",
    )
    .bind(tenant.tenant_id)
    .bind(devices)
    .execute(&pool)
    .await
    .unwrap();
    // No dynamic group exists yet, so the re-evaluation queue the inserts filled has nothing to do.
    sqlx::query("TRUNCATE membership_dirty_devices")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE devices").execute(&pool).await.unwrap();
    println!(
        "seeded {devices} devices in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    // 49 groups with typical rules, marked settled (their stored membership is not what is
    // measured), and the measured group, settled with a rule that matches nothing.
    for (i, rule) in TYPICAL_RULES.iter().enumerate() {
        sqlx::query(
            "INSERT INTO groups (tenant_id, id, display_name, membership_type, membership_rule,
                                 membership_revision, membership_as_of)
             VALUES ($1, $2, $3, 'dynamic', $4, 1, now())",
        )
        .bind(tenant.tenant_id)
        .bind(Uuid::now_v7())
        .bind(format!("Typical {i}"))
        .bind(*rule)
        .execute(&pool)
        .await
        .unwrap();
    }
    let measured = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO groups (tenant_id, id, display_name, membership_type, membership_rule,
                             membership_revision, membership_as_of)
         VALUES ($1, $2, 'Measured', 'dynamic', 'device.groupTag -eq \"Nobody\"', 1, now())",
    )
    .bind(tenant.tenant_id)
    .bind(measured)
    .execute(&pool)
    .await
    .unwrap();

    // The real server, in release mode, on this database.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_unboxd"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.path().to_str().unwrap(),
            "--log",
            "warn",
        ])
        .env("DATABASE_URL", unbox_db::testing::url_of(&options))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = Instant::now();
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "unboxd did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token: Value = client
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &tenant.client_id.to_string()),
            ("client_secret", &tenant.client_secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let server = Server {
        child,
        base,
        client,
        token: token["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {token}"))
            .to_owned(),
    };
    let pid = server.child.id();

    // Single-device reads over HTTP: resolution with the 50 rules on every one.
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM devices ORDER BY random() LIMIT 5000")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut latencies = Vec::with_capacity(ids.len());
    for id in &ids {
        let started = Instant::now();
        server
            .call(reqwest::Method::GET, &format!("/v1/devices/{id}"), None)
            .await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "GET /v1/devices/{{id}} over HTTP (resolution with 50 rules, {} distinct devices): p50 {:.2} ms, p99 {:.2} ms",
        ids.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "unboxd resident memory while serving {devices} devices: {} MiB",
        proc_status_kib(pid, "VmRSS:") / 1024
    );

    // Rule changes, through the API, timed to stored membership complete.
    let (took, members) = server
        .change_rule(measured, r#"device.groupTag -eq "Sales""#)
        .await;
    println!(
        "rule change altering {members} memberships (0 -> {members}): stored in {:.2} s (target < 10 s)",
        took.as_secs_f64()
    );
    let (took, after) = server
        .change_rule(measured, r#"-not (device.groupTag -eq "Sales")"#)
        .await;
    println!(
        "rule change altering {} memberships ({members} -> {after}, every device flips): stored in {:.2} s (target < 60 s)",
        members + after,
        took.as_secs_f64()
    );
    println!(
        "unboxd resident memory after the recomputes: {} MiB; peak (VmHWM, recompute included): {} MiB",
        proc_status_kib(pid, "VmRSS:") / 1024,
        proc_status_kib(pid, "VmHWM:") / 1024
    );

    // Resolution in-process: the 50 compiled rules against a device, then the ordering.
    let compiled: Vec<(Uuid, unbox_rules::CompiledRule)> = TYPICAL_RULES
        .iter()
        .chain(std::iter::once(&r#"device.groupTag -eq "Sales""#))
        .map(|r| (Uuid::now_v7(), unbox_rules::check(r).rule.unwrap()))
        .collect();
    let facts: Vec<(Uuid, RuleDevice)> = (0..1000)
        .map(|n| {
            let id = Uuid::new_v4();
            let device = RuleDevice::new(RuleDeviceFields {
                id,
                display_name: Some(format!("PC-{n}")),
                manufacturer: Some(
                    ["Dell Inc.", "HP", "LENOVO", "Microsoft Corporation"][n % 4].into(),
                ),
                model: Some("Latitude 7440".into()),
                os_type: Some("Windows".into()),
                ownership: Some("Company".into()),
                serial_number: Some(format!("SER{n:08}")),
                group_tag: Some(if n % 10 == 0 {
                    "Sales".into()
                } else {
                    format!("F1.C1.{}", n % 7)
                }),
                purchase_order_id: Some("PO-1001".into()),
                account_enabled: true,
                ..Default::default()
            });
            (id, device)
        })
        .collect();
    let assignments: Vec<AssignmentFact> = compiled
        .iter()
        .enumerate()
        .map(|(i, (group, _))| AssignmentFact {
            assignment_id: Uuid::now_v7(),
            profile_id: Uuid::from_u128(i as u128 % 10 + 1),
            profile_name: format!("P{}", i % 10),
            profile_created_at: Utc::now(),
            target: AssignmentTarget::Group { group_id: *group },
            mode: if i % 13 == 0 {
                AssignmentMode::Exclude
            } else {
                AssignmentMode::Include
            },
            assigned_at: Utc::now(),
        })
        .collect();
    let mut times = Vec::with_capacity(200_000);
    for round in 0..200_000usize {
        let (id, device) = &facts[round % facts.len()];
        let started = Instant::now();
        let groups: Vec<GroupMembership> = compiled
            .iter()
            .filter(|(_, rule)| rule.evaluate(device))
            .map(|(group, _)| GroupMembership {
                group_id: *group,
                group_name: String::new(),
                reason: MembershipReason::RuleMatched {
                    membership_rule: String::new(),
                    details: Value::Null,
                },
            })
            .collect();
        let resolution = resolve(*id, groups, &assignments);
        std::hint::black_box(resolution);
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "resolution in-process with 50 rules (evaluate all, then resolve): p50 {:.1} µs, p99 {:.1} µs (target p99 < 1 ms)",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6
    );
    drop(server);
    unbox_db::testing::drop_database(&options).await;
}
