//! The write batch of the device call: downloads (contact time, OS type, downloaded profile,
//! the deployment opened or continued) are buffered in memory, one per device, and written by
//! one task every flush interval, or sooner when the batch is full or a reader asks.
//!
//! Reads see them within the flush interval, and at once where they ask ([`WriteBatch::flush`]:
//! admin reads do, through [`super::consistency`]). While the database is away the batch keeps
//! its downloads (each device at most once) and writes them when it is back; past
//! `max_pending` devices new downloads are refused, which the device call answers with 503.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use unbox_db::deployments::Download;
use uuid::Uuid;

use super::cache::DeviceCache;

#[derive(Debug, Default)]
struct Pending {
    downloads: HashMap<(Uuid, Uuid), Download, foldhash::fast::RandomState>,
    /// Sequence number of the latest download taken in.
    seq: u64,
}

/// The batch is full: the database has been away too long.
#[derive(Debug)]
pub struct Full;

#[derive(Debug)]
pub struct WriteBatch {
    pending: Mutex<Pending>,
    wake: Notify,
    /// The highest sequence number written.
    written: watch::Sender<u64>,
    max_items: usize,
    max_pending: usize,
    interval: Duration,
}

/// Keeps the later download, with the earlier one's facts the later lacks: a deployment opened
/// earlier in the same batch stays new.
fn merge_into(earlier: Download, later: &mut Download) {
    if later.profile_name.is_none() {
        later.profile_name = earlier.profile_name;
    }
    later.facts_changed |= earlier.facts_changed;
    match (earlier.deployment, later.deployment.as_mut()) {
        (Some(before), Some(after)) if before.id == after.id => {
            after.new |= before.new;
            after.opened_at = before.opened_at;
        }
        (Some(before), None) => later.deployment = Some(before),
        _ => {}
    }
}

