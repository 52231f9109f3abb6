//! The device call's per-instance cache: claim keys → device, the device's data with its open
//! deployment and resolved profile, and per tenant its domain, branding and profiles.
//!
//! Bounded (entries not used lately go first: a CLOCK sweep, in `super::clock_map`) and kept
//! right two ways:
//! - on this instance, at once: admin writes invalidate what they touched before their response
//!   leaves ([`super::consistency`]), and the device call updates what it changes itself;
//! - across instances, through `LISTEN` on `unbox_device_changed` (notified by triggers on every
//!   table the call reads, so no write path can forget) and on the lead's `unbox_invalidate`.
//!
//! While the notification connection is down nothing is served from the cache. When it is
//! back, the changes it may have missed are replayed from the `device_cache_changes` journal
//! (the same triggers write it), so what did not change stays cached.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use unbox_domain::api::Branding;
use unbox_domain::profile::ProfileSettings;
use uuid::Uuid;

use super::clock_map::ClockMap;
use super::proof::DeviceKey;

/// The channel of the triggers of migration 20261122000004.
pub const DEVICE_CHANGED: &str = "unbox_device_changed";

const SHARDS: usize = 16;
/// Slots of the per-device invalidation counters.
const DEVICE_EPOCH_SLOTS: usize = 4096;

/// A bounded map (entries not used lately go first) split in shards, each behind its own lock.
/// Keys are ids and keyed digests, so a fast seeded hash serves (SipHash was a visible part of
/// a cached request).
struct Sharded<K, V> {
    shards: Vec<Mutex<ClockMap<K, V, foldhash::fast::RandomState>>>,
    hasher: foldhash::fast::RandomState,
}

impl<K: Hash + Eq, V: Clone> Sharded<K, V> {
    fn new(capacity: usize) -> Self {
        let per_shard = (capacity / SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(ClockMap::with_hasher(
                        per_shard,
                        foldhash::fast::RandomState::default(),
                    ))
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<ClockMap<K, V, foldhash::fast::RandomState>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    fn get(&self, key: &K) -> Option<V> {
        self.shard(key).lock().ok()?.get(key).cloned()
    }

    /// Like `get`, without marking the entry used.
    fn peek(&self, key: &K) -> Option<V> {
        self.shard(key).lock().ok()?.peek(key).cloned()
    }

    fn put(&self, key: K, value: V) {
        if let Ok(mut shard) = self.shard(&key).lock() {
            shard.push(key, value);
        }
    }

    /// Puts the entry and returns the one it pushed out of the shard, if any.
    fn push(&self, key: K, value: V) -> Option<(K, V)> {
        self.shard(&key).lock().ok()?.push(key, value)
    }

    /// Removes the entry if `remove` says so of its value.
    fn remove_if(&self, key: &K, remove: impl FnOnce(&V) -> bool) {
        if let Ok(mut shard) = self.shard(key).lock()
            && shard.peek(key).is_some_and(remove)
        {
            shard.remove(key);
        }
    }

    fn remove(&self, key: &K) -> Option<V> {
        self.shard(key).lock().ok()?.remove(key)
    }

    fn clear(&self) {
        for shard in &self.shards {
            if let Ok(mut shard) = shard.lock() {
                shard.clear();
            }
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok().map(|s| s.len()))
            .sum()
    }
}

/// A claim key (`kind:key`) as the cache holds it: 128 bits of a keyed hash, random per
/// process, so that no one can aim two keys at one digest. It keeps the cache small (a key is
/// some 70 bytes of text, held twice).
pub type ClaimDigest = u128;

pub fn claim_digest(key: &str) -> ClaimDigest {
    static KEYS: std::sync::LazyLock<(
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    )> = std::sync::LazyLock::new(Default::default);
    (u128::from(KEYS.0.hash_one(key)) << 64) | u128::from(KEYS.1.hash_one(key))
}

/// The owner of a claimed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimOwner {
    pub tenant_id: Uuid,
    pub device_id: Uuid,
}

/// A deployment the device has open, as this instance knows it.
#[derive(Debug, Clone)]
pub struct OpenDeployment {
    pub id: Uuid,
    pub profile_id: Uuid,
    pub opened_at: DateTime<Utc>,
    pub last_download_at: DateTime<Utc>,
    pub timeout_at: DateTime<Utc>,
    pub timeout_minutes: i32,
    /// Not yet written: opened by a download still in the write batch.
    pub new: bool,
    /// The deployment token handed out for it, good until `timeout_at` (a retry gets it again).
    pub token: Option<Arc<str>>,
}

/// The resolved profile and the tenant generation it was computed at.
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    pub generation: u64,
    pub profile_id: Option<Uuid>,
    /// A live rule of the tenant reads what a download changes (`enrollmentProfileName`,
    /// `deviceOSType`): a download that changes them makes the device resolve again.
    pub reads_download_facts: bool,
}

