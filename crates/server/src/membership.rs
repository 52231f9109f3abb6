//! The background worker that keeps the stored membership of dynamic groups right: it
//! recomputes a group after its rule changes (in batches of devices, with a cursor, so that a
//! crash resumes where it stopped), and re-evaluates the devices that writes queued in
//! `membership_dirty_devices` (every device write queues the device, by trigger, in its own
//! transaction). Serving never waits for it: the device call evaluates rules itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use unbox_db::memberships::{self, RecomputeJob};
use unbox_domain::rule_device::RuleDevice;
use uuid::Uuid;

/// Devices per recompute batch: large enough to amortise round trips, small enough to keep
/// each transaction short and the worker's memory flat.
pub const RECOMPUTE_BATCH: i64 = 25_000;
/// Queued devices per re-evaluation transaction.
pub const DIRTY_BATCH: i64 = 5_000;
/// A claimed recompute is this instance's for this long, renewed by every batch.
const LEASE_SECONDS: f64 = 30.0;

/// Runs the worker until `shutdown` turns true.
pub fn spawn_worker(pool: PgPool, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut listener = None;
        loop {
            if *shutdown.borrow() || pool.is_closed() {
                return;
            }
            if listener.is_none() {
                listener = match PgListener::connect_with(&pool).await {
                    Ok(mut l) => l
                        .listen(unbox_db::notify::MEMBERSHIP_WORK)
                        .await
                        .ok()
                        .map(|()| l),
                    Err(_) => None,
                };
            }
            let worked = match run_once(&pool).await {
                Ok(worked) => worked,
                Err(error) => {
                    tracing::warn!(error = %error, "membership worker: will retry");
                    false
                }
            };
            if worked {
                continue;
            }
            // Idle: wait for a notification, or poll now and then (notifications can be missed).
            let wait = async {
                match listener.as_mut() {
                    Some(l) => match l.try_recv().await {
                        Ok(Some(_)) => true,
                        // Lost or closed: drop it (and its connection) and connect again later.
                        Ok(None) | Err(_) => false,
                    },
                    None => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        true
                    }
                }
            };
            tokio::select! {
                healthy = wait => if !healthy { listener = None; },
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// Does one unit of work, if there is any: a whole group recompute, or one batch of queued
/// devices. Returns whether there was work.
pub async fn run_once(pool: &PgPool) -> anyhow::Result<bool> {
    let job = {
        let mut conn = pool.acquire().await?;
        memberships::claim_recompute(&mut conn, LEASE_SECONDS).await?
    };
    if let Some(job) = job {
        recompute(pool, job).await?;
        return Ok(true);
    }
    Ok(reevaluate_dirty(pool).await? > 0)
}

/// Outcome of a recompute, for the benchmark and the logs.
#[derive(Debug, Clone, Copy)]
pub struct RecomputeStats {
    pub devices: usize,
    pub members: usize,
    pub elapsed: Duration,
}

/// Recomputes one group's stored membership from its cursor to the end.
pub async fn recompute(pool: &PgPool, job: RecomputeJob) -> anyhow::Result<Option<RecomputeStats>> {
    let started = Instant::now();
    let Some(rule) = unbox_rules::check(&job.membership_rule).rule else {
        anyhow::bail!("group {}: stored rule does not compile", job.group_id);
    };
    let rule = Arc::new(rule);
    let mut cursor = job.cursor;
    let (mut devices, mut members) = (0usize, 0usize);
    loop {
        let batch = {
            let mut conn = pool.acquire().await?;
            memberships::device_batch(&mut conn, job.tenant_id, cursor, RECOMPUTE_BATCH).await?
        };
        let last = batch.last().map(|d| d.id);
        let done = (batch.len() as i64) < RECOMPUTE_BATCH;
        devices += batch.len();
        // Evaluation is CPU work: off the async runtime.
        let rule_for_batch = rule.clone();
        let matched: Vec<Uuid> = tokio::task::spawn_blocking(move || {
            batch
                .iter()
                .filter(|row| rule_for_batch.evaluate(&RuleDevice::new(row.rule_fields())))
                .map(|row| row.id)
                .collect()
        })
        .await?;
        members += matched.len();
        let through = if done { None } else { last };
        let mut tx = pool.begin().await?;
        if !memberships::rule_still_at(&mut tx, job.tenant_id, job.group_id, job.rule_revision)
            .await?
        {
            // The rule changed (or was paused) meanwhile: a new recompute will start over.
            tx.rollback().await?;
            return Ok(None);
        }
        memberships::apply_range(
            &mut tx,
            job.tenant_id,
            job.group_id,
            cursor,
            through,
            &matched,
            LEASE_SECONDS,
        )
        .await?;
        if done {
            memberships::finish_recompute(&mut tx, job.tenant_id, job.group_id, job.rule_revision)
                .await?;
        }
        tx.commit().await?;
        if done {
            break;
        }
        cursor = last;
    }
    let stats = RecomputeStats {
        devices,
        members,
        elapsed: started.elapsed(),
    };
    tracing::info!(group_id = %job.group_id, devices, members, elapsed_ms = stats.elapsed.as_millis() as u64, "group membership recomputed");
    Ok(Some(stats))
}

/// Re-evaluates one batch of queued devices against their tenants' live rules.
pub async fn reevaluate_dirty(pool: &PgPool) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let dirty = memberships::take_dirty(&mut tx, DIRTY_BATCH).await?;
    if dirty.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let mut by_tenant: std::collections::BTreeMap<Uuid, Vec<Uuid>> =
        std::collections::BTreeMap::new();
    for d in &dirty {
        by_tenant.entry(d.tenant_id).or_default().push(d.device_id);
    }
    for (tenant_id, ids) in by_tenant {
        // Locked against rule changes until commit, so no newer rule is overwritten by an older.
        let rules = memberships::lock_live_rules(&mut tx, tenant_id).await?;
        if rules.is_empty() {
            continue;
        }
        let live: Vec<Uuid> = rules.iter().map(|r| r.group_id).collect();
        let rows = memberships::devices_by_id(&mut tx, tenant_id, &ids).await?;
        let (pair_groups, pair_devices) = tokio::task::spawn_blocking(move || {
            let compiled: Vec<(Uuid, unbox_rules::CompiledRule)> = rules
                .into_iter()
                .filter_map(|r| {
                    unbox_rules::check(&r.membership_rule)
                        .rule
                        .map(|c| (r.group_id, c))
                })
                .collect();
            let mut groups: Vec<Uuid> = Vec::new();
            let mut devices: Vec<Uuid> = Vec::new();
            for row in &rows {
                let facts = RuleDevice::new(row.rule_fields());
                for (group_id, rule) in &compiled {
                    if rule.evaluate(&facts) {
                        groups.push(*group_id);
                        devices.push(row.id);
                    }
                }
            }
            (groups, devices)
        })
        .await?;
        memberships::replace_device_memberships(
            &mut tx,
            tenant_id,
            &ids,
            &live,
            &pair_groups,
            &pair_devices,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(dirty.len())
}
