//! The background worker that processes import jobs.
//!
//! - **Claiming.** The worker looks for `queued` and `processing` jobs whose upload is on its
//!   storage (`spool_node`), and claims one by taking its session advisory lock on a
//!   connection of its own. That lock is held while the job runs and vanishes with the
//!   connection, so a job of a killed instance is taken over at once. Correctness does not
//!   rest on the lock alone: each chunk's transaction moves the checkpoint only from where
//!   its chunk started (`lock_at`, then `advance`), so a chunk is never committed twice.
//! - **Chunks.** A blocking thread reads and prepares the rows (`prepare`: decoding,
//!   validation, the in-file duplicate check, off the async runtime). Each chunk is one
//!   transaction: the devices in one binary `COPY`, their keys in one `INSERT` (the global
//!   `identity_claims` key is the arbiter between concurrent registrations; when a key is
//!   taken, `ON CONFLICT DO NOTHING` sorts out which, the devices that lost are removed again
//!   and reported 806/808 with the owner, as `POST /v1/devices` reports them), the items in
//!   one insert, and the checkpoint and counts moved: all or nothing. Rows that only name a
//!   machine, dry runs, and jobs that met taken keys look the owners up first, in one query.
//! - **Pipelining.** [`PIPELINE`] chunks are written at once on connections of their own and
//!   committed in file order: a chunk's transaction waits for the one before to commit
//!   before it moves the checkpoint (and rolls back if that one failed). A lock wait that
//!   runs through that ordering and another job is broken by `lock_timeout`, and retried.
//! - **Resuming.** A job whose instance died is `processing` with a checkpoint: the next claim
//!   reads the file past it, rebuilds the in-file duplicate check from the committed items
//!   (and the claims of the devices they registered), and goes on. Transient failures leave
//!   the job `processing` with a `message` for the next attempt; after [`MAX_ATTEMPTS`]
//!   claims without progress it ends in `error`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use unbox_db::devices::{Claim, ClaimOwner};
use unbox_db::imports::{JobRow, NewItem};
use uuid::Uuid;

use super::prepare::{self, Chunk, Outcome, PreparedRow, Producer, RowFailure};
use super::{CHUNK_ROWS, Format, node_id, spool_dir};
use crate::routes::devices::ClaimConflict;
use crate::state::AppState;