/// What changes as the device downloads.
#[derive(Debug, Clone, Default)]
pub struct DeviceState {
    pub assigned_name: Option<String>,
    pub assigned_name_profile_id: Option<Uuid>,
    pub os_type: String,
    pub enrollment_profile_name: Option<String>,
    pub open: Option<OpenDeployment>,
    pub resolved: Option<Resolved>,
    /// A rule-visible field changed: resolve again once the batch holding it is written.
    pub refresh_after_write: bool,
}

/// A device as the call needs it.
#[derive(Debug)]
pub struct DeviceEntry {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub serial_number: String,
    pub display_name: Option<String>,
    /// The registration's TPM digest: it then matches only requests carrying that digest.
    pub tpm_ek_sha256: Option<String>,
    /// The device registered a key: it must prove possession of it.
    pub requires_proof: bool,
    /// That key (None if it could not be read, and then no proof passes).
    pub key: Option<DeviceKey>,
    /// Its claimed keys, to forget them with it.
    pub claims: Vec<ClaimDigest>,
    pub state: Mutex<DeviceState>,
}

/// A profile as the call needs it.
#[derive(Debug)]
pub struct CachedProfile {
    pub id: Uuid,
    pub settings: ProfileSettings,
    /// The answer rendered for this profile and its tenant at the entry's generation (made by
    /// the first download that needs it; a change to either is a new generation, a new entry).
    pub answer: std::sync::OnceLock<crate::device::answer::AnswerTemplate>,
}

/// A tenant as the call needs it.
#[derive(Debug)]
pub struct TenantFacts {
    pub id: Uuid,
    pub domain: String,
    pub branding: Branding,
}

#[derive(Debug, Default)]
struct TenantEntry {
    /// Bumped by every change of what the tenant's devices resolve to.
    generation: AtomicU64,
    facts: RwLock<Option<Arc<TenantFacts>>>,
    profiles: RwLock<HashMap<Uuid, Arc<CachedProfile>>>,
}

/// Past this many tenants the tenant map starts over.
const MAX_TENANTS: usize = 10_000;

pub struct DeviceCache {
    claims: Sharded<ClaimDigest, ClaimOwner>,
    devices: Sharded<(Uuid, Uuid), Arc<DeviceEntry>>,
    tenants: RwLock<HashMap<Uuid, Arc<TenantEntry>>>,
    /// Bumped when everything is dropped: a load that raced it is not cached.
    epoch: AtomicU64,
    /// Bumped when a device is dropped, per slot of its key: a load of that device that raced
    /// it is not cached (and loads of other devices are not held up by it).
    device_epochs: Vec<AtomicU64>,
    /// True only while the notification connection is up.
    trusted: AtomicBool,
    /// How many times the notification connection was made (and the cache caught up).
    connections: AtomicU64,
}