impl WriteBatch {
    pub fn new(interval: Duration, max_items: usize, max_pending: usize) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            written: watch::channel(0).0,
            max_items: max_items.max(1),
            max_pending: max_pending.max(1),
            interval,
        }
    }

    /// Takes a download in.
    pub fn push(&self, download: Download) -> Result<(), Full> {
        let mut pending = self.pending.lock().map_err(|_| Full)?;
        let key = (download.tenant_id, download.device_id);
        let len = pending.downloads.len();
        // One probe of the map a download, whether it merges or is the device's first.
        match pending.downloads.entry(key) {
            Entry::Occupied(mut slot) => {
                let earlier = slot.insert(download);
                merge_into(earlier, slot.get_mut());
            }
            Entry::Vacant(slot) => {
                if len >= self.max_pending {
                    return Err(Full);
                }
                slot.insert(download);
            }
        }
        pending.seq += 1;
        let full = pending.downloads.len() >= self.max_items;
        drop(pending);
        if full {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The pending download of this device, if any (for a cache reload).
    pub fn pending_for(&self, tenant_id: Uuid, device_id: Uuid) -> Option<Download> {
        self.pending
            .lock()
            .ok()?
            .downloads
            .get(&(tenant_id, device_id))
            .cloned()
    }

    /// Waits until everything taken in before the call is written, at most `timeout`.
    /// Returns false on timeout (the database is away).
    pub async fn flush(&self, timeout: Duration) -> bool {
        // Everything taken in so far, including what the writer may be writing right now.
        let Ok(target) = self.pending.lock().map(|p| p.seq) else {
            return false;
        };
        let mut written = self.written.subscribe();
        if *written.borrow() >= target {
            return true;
        }
        self.wake.notify_one();
        tokio::time::timeout(timeout, written.wait_for(|w| *w >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Writes what is pending once; on failure puts it back (newer downloads win).
    async fn write_once(&self, pool: &PgPool, cache: &DeviceCache, origin: &str) -> bool {
        let (downloads, seq) = {
            let Ok(mut pending) = self.pending.lock() else {
                return false;
            };
            if pending.downloads.is_empty() {
                let seq = pending.seq;
                drop(pending);
                self.written.send_if_modified(|w| {
                    let changed = *w < seq;
                    *w = seq.max(*w);
                    changed
                });
                return true;
            }
            // The next batch starts at this one's size: no rehashing as it fills again.
            let fresh = HashMap::with_capacity_and_hasher(
                pending.downloads.len(),
                foldhash::fast::RandomState::default(),
            );
            (
                std::mem::replace(&mut pending.downloads, fresh),
                pending.seq,
            )
        };
        let mut batch: Vec<Download> = downloads.into_values().collect();
        // One order for every writer, so that concurrent batches lock rows alike.
        batch.sort_unstable_by_key(|d| (d.tenant_id, d.device_id));
        let started = std::time::Instant::now();
        let result = write(pool, &batch, origin).await;
        metrics::histogram!("unbox_device_batch_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                metrics::counter!("unbox_device_batch_writes_total", "result" => "ok").increment(1);
                metrics::counter!("unbox_device_batch_items_total").increment(batch.len() as u64);
                // Deployments are written now: the cache need not treat them as new any more.
                // Only downloads that opened one or changed a fact left anything to update (a
                // plain retry, most of a boot storm, did not).
                let left_something =
                    |d: &&Download| d.facts_changed || d.deployment.as_ref().is_some_and(|x| x.new);
                for d in batch.iter().filter(left_something) {
                    if let Some(entry) = cache.peek_device(d.tenant_id, d.device_id)
                        && let Ok(mut state) = entry.state.lock()
                    {
                        if let Some(open) = state.open.as_mut()
                            && d.deployment.as_ref().is_some_and(|x| x.id == open.id)
                        {
                            open.new = false;
                        }
                        if state.refresh_after_write {
                            state.refresh_after_write = false;
                            state.resolved = None;
                        }
                    }
                }
                self.written.send_if_modified(|w| {
                    let changed = *w < seq;
                    *w = seq.max(*w);
                    changed
                });
                true
            }
            Err(error) => {
                metrics::counter!("unbox_device_batch_writes_total", "result" => "error")
                    .increment(1);
                tracing::warn!(error = %error, items = batch.len(), "writing the device batch failed; will retry");
                if let Ok(mut pending) = self.pending.lock() {
                    for earlier in batch {
                        let key = (earlier.tenant_id, earlier.device_id);
                        match pending.downloads.entry(key) {
                            Entry::Occupied(mut later) => merge_into(earlier, later.get_mut()),
                            Entry::Vacant(slot) => {
                                slot.insert(earlier);
                            }
                        }
                    }
                }
                false
            }
        }
    }

    /// Writes every flush interval (or when woken) until `shutdown`, then once more.
    pub fn spawn(
        self: Arc<Self>,
        pool: PgPool,
        cache: Arc<DeviceCache>,
        origin: String,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tokio::spawn(async move {
            let mut backoff = self.interval;
            loop {
                let stop = tokio::select! {
                    () = tokio::time::sleep(backoff) => false,
                    () = self.wake.notified() => false,
                    _ = shutdown.changed() => true,
                };
                if stop {
                    return;
                }
                backoff = if self.write_once(&pool, &cache, &origin).await {
                    self.interval
                } else {
                    (backoff * 2).clamp(self.interval, Duration::from_secs(2))
                };
            }
        });
    }

    /// The last write, when serving has stopped: a few tries, then what is left is logged.
    pub async fn drain(&self, pool: &PgPool, cache: &DeviceCache, origin: &str) {
        for _ in 0..3 {
            if self.write_once(pool, cache, origin).await
                && self.pending.lock().is_ok_and(|p| p.downloads.is_empty())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let left = self.pending.lock().map_or(0, |p| p.downloads.len());
        if left > 0 {
            tracing::error!(
                left,
                "device downloads could not be written before stopping"
            );
        }
    }
}

async fn write(pool: &PgPool, batch: &[Download], origin: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    unbox_db::device_serving::set_origin(&mut tx, origin).await?;
    unbox_db::deployments::flush_downloads(&mut tx, batch).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::Utc;
    use unbox_db::deployments::DownloadDeployment;

    use super::*;

    fn download(deployment: Option<(Uuid, bool)>, name: Option<&str>) -> Download {
        Download {
            tenant_id: Uuid::nil(),
            device_id: Uuid::nil(),
            at: Utc::now(),
            os_type: "Windows".into(),
            profile_name: name.map(str::to_owned),
            facts_changed: name.is_some(),
            deployment: deployment.map(|(id, new)| DownloadDeployment {
                id,
                new,
                profile_id: Uuid::nil(),
                opened_at: Utc::now(),
                timeout_at: Utc::now(),
                timeout_minutes: 60,
            }),
        }
    }

    #[test]
    fn one_download_per_device_and_a_bound() {
        let batch = WriteBatch::new(Duration::from_millis(200), 10, 1);
        let id = Uuid::now_v7();
        batch.push(download(Some((id, true)), Some("P"))).unwrap();
        batch.push(download(Some((id, false)), None)).unwrap();
        let kept = batch.pending_for(Uuid::nil(), Uuid::nil()).unwrap();
        let deployment = kept.deployment.unwrap();
        assert!(deployment.new, "opened in this batch, so still new");
        assert_eq!(kept.profile_name.as_deref(), Some("P"));
        assert!(
            kept.facts_changed,
            "the earlier download's change is still to be written"
        );
        let mut other = download(None, None);
        other.device_id = Uuid::now_v7();
        assert!(batch.push(other).is_err(), "past max_pending");
    }
}