/// Jobs one instance processes at once.
pub const MAX_PARALLEL_JOBS: usize = 2;
/// Claims of a job without progress before it is given up.
pub const MAX_ATTEMPTS: i32 = 10;
/// How often the worker looks for jobs when no notification wakes it.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a job that another worker holds is not tried again.
const BUSY_BACKOFF: Duration = Duration::from_secs(5);
/// Retries of a chunk after a deadlock or serialization failure.
const CHUNK_RETRIES: u32 = 5;
/// Chunk transactions of one job in flight at once (each on a connection of its own).
const PIPELINE: usize = 3;
/// A chunk's transaction gives up a lock wait after this long (and is retried).
const LOCK_TIMEOUT_MS: i64 = 10_000;
/// Spool files with no live job are removed once they are this old.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Starts the worker; it stops when `stop` turns true (or its sender is dropped), after the
/// chunks in flight are committed. Jobs it was processing resume at the next start.
pub fn spawn(state: AppState, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(state, stop))
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let data_dir = state.settings.data_dir.clone();
    let node = match tokio::task::spawn_blocking(move || node_id(&data_dir)).await {
        Ok(Ok(node)) => node,
        Ok(Err(error)) => {
            tracing::error!(error = %error, "imports: the data directory cannot hold uploads; imports will not be processed");
            return;
        }
        Err(error) => {
            tracing::error!(error = %error, "imports: starting the worker failed");
            return;
        }
    };
    remove_orphans(&state, node).await;
    let mut listener = match sqlx::postgres::PgListener::connect_with(&state.pool).await {
        Ok(mut listener) => match listener.listen("unbox_imports").await {
            Ok(()) => Some(listener),
            Err(error) => {
                tracing::warn!(error = %error, "imports: no notifications; polling");
                None
            }
        },
        Err(error) => {
            tracing::warn!(error = %error, "imports: no notifications; polling");
            None
        }
    };
    let mut running: JoinSet<Uuid> = JoinSet::new();
    let mut active: HashSet<Uuid> = HashSet::new();
    let mut busy: HashMap<Uuid, Instant> = HashMap::new();
    while !stopping(&stop) {
        while let Some(done) = running.try_join_next() {
            if let Ok(id) = done {
                active.remove(&id);
                // Its lock is released: it may be picked up again (by anyone) at once.
                busy.remove(&id);
            }
        }
        if running.len() < MAX_PARALLEL_JOBS {
            busy.retain(|_, until| *until > Instant::now());
            match pending(&state, node).await {
                Ok(jobs) => {
                    for (tenant_id, id) in jobs {
                        if running.len() >= MAX_PARALLEL_JOBS {
                            break;
                        }
                        if active.contains(&id) || busy.contains_key(&id) {
                            continue;
                        }
                        active.insert(id);
                        busy.insert(id, Instant::now() + BUSY_BACKOFF);
                        let (state, stop) = (state.clone(), stop.clone());
                        running.spawn(async move {
                            if let Err(error) = run_job(&state, tenant_id, id, stop).await {
                                tracing::warn!(import_id = %id, error = format!("{error:#}"), "imports: the job paused");
                            }
                            id
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "imports: looking for jobs failed");
                }
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => match l.try_recv().await {
                    Ok(Some(_)) => {}
                    // The connection was lost (it reconnects on the next call) or failed:
                    // poll meanwhile.
                    Ok(None) | Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
                },
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => {}
            () = notified => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok(id) = done {
                    active.remove(&id);
                    busy.remove(&id);
                }
            }
        }
    }
    // The jobs see the same stop and end after their chunk in flight.
    while running.join_next().await.is_some() {}
}

async fn pending(state: &AppState, node: Uuid) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let mut conn = state.pool.acquire().await?;
    unbox_db::imports::pending(&mut conn, node, 20).await
}

/// Removes spool files that no queued or processing job needs (left by a crash between
/// spooling and committing the job, or by a job whose clean-up was interrupted).
async fn remove_orphans(state: &AppState, node: Uuid) {
    let live: HashSet<String> = match state.pool.acquire().await {
        Ok(mut conn) => match unbox_db::imports::live_spool_files(&mut conn, node).await {
            Ok(files) => files.into_iter().collect(),
            Err(_) => return,
        },
        Err(_) => return,
    };
    let dir = spool_dir(&state.settings.data_dir);
    let _ = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let spool = name.ends_with(".csv") || name.ends_with(".json");
            let partial = name.ends_with(".partial");
            if !(spool || partial) || live.contains(&name) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > ORPHAN_AGE);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    })
    .await;
}

/// How a chunk's transaction ended.
#[derive(Debug)]
enum Written {
    Committed,
    /// Another worker moved the checkpoint: this one lost the job.
    Lost,
    /// The tenant revoked the partner's authorization.
    Revoked,
    /// The chunk before was not committed, so this one was rolled back.
    Abandoned,
}

const REVOKED: &str = "the tenant revoked the partner's authorization; the rows after the checkpoint were not imported";

/// Processes one job until it ends, the worker stops, or a failure pauses it.
async fn run_job(
    state: &AppState,
    tenant_id: Uuid,
    id: Uuid,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let options = state.pool.connect_options();
    let mut conn = PgConnection::connect_with(&*options).await?;
    if !unbox_db::imports::try_lock(&mut conn, id).await? {
        return Ok(());
    }
    let result = process(state, &mut conn, tenant_id, id, stop).await;
    if let Err(error) = &result {
        // Best effort: the job shows why it waits.
        if let Ok(mut other) = state.pool.acquire().await {
            let _ = unbox_db::imports::note(
                &mut other,
                tenant_id,
                id,
                &format!("paused by a failure, will be retried: {error}"),
            )
            .await;
        }
    }
    // Closing the connection releases the lock too; unlock first to be explicit.
    let _ = unbox_db::imports::unlock(&mut conn, id).await;
    let _ = conn.close().await;
    result
}