impl std::fmt::Debug for DeviceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCache")
            .field("devices", &self.devices.len())
            .field("trusted", &self.is_trusted())
            .finish_non_exhaustive()
    }
}

impl DeviceCache {
    /// A cache of at most `capacity` devices. The claim keys are those of the cached devices
    /// (at most two each), which leave with their device: the claim map is sized so that it
    /// never has to push any out itself, however unevenly the shards fill.
    pub fn new(capacity: usize) -> Self {
        Self {
            claims: Sharded::new(capacity.saturating_mul(3)),
            devices: Sharded::new(capacity),
            tenants: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            device_epochs: (0..DEVICE_EPOCH_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            trusted: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        }
    }

    fn device_epoch(&self, tenant_id: Uuid, device_id: Uuid) -> &AtomicU64 {
        let slot = self.devices.hasher.hash_one((tenant_id, device_id)) % DEVICE_EPOCH_SLOTS as u64;
        &self.device_epochs[usize::try_from(slot).unwrap_or(0)]
    }

    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// How many times the notification connection has been made.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    fn set_trusted(&self, trusted: bool) {
        self.trusted.store(trusted, Ordering::Release);
        metrics::gauge!("unbox_device_cache_notifications_connected").set(if trusted {
            1.0
        } else {
            0.0
        });
    }

    /// The epoch to hand back to [`DeviceCache::put_device`] after loading this device.
    pub fn epoch(&self, tenant_id: Uuid, device_id: Uuid) -> (u64, u64) {
        (
            self.epoch.load(Ordering::Acquire),
            self.device_epoch(tenant_id, device_id)
                .load(Ordering::Acquire),
        )
    }

    fn tenant(&self, tenant_id: Uuid) -> Option<Arc<TenantEntry>> {
        if let Some(found) = self
            .tenants
            .read()
            .ok()
            .and_then(|t| t.get(&tenant_id).cloned())
        {
            return Some(found);
        }
        let mut tenants = self.tenants.write().ok()?;
        if tenants.len() >= MAX_TENANTS {
            tenants.clear();
        }
        Some(tenants.entry(tenant_id).or_default().clone())
    }

    /// The owners of these claim keys when every one of them is cached, else None (ask the
    /// database: an uncached key may belong to another device).
    pub fn owners(&self, keys: &[String]) -> Option<Vec<ClaimOwner>> {
        if !self.is_trusted() {
            return None;
        }
        // Recency is kept by the device map; the claim map only follows it.
        keys.iter()
            .map(|k| self.claims.peek(&claim_digest(k)))
            .collect()
    }

    pub fn device(&self, tenant_id: Uuid, device_id: Uuid) -> Option<Arc<DeviceEntry>> {
        if !self.is_trusted() {
            return None;
        }
        self.devices.get(&(tenant_id, device_id))
    }

    /// Like [`DeviceCache::device`], without marking the device used (for the write batch's
    /// bookkeeping, which is not a use).
    pub fn peek_device(&self, tenant_id: Uuid, device_id: Uuid) -> Option<Arc<DeviceEntry>> {
        if !self.is_trusted() {
            return None;
        }
        self.devices.peek(&(tenant_id, device_id))
    }

    /// Caches a device loaded at `epoch`, unless an invalidation came meanwhile.
    pub fn put_device(&self, epoch: (u64, u64), entry: Arc<DeviceEntry>) {
        if !self.is_trusted() || self.epoch(entry.tenant_id, entry.id) != epoch {
            return;
        }
        let owner = ClaimOwner {
            tenant_id: entry.tenant_id,
            device_id: entry.id,
        };
        for claim in &entry.claims {
            self.claims.put(*claim, owner);
        }
        let key = (entry.tenant_id, entry.id);
        if let Some((pushed_out, gone)) = self.devices.push(key, entry)
            && pushed_out != key
        {
            // The least recently used device made room: its claim keys go with it (unless one
            // names another device by now).
            let owner = ClaimOwner {
                tenant_id: gone.tenant_id,
                device_id: gone.id,
            };
            for claim in &gone.claims {
                self.claims.remove_if(claim, |o| *o == owner);
            }
        }
    }

