//! The boot storm (design.md, "Performance targets"): 100,000 registered devices fetch their
//! profiles from a load generator on loopback, at 64 and 256 connections, against `pgbench -S
//! -M prepared` with the same client counts on the same PostgreSQL in the same run; then the
//! database is stopped and started again mid-storm.
//!
//! `cargo bench -p unbox-server --bench boot_storm` (needs PostgreSQL's server binaries and
//! pgbench: `apt-get install -y postgresql postgresql-contrib`). It starts a private cluster of
//! its own on a free port (never the machine's shared server), seeds it, starts `unboxd` (release
//! build, rate limits off, log level `warn`) and drives it with keep-alive HTTP/1.1 connections,
//! each cycling through its share of the devices' request bodies (Windows 4K hashes with a TPM):
//! `lean_client` (epoll, two threads) for the measured runs, the bench's hyper client for the
//! first downloads and the outage (it counts statuses per second). Each measured run also
//! reports the CPU time a request cost unboxd, the load generator, PostgreSQL and the machine,
//! beside what a pgbench transaction cost PostgreSQL, pgbench and the machine (from /proc:
//! steadier than the rates on a shared machine).
//! Environment: BOOT_STORM_DEVICES (100000), BOOT_STORM_SECONDS (20), BOOT_STORM_CACHE_ENTRIES
//! (`--device-cache-entries`, default 1.2 × the devices), BOOT_STORM_LOAD (`lean`; `wrk`: wrk
//! with `boot_storm.lua`, `apt-get install -y wrk`; `hyper`: the hyper client),
//! BOOT_STORM_CONNECTIONS (`64,256`), BOOT_STORM_ROUNDS (1:
//! how many times each unbox/pgbench pair runs, alternating, to show the run-to-run spread),
//! BOOT_STORM_OUTAGE (`1`; `0` skips the outage), BOOT_STORM_FLOOR (`1`: after each pgbench run,
//! the same load against the transport floor, `transport_floor`; `0` skips it),
//! BOOT_STORM_LOAD_SCHED (`normal`; `batch`: every load generator, pgbench too, under
//! `SCHED_BATCH`, so that its wakeups do not preempt the server on the shared cores).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod lean_client;
mod transport_floor;
use common::proc_status_kib;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use sqlx::Connection;
use unbox_domain::hardware_hash::{HashSpec, build};
use uuid::Uuid;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(command: &mut Command) {
    let out = command.output().expect("running a command");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private PostgreSQL cluster, run as the `postgres` user when we are root.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn as_postgres(program: &str) -> Command {
        let path = format!("{PG_BIN}/{program}");
        if nix::unistd::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &path]);
            c
        } else {
            Command::new(path)
        }
    }

    fn init() -> Cluster {
        let dir = PathBuf::from(format!("/tmp/unbox-boot-storm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if nix::unistd::geteuid().is_root() {
            run(Command::new("chown").args(["postgres:postgres", dir.to_str().unwrap()]));
        }
        let port = free_port();
        run(Self::as_postgres("initdb")
            .args([
                "-D",
                dir.join("data").to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .stdout(Stdio::null()));
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nmax_connections = 400\nshared_buffers = '1GB'\n",
            dir.display()
        );
        let path = dir.join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap();
        let cluster = Cluster { dir, port };
        cluster.start();
        cluster
    }

    fn start(&self) {
        run(Self::as_postgres("pg_ctl")
            .args([
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ])
            .stdout(Stdio::null()));
    }

    fn stop(&self) {
        run(Self::as_postgres("pg_ctl")
            .args([
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ])
            .stdout(Stdio::null()));
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Self::as_postgres("pg_ctl")
            .args([
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Unboxd(Child);

impl Drop for Unboxd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// One request's outcome: latency in µs, HTTP status (0: connection error), ms since start.
type Sample = (u32, u16, u32);

async fn connect(address: SocketAddr) -> http1::SendRequest<Full<Bytes>> {
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(address).await {
            let _ = stream.set_nodelay(true);
            if let Ok((sender, connection)) = http1::handshake(TokioIo::new(stream)).await {
                tokio::spawn(connection);
                return sender;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `connections` keep-alive connections; connection `c` sends the bodies c, c + n, c + 2n …
/// (each device once with `once`, else cycling until `duration`).
async fn storm(
    address: SocketAddr,
    bodies: Arc<Vec<Bytes>>,
    connections: usize,
    once: bool,
    duration: Duration,
) -> (Vec<Sample>, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(4096);
            let mut sender = connect(address).await;
            let mut i = c;
            loop {
                if once && i >= bodies.len() {
                    break;
                }
                if !once && started.elapsed() >= duration {
                    break;
                }
                let request = hyper::Request::post("/device/v1/profile")
                    .header("host", "bench")
                    .header("content-type", "application/json")
                    .body(Full::new(bodies[i % bodies.len()].clone()))
                    .unwrap();
                let sent = Instant::now();
                let status = match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.into_body().collect().await;
                        status
                    }
                    Err(_) => {
                        sender = connect(address).await;
                        0
                    }
                };
                samples.push((
                    u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX),
                    status,
                    u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
                ));
                i += connections;
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (all, started.elapsed())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

fn figures(samples: &[Sample], elapsed: Duration) -> Figures {
    let mut ok: Vec<u32> = samples.iter().filter(|s| s.1 == 200).map(|s| s.0).collect();
    ok.sort_unstable();
    Figures {
        rate: ok.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&ok, 0.50),
        p99_ms: percentile(&ok, 0.99),
        errors: samples.len() - ok.len(),
    }
}

/// CPU time in clock ticks (`CLK_TCK`, 100 a second on Linux): user and system.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    user: u64,
    system: u64,
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }

    /// (user, system) µs for each of `count` requests.
    fn per(self, count: f64) -> (f64, f64) {
        let us = |ticks: u64| ticks as f64 * 10_000.0 / count.max(1.0);
        (us(self.user), us(self.system))
    }
}

/// What a server process has used: CPU time, and how many times its threads were preempted.
#[derive(Debug, Clone, Copy)]
struct ServerUse {
    cpu: Cpu,
    preempted: u64,
}

impl ServerUse {
    fn of(pid: u32) -> ServerUse {
        ServerUse {
            cpu: process_cpu(pid),
            preempted: preemptions(pid),
        }
    }

    /// The use since `before` (a thread that exited meanwhile takes its count with it).
    fn since(self, before: ServerUse) -> ServerUse {
        ServerUse {
            cpu: self.cpu.since(before.cpu),
            preempted: self.preempted.saturating_sub(before.preempted),
        }
    }

    /// Preemptions a request.
    fn preempted_per(self, count: f64) -> f64 {
        self.preempted as f64 / count.max(1.0)
    }
}

/// How many times a process's threads were preempted (switched out while runnable), summed
/// over its threads (`nonvoluntary_ctxt_switches` in `/proc/PID/task/*/status`). On the two
/// shared cores this is mostly a woken load-generator thread taking the core.
fn preemptions(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

/// A process's CPU time, all its threads (`/proc/PID/stat`, fields 14 and 15).
fn process_cpu(pid: u32) -> Cpu {
    process_stat(pid).1
}

/// A process's parent and CPU time.
fn process_stat(pid: u32) -> (u32, Cpu) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: count the fields after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the name come fields 3 (the state), 4 (the parent), …: utime is 14, stime 15.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0);
    let parent = u32::try_from(field(4)).unwrap_or(0);
    (
        parent,
        Cpu {
            user: field(14),
            system: field(15),
        },
    )
}

/// The CPU time of the cluster's server processes (the postmaster's children: the backends and
/// helpers alive now).
fn cluster_cpu(cluster: &Cluster) -> Cpu {
    let pid_file =
        std::fs::read_to_string(cluster.dir.join("data/postmaster.pid")).unwrap_or_default();
    let postmaster: u32 = pid_file
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    let mut total = Cpu::default();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let (parent, cpu) = process_stat(pid);
        if parent == postmaster && postmaster != 0 {
            total.user += cpu.user;
            total.system += cpu.system;
        }
    }
    total
}

/// The machine's CPU ticks by kind (`/proc/stat`'s first line: user, nice, system, idle, iowait,
/// irq, softirq, steal), zero where absent.
fn machine_ticks() -> [u64; 8] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut ticks = [0; 8];
    let fields = stat.lines().next().unwrap_or_default().split_whitespace();
    for (tick, field) in ticks.iter_mut().zip(fields.skip(1)) {
        *tick = field.parse().unwrap_or(0);
    }
    ticks
}

/// The whole machine's busy CPU time: user and nice; system, irq and softirq.
fn machine_cpu() -> Cpu {
    let t = machine_ticks();
    Cpu {
        user: t[0] + t[1],
        system: t[2] + t[5] + t[6],
    }
}

/// The machine's idle and stolen time against all of it: a CPU-bound run
/// leaves none idle; a share left idle is rate a run did not get out of the machine.
#[derive(Debug, Clone, Copy)]
struct Idle {
    idle: u64,
    steal: u64,
    total: u64,
}

impl Idle {
    fn now() -> Idle {
        let t = machine_ticks();
        Idle {
            // idle and iowait
            idle: t[3] + t[4],
            steal: t[7],
            total: t.iter().sum(),
        }
    }

    /// (idle, stolen) percent of the machine since `before`.
    fn percent_since(self, before: Idle) -> (f64, f64) {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        (
            100.0 * self.idle.saturating_sub(before.idle) as f64 / total,
            100.0 * self.steal.saturating_sub(before.steal) as f64 / total,
        )
    }
}

/// What a run cost the machine: (user, system) µs a request.
#[derive(Debug, Clone, Copy)]
struct Costs {
    unboxd_us: (f64, f64),
    unbox_machine_us: (f64, f64),
    pgbench_machine_us: (f64, f64),
}

/// Over several rounds, the median of each connection count's ratios: on a shared machine
/// pgbench alone moves by a fifth between minutes, so one round's ratio says little.
fn print_medians(results: &[Round]) {
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        }
    };
    let mut counts: Vec<usize> = results.iter().map(|r| r.0).collect();
    counts.sort_unstable();
    counts.dedup();
    for clients in counts {
        let rounds: Vec<_> = results.iter().filter(|r| r.0 == clients).collect();
        if rounds.len() < 2 {
            continue;
        }
        let ratios: Vec<f64> = rounds.iter().map(|r| r.1.rate / r.2.rate).collect();
        let low = ratios.iter().copied().fold(f64::MAX, f64::min);
        let high = ratios.iter().copied().fold(f64::MIN, f64::max);
        let cost = |c: &Costs| {
            (c.pgbench_machine_us.0 + c.pgbench_machine_us.1)
                / (c.unbox_machine_us.0 + c.unbox_machine_us.1)
        };
        println!(
            "{clients} connections over {} rounds: ratio unbox/pgbench median {:.2} (lowest {low:.2}, highest {high:.2}); machine CPU a pgbench transaction over a request's, median {:.2}\n",
            rounds.len(),
            median(ratios),
            median(rounds.iter().map(|r| cost(&r.3)).collect()),
        );
    }
}