/// A chunk task's result, with its connection back.
type ChunkTask = tokio::task::JoinHandle<(PgConnection, anyhow::Result<Written>)>;

async fn process(
    state: &AppState,
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(job) = unbox_db::imports::start(conn, tenant_id, id).await? else {
        return Ok(());
    };
    let path = spool_dir(&state.settings.data_dir).join(&job.spool_file);
    if job.attempts > MAX_ATTEMPTS {
        let why = format!(
            "stopped after {} attempts without progress; last: {}",
            job.attempts - 1,
            job.message.as_deref().unwrap_or("no message")
        );
        return finish(conn, &job, Some(&why), &path).await;
    }
    if let Some(partner_id) = job.partner_id
        && !unbox_db::partners::is_authorized(conn, tenant_id, partner_id, false).await?
    {
        return finish(conn, &job, Some(REVOKED), &path).await;
    }
    if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return finish(
            conn,
            &job,
            Some("the uploaded file is no longer in the data directory; upload it again"),
            &path,
        )
        .await;
    }
    let Some(format) = Format::parse(&job.format) else {
        anyhow::bail!("unknown format {}", job.format);
    };
    let recorded = unbox_db::imports::recorded_keys(conn, tenant_id, id).await?;
    let tracker = prepare::rebuild_tracker(&recorded);
    drop(recorded);

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(1);
    let producer_path = path.clone();
    let checkpoint = job.checkpoint_row;
    let producer = tokio::task::spawn_blocking(move || {
        let mut producer = Producer::new(tenant_id, tracker, checkpoint, CHUNK_ROWS, tx);
        match format {
            Format::Csv => prepare::produce_csv(&producer_path, &mut producer),
            Format::Json => prepare::produce_json(&producer_path, &mut producer),
        }
    });

    // Chunks are written on PIPELINE connections at once and committed in file order: while
    // one commits, the next is already being written.
    let options = state.pool.connect_options();
    let mut free = Vec::with_capacity(PIPELINE);
    for _ in 0..PIPELINE {
        free.push(PgConnection::connect_with(&*options).await?);
    }
    let job = std::sync::Arc::new(job);
    let hints = std::sync::Arc::new(JobHints::default());
    let mut inflight: VecDeque<ChunkTask> = VecDeque::new();
    let mut before: Option<oneshot::Receiver<bool>> = None;
    let mut from = job.checkpoint_row;
    // The first chunk, in file order, that was not committed, and why.
    let mut failure: Option<anyhow::Result<Written>> = None;
    let mut paused = false;
    loop {
        let chunk = tokio::select! {
            chunk = rx.recv() => chunk,
            _ = stop.changed() => None,
        };
        if stopping(&stop) {
            paused = true;
            break;
        }
        let Some(chunk) = chunk else {
            break;
        };
        let conn = match free.pop() {
            Some(conn) => conn,
            None => {
                let Some(oldest) = inflight.pop_front() else {
                    anyhow::bail!("no connection for a chunk");
                };
                let oldest = oldest.await;
                match oldest {
                    Ok((conn, Ok(Written::Committed))) => conn,
                    Ok((_, other)) => {
                        failure = Some(other);
                        break;
                    }
                    Err(error) => {
                        failure = Some(Err(error.into()));
                        break;
                    }
                }
            }
        };
        let (done, next_before) = oneshot::channel();
        let task_before = Before {
            rx: before.replace(next_before),
            committed: None,
        };
        let last_row = chunk.last_row;
        inflight.push_back(tokio::spawn(write_in_order(
            conn,
            job.clone(),
            chunk,
            from,
            task_before,
            done,
            hints.clone(),
        )));
        from = Some(last_row);
    }
    drop(rx);
    // The chunks in flight end (committed, or rolled back after a failure before them).
    while let Some(task) = inflight.pop_front() {
        let result = match task.await {
            Ok((_, result)) => result,
            Err(error) => Err(error.into()),
        };
        if failure.is_none() && !matches!(result, Ok(Written::Committed)) {
            failure = Some(result);
        }
    }
    if paused {
        // The next start resumes after the last committed chunk.
        return Ok(());
    }
    match failure {
        None => {}
        Some(Ok(Written::Lost)) => return Ok(()),
        Some(Ok(Written::Revoked)) => return finish(conn, &job, Some(REVOKED), &path).await,
        Some(Ok(written)) => anyhow::bail!("a chunk ended {written:?}"),
        Some(Err(error)) => return Err(error),
    }
    match producer.await {
        Ok(Ok(())) => finish(conn, &job, None, &path).await,
        Ok(Err(prepare::ProduceError::Unreadable(message))) => {
            let why = format!("the spooled upload cannot be read: {message}");
            finish(conn, &job, Some(&why), &path).await
        }
        Ok(Err(error)) => Err(error.into()),
        Err(error) => Err(error.into()),
    }
}