    /// The tenant's current generation: a resolution computed now is stored with it.
    pub fn generation(&self, tenant_id: Uuid) -> u64 {
        self.tenant(tenant_id)
            .map_or(0, |t| t.generation.load(Ordering::Acquire))
    }

    pub fn tenant_facts(&self, tenant_id: Uuid) -> Option<Arc<TenantFacts>> {
        if !self.is_trusted() {
            return None;
        }
        self.tenant(tenant_id)?.facts.read().ok()?.clone()
    }

    pub fn put_tenant_facts(&self, generation: u64, facts: Arc<TenantFacts>) {
        if let Some(tenant) = self.tenant(facts.id)
            && self.is_trusted()
            && tenant.generation.load(Ordering::Acquire) == generation
            && let Ok(mut slot) = tenant.facts.write()
        {
            *slot = Some(facts);
        }
    }

    pub fn profile(&self, tenant_id: Uuid, profile_id: Uuid) -> Option<Arc<CachedProfile>> {
        if !self.is_trusted() {
            return None;
        }
        self.tenant(tenant_id)?
            .profiles
            .read()
            .ok()?
            .get(&profile_id)
            .cloned()
    }

    pub fn put_profile(&self, tenant_id: Uuid, generation: u64, profile: Arc<CachedProfile>) {
        if let Some(tenant) = self.tenant(tenant_id)
            && self.is_trusted()
            && tenant.generation.load(Ordering::Acquire) == generation
            && let Ok(mut profiles) = tenant.profiles.write()
        {
            profiles.insert(profile.id, profile);
        }
    }

    /// Anything of the tenant may have changed: its devices resolve again, its profiles and
    /// branding are read again.
    pub fn invalidate_tenant(&self, tenant_id: Uuid) {
        if let Some(tenant) = self.tenant(tenant_id) {
            tenant.generation.fetch_add(1, Ordering::AcqRel);
            if let Ok(mut facts) = tenant.facts.write() {
                *facts = None;
            }
            if let Ok(mut profiles) = tenant.profiles.write() {
                profiles.clear();
            }
        }
    }

    /// The device changed (or is gone): forget it and its claim keys. Its tenant's generation
    /// moves too, since a device's fields can decide other devices' names.
    pub fn invalidate_device(&self, tenant_id: Uuid, device_id: Uuid) {
        self.device_epoch(tenant_id, device_id)
            .fetch_add(1, Ordering::AcqRel);
        if let Some(entry) = self.devices.remove(&(tenant_id, device_id)) {
            for claim in &entry.claims {
                self.claims.remove(claim);
            }
        }
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.claims.clear();
        self.devices.clear();
        if let Ok(mut tenants) = self.tenants.write() {
            for tenant in tenants.values() {
                tenant.generation.fetch_add(1, Ordering::AcqRel);
            }
            tenants.clear();
        }
    }

    /// Applies one notification payload of `unbox_device_changed` (`origin|tenant` or
    /// `origin|tenant:device`); our own origin's are skipped: we applied them when writing.
    fn apply(&self, origin: &str, payload: &str) {
        let Some((from, what)) = payload.split_once('|') else {
            self.invalidate_all();
            return;
        };
        if from == origin {
            return;
        }
        match what.split_once(':') {
            Some((tenant, device)) => match (tenant.parse(), device.parse()) {
                (Ok(tenant), Ok(device)) => self.invalidate_device(tenant, device),
                _ => self.invalidate_all(),
            },
            None => match what.parse() {
                Ok(tenant) => self.invalidate_tenant(tenant),
                Err(_) => self.invalidate_all(),
            },
        }
    }
}