/// The load generator of the measured runs (BOOT_STORM_LOAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// `lean_client` (the default): two threads, one write, one read and a share of one
    /// epoll_wait per request, as pgbench's client (C) costs on its side of the comparison.
    Lean,
    /// wrk (from Debian's packages) with `boot_storm.lua`.
    Wrk,
    /// The hyper client above.
    Hyper,
}

impl Load {
    fn from_env() -> Load {
        match std::env::var("BOOT_STORM_LOAD").as_deref() {
            Ok("wrk") => {
                assert!(
                    Command::new("wrk").arg("--version").output().is_ok(),
                    "BOOT_STORM_LOAD=wrk needs wrk: apt-get install -y wrk"
                );
                Load::Wrk
            }
            Ok("rust" | "hyper") => Load::Hyper,
            Ok("lean") | Err(_) => Load::Lean,
            Ok(other) => panic!("BOOT_STORM_LOAD: lean, wrk or hyper, not {other}"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Load::Lean => {
                "the bench's lean client (benches/lean_client: 2 threads, epoll, one write and one read a request), each thread cycling through half of the devices"
            }
            Load::Wrk => {
                "wrk -t 2 (boot_storm.lua), each thread cycling through half of the devices"
            }
            Load::Hyper => "the bench's hyper client, one task per connection",
        }
    }
}

/// Whether the load generators (this process's clients, wrk and pgbench alike) run under
/// `SCHED_BATCH` (BOOT_STORM_LOAD_SCHED=batch): a batch task's wakeups do not preempt the task
/// running, so a client woken by an answer waits for the tick or a free core instead of
/// interrupting the server it shares the two cores with. Both sides of the comparison get it.
fn batch_scheduled_load() -> bool {
    match std::env::var("BOOT_STORM_LOAD_SCHED").as_deref() {
        Ok("batch") => true,
        Ok("normal") | Err(_) => false,
        Ok(other) => panic!("BOOT_STORM_LOAD_SCHED: normal or batch, not {other}"),
    }
}

/// A load generator's command: `program`, under `chrt -b 0` with BOOT_STORM_LOAD_SCHED=batch.
fn load_command(program: &str) -> Command {
    if batch_scheduled_load() {
        let mut command = Command::new("chrt");
        command.args(["-b", "0", program]);
        command
    } else {
        Command::new(program)
    }
}

/// Puts every thread of this process under `SCHED_BATCH` (or back under `SCHED_OTHER`), for
/// the clients that run in it.
fn schedule_this_process(batch: bool) {
    if batch_scheduled_load() {
        let policy = if batch { "-b" } else { "-o" };
        run(Command::new("chrt").args([policy, "-a", "-p", "0", &std::process::id().to_string()]));
    }
}

/// Starts the transport floor's server, answering with a copy of unboxd's answer to `body`.
async fn start_floor(
    http: &reqwest::Client,
    base: &str,
    body: Bytes,
    dir: &std::path::Path,
) -> (Unboxd, SocketAddr) {
    let answer = http
        .post(format!("{base}/device/v1/profile"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let headers = answer
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "content-length"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    let body = answer.text().await.unwrap();
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let answer = transport_floor::Answer { headers, body };
    let process = Unboxd(transport_floor::spawn(address, &answer, dir));
    wait_for("the floor server", Duration::from_secs(30), async || {
        tokio::net::TcpStream::connect(address).await.is_ok()
    })
    .await;
    (process, address)
}

/// One measured run of `load` against `address`.
async fn drive(
    load: Load,
    address: SocketAddr,
    bodies: &Arc<Vec<Bytes>>,
    bodies_file: &std::path::Path,
    clients: usize,
    run_for: Duration,
) -> Figures {
    schedule_this_process(true);
    let figures = match load {
        Load::Lean => {
            let bodies = bodies.clone();
            tokio::task::spawn_blocking(move || lean(address, &bodies, clients, run_for))
                .await
                .unwrap()
        }
        Load::Wrk => {
            let file = bodies_file.to_owned();
            let seconds = run_for.as_secs();
            tokio::task::spawn_blocking(move || wrk(address, &file, clients, seconds))
                .await
                .unwrap()
        }
        Load::Hyper => {
            let (samples, elapsed) = storm(address, bodies.clone(), clients, false, run_for).await;
            figures(&samples, elapsed)
        }
    };
    schedule_this_process(false);
    figures
}

/// The lean client's run, as figures.
fn lean(address: SocketAddr, bodies: &[Bytes], connections: usize, run_for: Duration) -> Figures {
    let outcome = lean_client::run(
        address,
        "/device/v1/profile",
        bodies,
        connections,
        2,
        run_for,
    );
    let mut ok = outcome.latencies_us;
    ok.sort_unstable();
    Figures {
        // The answers of the run's last moments (after the deadline) count, over the whole time.
        rate: ok.len() as f64 / outcome.elapsed.as_secs_f64(),
        p50_ms: percentile(&ok, 0.50),
        p99_ms: percentile(&ok, 0.99),
        errors: outcome.errors,
    }
}

/// `wrk -t 2 -c connections` for `seconds`, cycling through the bodies in `bodies_file`.
fn wrk(
    address: SocketAddr,
    bodies_file: &std::path::Path,
    connections: usize,
    seconds: u64,
) -> Figures {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/boot_storm.lua");
    let out = load_command("wrk")
        .args(["-t", "2", "-c", &connections.to_string()])
        .args([
            "-d",
            &format!("{seconds}s"),
            "--timeout",
            "10s",
            "-s",
            script,
        ])
        .arg(format!("http://{address}"))
        .args(["--", bodies_file.to_str().unwrap(), "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = text
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary from wrk: {text}"));
    let number = |k: &str| summary[k].as_f64().unwrap();
    let errors = [
        "non2xx",
        "connectErrors",
        "readErrors",
        "writeErrors",
        "timeouts",
    ]
    .iter()
    .map(|k| number(k))
    .sum::<f64>();
    Figures {
        rate: (number("requests") - number("non2xx")) / (number("durationUs") / 1e6),
        p50_ms: number("p50Us") / 1000.0,
        p99_ms: number("p99Us") / 1000.0,
        errors: errors as usize,
    }
}

/// `pgbench -S -M prepared` with `clients`: tps and latency percentiles from its per-transaction
/// log, and the CPU a transaction cost PostgreSQL's backends and pgbench, measured between 2 s
/// after the start and 2 s before the end (the backends are gone once pgbench ends).
fn pgbench(cluster: &Cluster, clients: usize, seconds: u64) -> (Figures, (Cpu, Cpu, f64)) {
    let logs = cluster.dir.join(format!("pgbench-{clients}"));
    std::fs::create_dir_all(&logs).unwrap();
    let out = load_command(&format!("{PG_BIN}/pgbench"))
        .args(["-S", "-M", "prepared", "-n", "-j", "2"])
        .args(["-c", &clients.to_string(), "-T", &seconds.to_string()])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            "postgres",
        ])
        .arg("-l")
        .arg(format!("--log-prefix={}", logs.join("tx").display()))
        .arg("pgbench")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let edge = Duration::from_secs(2.min(seconds / 4));
    std::thread::sleep(edge);
    let (server_before, client_before, from) =
        (cluster_cpu(cluster), process_cpu(out.id()), Instant::now());
    std::thread::sleep(Duration::from_secs(seconds).saturating_sub(edge * 2));
    let window = (
        cluster_cpu(cluster).since(server_before),
        process_cpu(out.id()).since(client_before),
        from.elapsed().as_secs_f64(),
    );
    let out = out.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tps: f64 = text
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(&logs).unwrap() {
        let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        latencies.extend(
            body.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u32>().ok()),
        );
    }
    latencies.sort_unstable();
    let _ = std::fs::remove_dir_all(&logs);
    let figures = Figures {
        rate: tps,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        errors: 0,
    };
    (figures, window)
}

/// The request body of device `i`, and its registration row.
struct Machine {
    body: Bytes,
    id: Uuid,
    serial: String,
    hash: String,
    identity: serde_json::Value,
    tpm: Option<String>,
    claims: Vec<(String, String)>,
}

fn machine(i: usize) -> Machine {
    let serial = format!("BS{i:07}");
    // A distinct EK modulus per machine, so a distinct TPM digest.
    let modulus: Vec<u8> = serial.bytes().cycle().take(256).collect();
    let hash = build(&HashSpec {
        manufacturer: "Dell Inc.".into(),
        model: "Latitude 7440".into(),
        serial: serial.clone(),
        macs: vec![[0x02, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 1]],
        tpm_ek_modulus: Some(modulus),
        ..HashSpec::default()
    })
    .unwrap();
    let presented = unbox_server::presented_identity::from_request(Some(&hash), None).unwrap();
    Machine {
        body: Bytes::from(serde_json::to_vec(&json!({ "hardwareHash": hash })).unwrap()),
        id: Uuid::now_v7(),
        serial,
        identity: serde_json::to_value(&presented.identity).unwrap(),
        tpm: presented.identity.tpm_ek_sha256.clone(),
        claims: presented
            .claims()
            .into_iter()
            .map(|c| (c.kind, c.key))
            .collect(),
        hash: presented.hash.unwrap().normalized_base64(),
    }
}

/// Registers the machines straight into the database, set-based, as an import does.
async fn seed(url: &str, tenant: Uuid, machines: &[Machine]) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    for chunk in machines.chunks(5_000) {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO devices (tenant_id, id, serial_number, manufacturer, model, os_type,
                    hardware_hash, identity, tpm_ek_sha256)
             SELECT $1, u.id, u.serial, 'Dell Inc.', 'Latitude 7440', 'Windows', u.hash, u.identity, u.tpm
             FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[])
                  AS u (id, serial, hash, identity, tpm)",
        )
        .bind(tenant)
        .bind(chunk.iter().map(|m| m.id).collect::<Vec<_>>())
        .bind(chunk.iter().map(|m| m.serial.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|m| m.hash.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|m| m.identity.clone()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|m| m.tpm.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .unwrap();
        let claims: Vec<(&Machine, &(String, String))> = chunk
            .iter()
            .flat_map(|m| m.claims.iter().map(move |c| (m, c)))
            .collect();
        sqlx::query(
            "INSERT INTO identity_claims (kind, key, tenant_id, device_id)
             SELECT u.kind, u.key, $1, u.device FROM UNNEST($2::text[], $3::text[], $4::uuid[]) AS u (kind, key, device)",
        )
        .bind(tenant)
        .bind(claims.iter().map(|(_, c)| c.0.clone()).collect::<Vec<_>>())
        .bind(claims.iter().map(|(_, c)| c.1.clone()).collect::<Vec<_>>())
        .bind(claims.iter().map(|(m, _)| m.id).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn line(name: &str, f: Figures) {
    println!(
        "{name:<34} {:>10.0} /s   p50 {:>7.2} ms   p99 {:>7.2} ms   non-200: {}",
        f.rate, f.p50_ms, f.p99_ms, f.errors
    );
}

// As unboxd's: the transport floor's server is this binary too.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    transport_floor::serve_if_asked();
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let devices = usize::try_from(env_number("BOOT_STORM_DEVICES", 100_000)).unwrap();
    let seconds = env_number("BOOT_STORM_SECONDS", 20);
    let run_for = Duration::from_secs(seconds);
    eprintln!("boot storm: {devices} devices, {seconds} s per run; starting a private PostgreSQL");
    let cluster = Cluster::init();
    let mut admin = sqlx::PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    for db in ["unbox", "pgbench"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    run(Command::new(format!("{PG_BIN}/pgbench"))
        .args([
            "-i",
            "-q",
            "-s",
            "10",
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            "postgres",
            "pgbench",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null()));

    // Sized for the storm, as the README advises (BOOT_STORM_CACHE_ENTRIES to try others).
    let cache_entries = env_number("BOOT_STORM_CACHE_ENTRIES", devices as u64 * 6 / 5);
    let data = cluster.dir.join("unboxd");
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let unboxd = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_unboxd"));
        c.args(args)
            .args([
                "--data-dir",
                data.to_str().unwrap(),
                "--listen",
                &address.to_string(),
            ])
            .args([
                "--device-rate-per-identity",
                "0",
                "--device-rate-per-address",
                "0",
                "--device-cache-entries",
                &cache_entries.to_string(),
            ])
            .env("DATABASE_URL", cluster.url("unbox"))
            .env("UNBOX_LOG", "warn");
        c
    };
    let out = unboxd(&[
        "admin",
        "bootstrap",
        "--tenant-name",
        "Storm",
        "--tenant-domain",
        "storm.example",
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenant: Uuid = made["tenantId"].as_str().unwrap().parse().unwrap();

    eprintln!("building and registering {devices} hardware hashes");
    let machines =
        tokio::task::spawn_blocking(move || (0..devices).map(machine).collect::<Vec<_>>())
            .await
            .unwrap();
    seed(&cluster.url("unbox"), tenant, &machines).await;
    let bodies: Arc<Vec<Bytes>> = Arc::new(machines.iter().map(|m| m.body.clone()).collect());
    let bodies_file = cluster.dir.join("bodies.jsonl");
    {
        let mut text = Vec::with_capacity(bodies.iter().map(|b| b.len() + 1).sum());
        for body in bodies.iter() {
            text.extend_from_slice(body);
            text.push(b'\n');
        }
        std::fs::write(&bodies_file, text).unwrap();
    }
    drop(machines);
    let mut db = sqlx::PgConnection::connect(&cluster.url("unbox"))
        .await
        .unwrap();
    // The seeded tables only: statistics taken of the still-empty deployment and contact
    // tables would have the planner scan them whole for every device until autovacuum
    // analyzes them again, a minute or more into the storm.
    sqlx::query("VACUUM ANALYZE devices, identity_claims")
        .execute(&mut db)
        .await
        .unwrap();

    let server = Unboxd(
        unboxd(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let base = format!("http://{address}");
    wait_for("unboxd", Duration::from_secs(60), async || {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    // The registrations queued every device for dynamic-group membership: let that settle, so
    // the background recompute does not run during the storm.
    wait_for(
        "the membership queue",
        Duration::from_secs(600),
        async || {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM membership_dirty_devices")
                .fetch_one(&mut db)
                .await
                .is_ok_and(|n| n == 0)
        },
    )
    .await;
    let token: serde_json::Value = http
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", made["clientId"].as_str().unwrap()),
            ("client_secret", made["clientSecret"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let profile: serde_json::Value = http
        .post(format!("{base}/v1/profiles"))
        .bearer_auth(&token)
        .json(&json!({"displayName": "Boot storm", "deviceNameTemplate": "BS-%SERIAL%",
            "oobe": {"hideEula": true}, "enrollmentStatusPage": {"enabled": true, "timeoutMinutes": 120}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let assigned = http
        .post(format!(
            "{base}/v1/profiles/{}/assignments",
            profile["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .json(&json!({"target": {"kind": "allDevices"}, "mode": "include"}))
        .send()
        .await
        .unwrap();
    assert_eq!(assigned.status(), 201);

    println!(
        "\nBoot storm: {devices} devices (Windows 4K hashes with TPM), loopback HTTP/1.1 keep-alive;"
    );
    println!(
        "unboxd release build, rate limits off (--device-rate-per-identity 0 --device-rate-per-address 0), log level warn.\n"
    );

    // First boot of every device: nothing cached yet, every deployment opened, every name made.
    let (samples, elapsed) = storm(address, bodies.clone(), 64, true, run_for).await;
    let cold = figures(&samples, elapsed);
    line("first download of each device, 64", cold);
    // Every deployment is visible to reads within a second.
    let mut deployments = async || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM deployments")
            .fetch_one(&mut db)
            .await
            .unwrap_or(0)
    };
    let answered = Instant::now();
    let mut visible = deployments().await;
    while visible < devices as i64 && answered.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        visible = deployments().await;
    }
    println!(
        "  deployments in the database: {visible} of {devices}, {} ms after the last answer",
        answered.elapsed().as_millis()
    );

    // The first downloads changed every device's `enrollmentProfileName`, which rules may read:
    // let the background membership recompute they queued finish first.
    wait_for(
        "the membership queue",
        Duration::from_secs(600),
        async || {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM membership_dirty_devices")
                .fetch_one(&mut db)
                .await
                .is_ok_and(|n| n == 0)
        },
    )
    .await;

    let load = Load::from_env();
    println!(
        "Load generator of the measured runs: {}; load generators (this one and pgbench) scheduled {}",
        load.describe(),
        if batch_scheduled_load() {
            "SCHED_BATCH (BOOT_STORM_LOAD_SCHED=batch)"
        } else {
            "normally"
        }
    );
    let floor = if env_number("BOOT_STORM_FLOOR", 1) == 0 {
        None
    } else {
        Some(start_floor(&http, &base, bodies[0].clone(), &cluster.dir).await)
    };
    println!(
        "Transport floor: {}\n",
        if floor.is_some() {
            "after each pgbench run, the same load against a server that only reads each request and sends a copy of one of unboxd's answers (benches/transport_floor: axum on tokio, as unboxd)"
        } else {
            "not run (BOOT_STORM_FLOOR=0)"
        }
    );
    let connections: Vec<usize> = std::env::var("BOOT_STORM_CONNECTIONS")
        .unwrap_or_else(|_| "64,256".to_owned())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("BOOT_STORM_CONNECTIONS: numbers, comma-separated")
        })
        .collect();
    let rounds = env_number("BOOT_STORM_ROUNDS", 1).max(1);
    let mut results = Vec::new();
    for clients in (0..rounds).flat_map(|_| connections.iter().copied()) {
        let (unboxd_before, machine_before) = (ServerUse::of(server.0.id()), machine_cpu());
        let idle_before = Idle::now();
        let (postgres_before, bench_before) =
            (cluster_cpu(&cluster), process_cpu(std::process::id()));
        let unbox_started = Instant::now();
        let unbox = drive(load, address, &bodies, &bodies_file, clients, run_for).await;
        let unbox_served = unbox.rate * unbox_started.elapsed().as_secs_f64();
        let unboxd_use = ServerUse::of(server.0.id()).since(unboxd_before);
        let unbox_machine = machine_cpu().since(machine_before);
        let unbox_idle = Idle::now().percent_since(idle_before);
        let unbox_postgres = cluster_cpu(&cluster).since(postgres_before);
        // The lean and hyper clients run in this process (wrk is a process of its own).
        let unbox_client = (load != Load::Wrk).then(|| {
            process_cpu(std::process::id())
                .since(bench_before)
                .per(unbox_served)
        });
        let (pg_before, pg_idle_before) = (machine_cpu(), Idle::now());
        let pg_started = Instant::now();
        let (pg, (pg_server, pg_client, pg_window)) = pgbench(&cluster, clients, seconds);
        let pg_done = pg.rate * pg_started.elapsed().as_secs_f64();
        let pg_machine = machine_cpu().since(pg_before);
        let pg_idle = Idle::now().percent_since(pg_idle_before);
        let in_window = pg.rate * pg_window;
        let floor_run = match &floor {
            Some((process, floor_address)) => {
                let before = ServerUse::of(process.0.id());
                let started = Instant::now();
                let figures = drive(
                    load,
                    *floor_address,
                    &bodies,
                    &bodies_file,
                    clients,
                    run_for,
                )
                .await;
                let served = figures.rate * started.elapsed().as_secs_f64();
                let used = ServerUse::of(process.0.id()).since(before);
                let (user, system) = used.cpu.per(served);
                Some((figures, user + system, used.preempted_per(served)))
            }
            None => None,
        };
        line(
            &format!("unbox profile fetch, {clients} connections"),
            unbox,
        );
        line(&format!("pgbench -S -M prepared, {clients} clients"), pg);
        println!(
            "  ratio unbox/pgbench: {:.2} (requests/s over tps); p99 {:.2} ms vs {:.2} ms",
            unbox.rate / pg.rate,
            unbox.p99_ms,
            pg.p99_ms
        );
        let costs = Costs {
            unboxd_us: unboxd_use.cpu.per(unbox_served),
            unbox_machine_us: unbox_machine.per(unbox_served),
            pgbench_machine_us: pg_machine.per(pg_done),
        };
        let sum = |(user, system): (f64, f64)| user + system;
        println!(
            "  CPU a request: unboxd {:.1} µs (user {:.1}, system {:.1}; preempted {:.2} times a request), load generator {}, PostgreSQL {:.1} µs; the whole machine {:.1} µs",
            sum(costs.unboxd_us),
            costs.unboxd_us.0,
            costs.unboxd_us.1,
            unboxd_use.preempted_per(unbox_served),
            unbox_client.map_or_else(
                || "(wrk: not measured)".to_owned(),
                |c| format!("{:.1} µs", sum(c))
            ),
            sum(unbox_postgres.per(unbox_served)),
            sum(costs.unbox_machine_us),
        );
        println!(
            "  CPU a pgbench transaction: PostgreSQL {:.1} µs (user {:.1}, system {:.1}), pgbench {:.1} µs; the whole machine {:.1} µs ({:.2} of a request's)",
            sum(pg_server.per(in_window)),
            pg_server.per(in_window).0,
            pg_server.per(in_window).1,
            sum(pg_client.per(in_window)),
            sum(costs.pgbench_machine_us),
            sum(costs.pgbench_machine_us) / sum(costs.unbox_machine_us),
        );
        println!(
            "  the machine idle: {:.1}% during the fetch, {:.1}% during pgbench (stolen by the host: {:.1}%, {:.1}%)\n",
            unbox_idle.0, pg_idle.0, unbox_idle.1, pg_idle.1,
        );
        if let Some((floor, floor_us, floor_preempted)) = floor_run {
            line(&format!("transport floor, {clients} connections"), floor);
            println!(
                "  ratio floor/pgbench: {:.2}; unbox/floor: {:.2}; CPU a request, floor server: {floor_us:.1} µs; preempted {floor_preempted:.2} times a request\n",
                floor.rate / pg.rate,
                unbox.rate / floor.rate,
            );
        }
        results.push((clients, unbox, pg, costs, floor_run.map(|(f, _, _)| f)));
    }
    print_medians(&results);
    // Every device has been served: the cache holds all of them, or is full.
    let kib = |field: &str| proc_status_kib(server.0.id(), field);
    println!(
        "unboxd memory, {devices} devices served, cache of {cache_entries} entries: resident {} MiB, peak {} MiB\n",
        kib("VmRSS:") / 1024,
        kib("VmHWM:") / 1024
    );

    if env_number("BOOT_STORM_OUTAGE", 1) == 0 {
        summary(devices, cold, &results);
        return;
    }
    // The database goes away mid-storm and comes back; unboxd is not restarted.
    let total = Duration::from_secs(40);
    let storm_started = Instant::now();
    let storm_task = tokio::spawn(storm(address, bodies.clone(), 64, false, total));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stopping = storm_started.elapsed();
    tokio::task::block_in_place(|| cluster.stop());
    let outage_at = storm_started.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let starting = storm_started.elapsed();
    tokio::task::block_in_place(|| cluster.start());
    let back_at = storm_started.elapsed();
    let (samples, _) = storm_task.await.unwrap();
    println!(
        "Outage: `pg_ctl stop -m fast` from {:.1} s (down at {:.1} s), `pg_ctl start` from {:.1} s (up at {:.1} s), in a {} s storm of 64 connections",
        stopping.as_secs_f64(),
        outage_at.as_secs_f64(),
        starting.as_secs_f64(),
        back_at.as_secs_f64(),
        total.as_secs()
    );
    println!("  second   200      503   other  (statuses of the answers finished in that second)");
    let seconds_total = usize::try_from(total.as_secs()).unwrap();
    let mut table = vec![(0usize, 0usize, 0usize); seconds_total + 1];
    for (_, status, at) in &samples {
        let second = (usize::try_from(*at).unwrap() / 1000).min(seconds_total);
        match status {
            200 => table[second].0 += 1,
            503 => table[second].1 += 1,
            _ => table[second].2 += 1,
        }
    }
    for (second, (ok, unavailable, other)) in table.iter().enumerate() {
        println!("  {second:>6} {ok:>6} {unavailable:>8} {other:>7}");
    }
    let last_error = samples.iter().filter(|s| s.1 != 200).map(|s| s.2).max();
    let first_error = samples.iter().filter(|s| s.1 != 200).map(|s| s.2).min();
    println!(
        "  errors from {:?} ms to {:?} ms; outage from {} ms to {} ms",
        first_error,
        last_error,
        outage_at.as_millis(),
        back_at.as_millis()
    );
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.2 > last_error.unwrap_or(0))
        .collect();
    println!("  after the last error: {} answers, all 200", after.len());

    summary(devices, cold, &results);
    drop(server);
}

/// The figures as one JSON line, for comparing runs.
type Round = (usize, Figures, Figures, Costs, Option<Figures>);

fn summary(devices: usize, cold: Figures, results: &[Round]) {
    println!(
        "\nSummary (JSON): {}",
        json!({
            "devices": devices,
            "cold": {"rate": cold.rate, "p50Ms": cold.p50_ms, "p99Ms": cold.p99_ms},
            "runs": results.iter().map(|(c, u, p, costs, floor)| json!({
                "connections": c,
                "unbox": {"rate": u.rate, "p50Ms": u.p50_ms, "p99Ms": u.p99_ms, "non200": u.errors},
                "pgbench": {"tps": p.rate, "p50Ms": p.p50_ms, "p99Ms": p.p99_ms},
                "ratio": u.rate / p.rate,
                "floor": floor.map(|f| json!({"rate": f.rate, "p99Ms": f.p99_ms, "ratio": f.rate / p.rate})),
                "cpuUs": {
                    "unboxdUser": costs.unboxd_us.0, "unboxdSystem": costs.unboxd_us.1,
                    "machinePerRequest": costs.unbox_machine_us.0 + costs.unbox_machine_us.1,
                    "machinePerPgbenchTransaction": costs.pgbench_machine_us.0 + costs.pgbench_machine_us.1,
                },
            })).collect::<Vec<_>>(),
        })
    );
}
