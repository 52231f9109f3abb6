//! Rate limits of the device endpoints: in-memory token buckets per identity (its strong claim
//! keys) and per client address, each a number of requests a minute (0 turns it off). Memory is
//! bounded: a bucket that has refilled is the same as none and is dropped, and each shard holds
//! at most a fixed number of keys.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};

use crate::error::ApiError;
use crate::state::AppState;

const SHARDS: usize = 16;
/// Keys one shard tracks at most (so 16 × this in all).
const MAX_KEYS_PER_SHARD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of `per_minute` requests a minute (the burst is the same number).
#[derive(Debug)]
pub struct Buckets {
    per_minute: u32,
    shards: Vec<Mutex<HashMap<u64, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Buckets {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn capacity(&self) -> f64 {
        f64::from(self.per_minute)
    }

    fn rate_per_sec(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn refilled(&self, bucket: Option<&Bucket>, now: Instant) -> f64 {
        bucket.map_or(self.capacity(), |b| {
            (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate_per_sec())
                .min(self.capacity())
        })
    }

    /// Takes one token from each key's bucket, or none and says how long to wait.
    pub fn take(&self, keys: &[&[u8]]) -> Result<(), Duration> {
        let now = Instant::now();
        let hashes: Vec<u64> = keys.iter().map(|k| self.hasher.hash_one(k)).collect();
        let shard = |h: u64| &self.shards[usize::try_from(h % SHARDS as u64).unwrap_or(0)];
        let mut wait = Duration::ZERO;
        for &h in &hashes {
            if let Ok(map) = shard(h).lock() {
                let tokens = self.refilled(map.get(&h), now);
                if tokens < 1.0 {
                    wait = wait.max(Duration::from_secs_f64(
                        (1.0 - tokens) / self.rate_per_sec(),
                    ));
                }
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for &h in &hashes {
            if let Ok(mut map) = shard(h).lock() {
                let tokens = self.refilled(map.get(&h), now);
                if map.len() >= MAX_KEYS_PER_SHARD && !map.contains_key(&h) {
                    self.evict(&mut map, now);
                }
                map.insert(
                    h,
                    Bucket {
                        tokens: tokens - 1.0,
                        at: now,
                    },
                );
            }
        }
        Ok(())
    }

    /// Drops the buckets that have refilled; if the shard is still full, some others.
    fn evict(&self, map: &mut HashMap<u64, Bucket>, now: Instant) {
        let full = self.capacity();
        map.retain(|_, b| self.refilled(Some(b), now) < full);
        if map.len() >= MAX_KEYS_PER_SHARD {
            let excess: Vec<u64> = map.keys().take(map.len() / 8 + 1).copied().collect();
            for key in excess {
                map.remove(&key);
            }
        }
    }

    /// Drops idle buckets (those that have refilled): run now and then.
    pub fn sweep(&self) {
        let now = Instant::now();
        let full = self.capacity();
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                map.retain(|_, b| self.refilled(Some(b), now) < full);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok().map(|m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `::1/128`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}` has an invalid prefix length"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The peer of a connection, as the server records it (plain TCP or TLS).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, super::tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, super::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The rate limits of the device endpoints.
#[derive(Debug)]
pub struct Limiter {
    per_identity: Option<Buckets>,
    per_address: Option<Buckets>,
    trusted_proxies: Vec<Cidr>,
}

impl Limiter {
    pub fn new(per_identity: u32, per_address: u32, trusted_proxies: Vec<Cidr>) -> Self {
        Self {
            per_identity: (per_identity > 0).then(|| Buckets::new(per_identity)),
            per_address: (per_address > 0).then(|| Buckets::new(per_address)),
            trusted_proxies,
        }
    }

    fn trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(address))
    }

    /// The client's address: the peer's, or when the peer is a trusted proxy, the last address
    /// of `X-Forwarded-For` that is not a trusted proxy.
    pub fn client_address(&self, peer: Option<IpAddr>, forwarded: Option<&str>) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted(peer) {
            return Some(peer);
        }
        let Some(forwarded) = forwarded else {
            return Some(peer);
        };
        let mut client = peer;
        for hop in forwarded.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(address) => {
                    client = address;
                    if !self.trusted(address) {
                        break;
                    }
                }
                // A malformed hop: trust nothing further left.
                Err(_) => break,
            }
        }
        Some(client)
    }

    /// Limits the client address (when that limit is on).
    pub fn check_address(&self, client: &ClientAddress) -> Result<(), ApiError> {
        match (&self.per_address, client.0) {
            (Some(buckets), Some(address)) => buckets
                .take(&[address.to_string().as_bytes()])
                .map_err(|wait| limited(wait, "this address")),
            _ => Ok(()),
        }
    }

    /// Limits an identity by each of its keys (when that limit is on).
    pub fn check_identity(&self, keys: &[String]) -> Result<(), ApiError> {
        match &self.per_identity {
            Some(buckets) if !keys.is_empty() => {
                let keys: Vec<&[u8]> = keys.iter().map(String::as_bytes).collect();
                buckets
                    .take(&keys)
                    .map_err(|wait| limited(wait, "this device"))
            }
            _ => Ok(()),
        }
    }

    pub fn sweep(&self) {
        for buckets in [&self.per_identity, &self.per_address]
            .into_iter()
            .flatten()
        {
            buckets.sweep();
        }
    }
}

fn limited(wait: Duration, whom: &str) -> ApiError {
    let seconds = wait.as_secs_f64().ceil().max(1.0);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RateLimited",
        format!("too many requests from {whom}; retry after {seconds} seconds"),
    )
    .header(
        header::RETRY_AFTER,
        HeaderValue::from_str(&format!("{seconds}")).unwrap_or(HeaderValue::from_static("60")),
    )
    .with("retryAfter", seconds)
}

/// The client's address as the rate limits see it (None when the server does not record
/// peers, as when the router is used without connect info).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl<S> FromRequestParts<S> for ClientAddress
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .map(|c| c.0.0.ip());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientAddress(
            state.device.limits.client_address(peer, forwarded),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn buckets_refuse_past_the_rate_and_forget_idle_keys() {
        let b = Buckets::new(3);
        for _ in 0..3 {
            b.take(&[b"a"]).unwrap();
        }
        let wait = b.take(&[b"a"]).unwrap_err();
        assert!(wait > Duration::from_secs(10) && wait <= Duration::from_secs(20));
        // Another key is unaffected; a request with both keys is refused whole.
        b.take(&[b"b"]).unwrap();
        assert!(b.take(&[b"b", b"a"]).is_err());
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn client_addresses_come_from_trusted_proxies_only() {
        let l = Limiter::new(0, 10, vec!["10.0.0.0/8".parse().unwrap()]);
        let peer = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            l.client_address(peer("192.0.2.1"), Some("198.51.100.7")),
            peer("192.0.2.1")
        );
        assert_eq!(
            l.client_address(
                peer("10.1.2.3"),
                Some("203.0.113.9, 198.51.100.7, 10.0.0.5")
            ),
            peer("198.51.100.7")
        );
        assert_eq!(l.client_address(peer("10.1.2.3"), None), peer("10.1.2.3"));
        assert!("::1/129".parse::<Cidr>().is_err());
        assert!(
            "2001:db8::/32"
                .parse::<Cidr>()
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}