/// What the chunks of a job learn for the ones after them.
#[derive(Debug, Default)]
struct JobHints {
    /// Some machines of this job are registered already (a re-import): look keys up before
    /// writing instead of writing and undoing.
    expect_conflicts: AtomicBool,
}

/// Whether the chunk before this one was committed, learnt once.
struct Before {
    rx: Option<oneshot::Receiver<bool>>,
    committed: Option<bool>,
}

impl Before {
    async fn committed(&mut self) -> bool {
        if let Some(known) = self.committed {
            return known;
        }
        let known = match self.rx.take() {
            None => true,
            Some(rx) => rx.await.unwrap_or(false),
        };
        self.committed = Some(known);
        known
    }
}

/// Writes a chunk, commits it after the chunk before, and tells the chunk after.
async fn write_in_order(
    mut conn: PgConnection,
    job: std::sync::Arc<JobRow>,
    chunk: Chunk,
    from: Option<i64>,
    mut before: Before,
    done: oneshot::Sender<bool>,
    hints: std::sync::Arc<JobHints>,
) -> (PgConnection, anyhow::Result<Written>) {
    let result = write_with_retries(&mut conn, &job, &chunk, from, &mut before, &hints).await;
    let _ = done.send(matches!(result, Ok(Written::Committed)));
    (conn, result)
}

/// Ends the job, records it in the audit log, and removes its upload.
async fn finish(
    conn: &mut PgConnection,
    job: &JobRow,
    stopped: Option<&str>,
    path: &PathBuf,
) -> anyhow::Result<()> {
    let mut tx = conn.begin().await?;
    if let Some(done) = unbox_db::imports::finish(&mut tx, job.tenant_id, job.id, stopped).await? {
        unbox_db::audit::record(
            &mut tx,
            unbox_db::audit::NewEntry {
                tenant_id: done.tenant_id,
                actor_kind: &done.actor_kind,
                actor_id: done.actor_id.clone(),
                action: "import.finish",
                resource_type: "import",
                resource_id: Some(done.id.to_string()),
                before: None,
                after: Some(serde_json::json!({
                    "status": done.status, "dryRun": done.dry_run, "total": done.total,
                    "succeeded": done.succeeded, "failed": done.failed, "message": done.message,
                })),
                request_id: done.request_id.clone(),
            },
        )
        .await?;
        tracing::info!(import_id = %done.id, status = %done.status, total = done.total,
            succeeded = done.succeeded, failed = done.failed, "imports: job finished");
    }
    tx.commit().await?;
    let _ = tokio::fs::remove_file(path).await;
    Ok(())
}