/// How often the listener marks how far it has heard, and how long a mark waits before it
/// counts (by then every notification of what it saw committed has arrived).
const MARK_EVERY: Duration = Duration::from_secs(10);
/// Changes are kept this long (`prune_cache_changes`)...
const JOURNAL_KEEP: Duration = Duration::from_secs(3600);
/// ...so an instance cut off for longer than this starts its cache over instead of replaying.
const REPLAY_HORIZON: Duration = Duration::from_secs(3000);

/// Everything committed before `snapshot` has been applied to the cache.
struct Heard {
    snapshot: String,
    at: std::time::Instant,
}

impl DeviceCache {
    /// Applies the changes others committed since the last mark, or starts over when there
    /// were none to replay (no mark yet, or one too old).
    fn catch_up(&self, changes: Option<Vec<unbox_db::notify::CacheChange>>) {
        match changes {
            Some(changes) => {
                metrics::counter!("unbox_device_cache_replayed_changes_total")
                    .increment(changes.len() as u64);
                for change in changes {
                    match change.device_id {
                        Some(device) => self.invalidate_device(change.tenant_id, device),
                        None => self.invalidate_tenant(change.tenant_id),
                    }
                }
            }
            None => self.invalidate_all(),
        }
    }
}

/// After (re)connecting: a new mark, and what was missed since the last one (None: nothing
/// to replay from, start over).
async fn catch_up(
    pool: &PgPool,
    heard: Option<&Heard>,
    origin: &str,
) -> Result<(Heard, Option<Vec<unbox_db::notify::CacheChange>>), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    // Taken after LISTEN: whatever commits from here on is notified.
    let snapshot = unbox_db::notify::snapshot(&mut conn).await?;
    let at = std::time::Instant::now();
    let changes = match heard {
        Some(heard) if heard.at.elapsed() < REPLAY_HORIZON => {
            Some(unbox_db::notify::cache_changes_since(&mut conn, &heard.snapshot, origin).await?)
        }
        _ => None,
    };
    Ok((Heard { snapshot, at }, changes))
}