/// Whether a database error is worth retrying: a deadlock, a serialization failure, a lock
/// wait over the timeout, lack of resources, a lost connection.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("40")
                || code.starts_with("53")
                || code.starts_with("08")
                || code.starts_with("57P")
                || code == "55P03"
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

/// Whether the connection itself is gone (and with it the job's lock).
fn is_connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

async fn write_with_retries(
    conn: &mut PgConnection,
    job: &JobRow,
    chunk: &Chunk,
    from: Option<i64>,
    before: &mut Before,
    hints: &JobHints,
) -> anyhow::Result<Written> {
    let mut isolate = false;
    let mut retries = 0;
    loop {
        match write_chunk(conn, job, chunk, from, isolate, before, hints).await {
            Ok(written) => return Ok(written),
            Err(error) if is_connection_lost(&error) => return Err(error.into()),
            Err(error) if is_transient(&error) && retries < CHUNK_RETRIES => {
                retries += 1;
                tracing::debug!(import_id = %job.id, error = %error, retries, "imports: retrying a chunk");
                tokio::time::sleep(Duration::from_millis(20 << retries)).await;
            }
            Err(error) if !is_transient(&error) && !isolate => {
                // A value the database refuses fails the whole statement: find the row.
                tracing::warn!(import_id = %job.id, error = %error, "imports: a chunk failed; writing its rows one by one");
                isolate = true;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// A row's result.
enum RowResult {
    Registered(Uuid),
    /// Dry run: would be registered.
    Would,
    Failed(RowFailure, Option<Uuid>),
}

fn failure_of(conflict: ClaimConflict) -> RowResult {
    let device = match conflict {
        ClaimConflict::AlreadyAssigned(device_id) => Some(device_id),
        ClaimConflict::OtherTenant => None,
    };
    RowResult::Failed(RowFailure::conflict(conflict), device)
}

/// The owners of each row's keys, from one query over all of them.
fn owners_by_row<'a>(
    tenant_id: Uuid,
    rows: impl Iterator<Item = &'a PreparedRow>,
    owners: &[ClaimOwner],
) -> Vec<Option<ClaimConflict>> {
    let mut by_key: HashMap<(&str, &str), Vec<&ClaimOwner>> = HashMap::new();
    for owner in owners {
        by_key
            .entry((owner.kind.as_str(), owner.key.as_str()))
            .or_default()
            .push(owner);
    }
    rows.map(|row| {
        let mine: Vec<ClaimOwner> = row
            .claims
            .iter()
            .filter_map(|c| by_key.get(&(c.kind.as_str(), c.key.as_str())))
            .flatten()
            .map(|o| (*o).clone())
            .collect();
        ClaimConflict::of(tenant_id, &mine)
    })
    .collect()
}

/// One chunk in one transaction.
async fn write_chunk(
    conn: &mut PgConnection,
    job: &JobRow,
    chunk: &Chunk,
    from: Option<i64>,
    isolate: bool,
    before: &mut Before,
    hints: &JobHints,
) -> Result<Written, sqlx::Error> {
    let tenant_id = job.tenant_id;
    let mut tx = conn.begin().await?;
    unbox_db::imports::tune_chunk_transaction(&mut tx, LOCK_TIMEOUT_MS).await?;
    if let Some(partner_id) = job.partner_id
        && !unbox_db::partners::is_authorized(&mut tx, tenant_id, partner_id, true).await?
    {
        return Ok(Written::Revoked);
    }

    let mut results: Vec<Option<RowResult>> = Vec::with_capacity(chunk.rows.len());
    let mut candidates = Vec::new();
    for (i, row) in chunk.rows.iter().enumerate() {
        match &row.outcome {
            Outcome::Failed(f) => results.push(Some(RowResult::Failed(f.clone(), None))),
            Outcome::Register(_) | Outcome::TupleOnly => {
                results.push(None);
                candidates.push(i);
            }
        }
    }
    // Who holds the machines' keys is looked up first for rows that only name a machine, in a
    // dry run, and once a chunk of this job met taken keys; otherwise the claims find out
    // (new machines, the common case, need no lookup).
    let precheck = job.dry_run || isolate || hints.expect_conflicts.load(Ordering::Relaxed);
    let looked: Vec<bool> = candidates
        .iter()
        .map(|&i| precheck || matches!(chunk.rows[i].outcome, Outcome::TupleOnly))
        .collect();
    let looked_rows = || {
        candidates
            .iter()
            .zip(&looked)
            .filter(|(_, looked)| **looked)
            .map(|(&i, _)| &chunk.rows[i])
    };
    let claims: Vec<Claim> = looked_rows()
        .flat_map(|row| row.claims.iter().cloned())
        .collect();
    let owners = if claims.is_empty() {
        Vec::new()
    } else {
        unbox_db::devices::claim_owners(&mut tx, &claims).await?
    };
    let mut conflicts = owners_by_row(tenant_id, looked_rows(), &owners).into_iter();
    let mut to_register = Vec::new();
    for (&i, &was_looked) in candidates.iter().zip(&looked) {
        let conflict = if was_looked {
            conflicts.next().flatten()
        } else {
            None
        };
        let row = &chunk.rows[i];
        results[i] = match (&row.outcome, conflict) {
            (_, Some(conflict)) => Some(failure_of(conflict)),
            (Outcome::TupleOnly, None) => Some(RowResult::Failed(RowFailure::not_found(), None)),
            (Outcome::Register(_), None) if job.dry_run => Some(RowResult::Would),
            (Outcome::Register(_), None) => {
                to_register.push(i);
                None
            }
            (Outcome::Failed(_), None) => None,
        };
    }
    if isolate {
        for &i in &to_register {
            let mut savepoint = tx.begin().await?;
            match register(&mut savepoint, tenant_id, &[&chunk.rows[i]]).await {
                Ok((mut one, _)) => {
                    savepoint.commit().await?;
                    results[i] = one.pop();
                }
                Err(error) if !is_transient(&error) => {
                    savepoint.rollback().await?;
                    results[i] = Some(RowResult::Failed(
                        RowFailure::invalid_request(format!(
                            "the database refused this row: {error}"
                        )),
                        None,
                    ));
                }
                Err(error) => return Err(error),
            }
        }
    } else if !to_register.is_empty() {
        let rows: Vec<&PreparedRow> = to_register.iter().map(|&i| &chunk.rows[i]).collect();
        let (registered, conflicted) = register(&mut tx, tenant_id, &rows).await?;
        if conflicted {
            hints.expect_conflicts.store(true, Ordering::Relaxed);
        }
        for (&i, result) in to_register.iter().zip(registered) {
            results[i] = Some(result);
        }
    }

    let mut items = Vec::with_capacity(chunk.rows.len());
    let (mut succeeded, mut failed) = (0i64, 0i64);
    for (row, result) in chunk.rows.iter().zip(results) {
        let result = result.unwrap_or_else(|| {
            RowResult::Failed(RowFailure::storage("the row was not processed"), None)
        });
        // A registered device's keys are its claims; the other rows keep theirs for a resume.
        let (tuple_key, tpm_key) = if matches!(result, RowResult::Registered(_)) {
            (None, None)
        } else {
            row.recorded_keys()
        };
        let mut item = NewItem {
            line: row.row,
            serial_number: row.serial.clone(),
            status: "complete",
            warnings: row.warnings.clone(),
            tuple_key,
            tpm_key,
            ..NewItem::default()
        };
        match result {
            RowResult::Registered(device_id) => {
                succeeded += 1;
                item.device_id = Some(device_id);
            }
            RowResult::Would => succeeded += 1,
            RowResult::Failed(f, device_id) => {
                failed += 1;
                item.status = "error";
                item.error_code = f.code.map(i32::from);
                item.error_name = Some(f.name.to_owned());
                item.message = Some(f.message);
                item.device_id = device_id;
            }
        }
        items.push(item);
    }
    unbox_db::imports::insert_items(&mut tx, tenant_id, job.id, &items).await?;
    // Commits go in file order: the checkpoint moves from the chunk before's last row.
    if !before.committed().await {
        return Ok(Written::Abandoned);
    }
    if !unbox_db::imports::lock_at(&mut tx, tenant_id, job.id, from).await? {
        return Ok(Written::Lost);
    }
    if !unbox_db::imports::advance(
        &mut tx,
        tenant_id,
        job.id,
        from,
        chunk.last_row,
        succeeded,
        failed,
    )
    .await?
    {
        return Ok(Written::Lost);
    }
    tx.commit().await?;
    Ok(Written::Committed)
}

/// Registers rows: inserts the devices and claims their keys, then undoes the devices whose
/// keys another registration holds (reported as 806/808 with the owner, as `POST /v1/devices`
/// reports them; the global `identity_claims` key decides between concurrent writers).
/// Returns the results and whether any key was taken.
async fn register(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    rows: &[&PreparedRow],
) -> Result<(Vec<RowResult>, bool), sqlx::Error> {
    let mut devices = Vec::with_capacity(rows.len());
    let (mut claim_devices, mut kinds, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        let Outcome::Register(device) = &row.outcome else {
            ids.push(None);
            continue;
        };
        devices.push(device.as_ref());
        ids.push(Some(device.id));
        for claim in &row.claims {
            claim_devices.push(device.id);
            kinds.push(claim.kind.clone());
            keys.push(claim.key.clone());
        }
    }
    if !devices.is_empty() {
        unbox_db::imports::copy_devices(conn, tenant_id, &devices).await?;
    }
    let mut results: Vec<RowResult> = ids
        .iter()
        .map(|id| match id {
            Some(id) => RowResult::Registered(*id),
            None => RowResult::Failed(RowFailure::storage("the row was not processed"), None),
        })
        .collect();
    // Claim the keys plainly (the cheapest way, and the common case: new machines); only
    // when a key is taken, sort out which.
    let mut savepoint = conn.begin().await?;
    match unbox_db::imports::claim_free(&mut savepoint, tenant_id, &claim_devices, &kinds, &keys)
        .await
    {
        Ok(_) => {
            savepoint.commit().await?;
            return Ok((results, false));
        }
        Err(error) if unbox_db::is_unique_violation(&error, Some("identity_claims_pkey")) => {
            savepoint.rollback().await?;
        }
        Err(error) => return Err(error),
    }
    let claimed =
        unbox_db::imports::claim_many(conn, tenant_id, &claim_devices, &kinds, &keys).await?;
    let mut count: HashMap<Uuid, usize> = HashMap::new();
    for device in claimed {
        *count.entry(device).or_default() += 1;
    }
    let lost: Vec<usize> = rows
        .iter()
        .zip(&ids)
        .enumerate()
        .filter(|(_, (row, id))| {
            id.is_some_and(|id| count.get(&id).copied().unwrap_or(0) < row.claims.len())
        })
        .map(|(i, _)| i)
        .collect();
    if lost.is_empty() {
        return Ok((results, true));
    }
    let lost_ids: Vec<Uuid> = lost.iter().filter_map(|&i| ids[i]).collect();
    unbox_db::imports::delete_devices(conn, tenant_id, &lost_ids).await?;
    let lost_claims: Vec<Claim> = lost
        .iter()
        .flat_map(|&i| rows[i].claims.iter().cloned())
        .collect();
    let owners = unbox_db::devices::claim_owners(conn, &lost_claims).await?;
    let conflicts = owners_by_row(tenant_id, lost.iter().map(|&i| rows[i]), &owners);
    for (&i, conflict) in lost.iter().zip(conflicts) {
        results[i] = match conflict {
            Some(conflict) => failure_of(conflict),
            None => RowResult::Failed(
                RowFailure::storage(
                    "the machine was registered and deregistered by others while this row was written; import it again",
                ),
                None,
            ),
        };
    }
    Ok((results, true))
}