/// Keeps a LISTEN connection open while the process serves: the cache is trusted only while
/// it is up. When it comes back (after a database restart, say), the changes committed since
/// the last point it had heard everything up to are replayed from `device_cache_changes`, so
/// the cache keeps what did not change instead of starting over.
pub fn spawn_listener(
    pool: PgPool,
    cache: Arc<DeviceCache>,
    origin: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut heard: Option<Heard> = None;
        loop {
            let connected = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.ignore_pool_close_event(false);
                // Report a lost connection at once (and stop trusting the cache), rather than
                // after reconnecting, which waits for the database to come back.
                listener.eager_reconnect(false);
                listener
                    .listen_all([DEVICE_CHANGED, unbox_db::notify::TENANT_CHANGED])
                    .await?;
                let (mark, changes) = catch_up(&pool, heard.as_ref(), &origin).await?;
                Ok::<_, sqlx::Error>((listener, mark, changes))
            };
            let connected = tokio::select! {
                result = connected => result,
                _ = shutdown.changed() => return,
            };
            match connected {
                Ok((mut listener, mark, changes)) => {
                    cache.catch_up(changes);
                    heard = Some(mark);
                    cache.set_trusted(true);
                    cache.connections.fetch_add(1, Ordering::AcqRel);
                    backoff = Duration::from_millis(100);
                    let mut ticks = tokio::time::interval(MARK_EVERY);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut pending: Option<Heard> = None;
                    let mut tick_count: u64 = 0;
                    loop {
                        tokio::select! {
                            next = listener.try_recv() => match next {
                                Ok(Some(notification)) => {
                                    if notification.channel() == DEVICE_CHANGED {
                                        cache.apply(&origin, notification.payload());
                                    } else {
                                        match notification.payload().parse::<Uuid>() {
                                            Ok(tenant) => cache.invalidate_tenant(tenant),
                                            Err(_) => cache.invalidate_all(),
                                        }
                                    }
                                }
                                Ok(None) | Err(_) => break,
                            },
                            _ = ticks.tick() => {
                                // Last tick's mark counts now: this connection has stayed up
                                // since, so everything it saw committed has been heard.
                                if let Some(mark) = pending.take() {
                                    heard = Some(mark);
                                }
                                tick_count += 1;
                                if let Ok(mut conn) = pool.acquire().await {
                                    if let Ok(snapshot) = unbox_db::notify::snapshot(&mut conn).await {
                                        pending = Some(Heard { snapshot, at: std::time::Instant::now() });
                                    }
                                    if tick_count.is_multiple_of(6)
                                        && let Err(error) = unbox_db::notify::prune_cache_changes(
                                            &mut conn,
                                            JOURNAL_KEEP.as_secs_f64(),
                                        )
                                        .await
                                    {
                                        tracing::warn!(error = %error, "pruning the device-cache journal failed");
                                    }
                                }
                            }
                            _ = shutdown.changed() => return,
                        }
                    }
                    tracing::warn!(
                        "the device cache's notification connection was lost; serving without it until it is back"
                    );
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot listen for device-cache invalidations");
                }
            }
            // Nothing is served from the cache meanwhile; what changes is replayed on return.
            cache.set_trusted(false);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(tenant_id: Uuid, id: Uuid, claim: &str) -> Arc<DeviceEntry> {
        Arc::new(DeviceEntry {
            tenant_id,
            id,
            serial_number: "S1".into(),
            display_name: None,
            tpm_ek_sha256: None,
            requires_proof: false,
            key: None,
            claims: vec![claim_digest(claim)],
            state: Mutex::new(DeviceState::default()),
        })
    }

    #[test]
    fn invalidations_drop_devices_claims_and_races() {
        let cache = DeviceCache::new(100);
        cache.set_trusted(true);
        let (t, d) = (Uuid::now_v7(), Uuid::now_v7());
        cache.put_device(cache.epoch(t, d), entry(t, d, "tuple:x"));
        assert!(cache.device(t, d).is_some());
        assert_eq!(cache.owners(&["tuple:x".into()]).unwrap()[0].device_id, d);
        assert!(cache.owners(&["tuple:x".into(), "tpm:y".into()]).is_none());

        // Our own notifications are skipped, others' applied.
        cache.apply("me", &format!("me|{t}:{d}"));
        assert!(cache.device(t, d).is_some());
        cache.apply("me", &format!("other|{t}:{d}"));
        assert!(cache.device(t, d).is_none());
        assert!(cache.owners(&["tuple:x".into()]).is_none());

        // A load that raced an invalidation is not kept.
        let epoch = cache.epoch(t, d);
        cache.invalidate_device(t, d);
        cache.put_device(epoch, entry(t, d, "tuple:x"));
        assert!(cache.device(t, d).is_none());
        // Another device's invalidation does not hold this one up.
        let epoch = cache.epoch(t, d);
        cache.invalidate_device(t, Uuid::now_v7());
        cache.put_device(epoch, entry(t, d, "tuple:x"));
        assert!(cache.device(t, d).is_some());
        cache.invalidate_device(t, d);

        let g = cache.generation(t);
        cache.apply("me", &format!("other|{t}"));
        assert_eq!(cache.generation(t), g + 1);

        // Untrusted: nothing is served.
        cache.put_device(cache.epoch(t, d), entry(t, d, "tuple:x"));
        cache.set_trusted(false);
        assert!(cache.device(t, d).is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = DeviceCache::new(64);
        cache.set_trusted(true);
        let t = Uuid::now_v7();
        for i in 0..1000 {
            let d = Uuid::now_v7();
            cache.put_device(cache.epoch(t, d), entry(t, d, &format!("tuple:{i}")));
        }
        assert!(cache.devices.len() <= 64);
        assert!(cache.claims.len() <= 128);
    }
}
