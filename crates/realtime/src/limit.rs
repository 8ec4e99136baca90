//! Limits on what one user, one client address or one API key may hold or do on this node:
//! open streaming connections (a counter per key, released when the connection ends) and rates
//! (a token bucket per key). Over a limit a request is answered 429 with `Retry-After`
//! ([`Error::TooMany`]); nothing is done. Memory is bounded: a counter's key lives only while
//! it has open connections, and a rate limiter keeps at most [`MAX_KEYS`] buckets, forgetting
//! idle ones (a full bucket is the same as none).
//!
//! Also here: who the client is ([`ClientIp`]), from the peer address that the server's
//! accept loop hands over as axum's `ConnectInfo<SocketAddr>` (or `ConnectInfo<PeerAddr>`
//! behind a [`crate::transport::WriteTimeoutListener`]), or from `X-Forwarded-For` when
//! that peer is one of `server.trusted_proxies`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::Config;
use crate::error::Error;
use crate::token::UserId;
use crate::transport::PeerAddr;

/// Counter of requests refused by a limit, labelled `limit`.
pub(crate) const LIMITED: &str = "realtime_limited_total";

/// Most keys one rate limiter remembers. Past it, idle keys are forgotten; if none is idle, a
/// new key is let through untracked rather than refused (fail open: a flood of distinct keys
/// must not lock out everyone else).
pub(crate) const MAX_KEYS: usize = 65_536;

/// How long a client refused for too many connections is told to wait.
const CONNECTIONS_RETRY_SECS: u64 = 5;

/// A token bucket per key: refilled at `per_sec`, holding at most `burst`.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    what: &'static str,
    state: Mutex<Buckets<K>>,
}

#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, Bucket>,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter of `per_sec` per key with bursts of `burst`; `per_sec == 0` lets everything
    /// through. `what` names it in the 429 message and the metric.
    pub(crate) fn new(per_sec: u32, burst: u32, what: &'static str) -> Self {
        RateLimiter {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            what,
            state: Mutex::new(Buckets {
                map: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// How many keys are remembered now.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one token of `key`'s bucket.
    ///
    /// # Errors
    /// 429 `rate_limited`, with the seconds until a token is there, when the bucket is empty.
    pub(crate) fn check(&self, key: &K) -> Result<(), Error> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut st = self.lock();
        if !st.map.contains_key(key) && st.map.len() >= MAX_KEYS && !self.sweep(&mut st, now) {
            return Ok(());
        }
        let bucket = st.map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.per_sec;
        metrics::counter!(LIMITED, "limit" => self.what).increment(1);
        Err(Error::TooMany {
            code: "rate_limited",
            message: format!("too many {} (at most {} a second)", self.what, self.per_sec),
            retry_after_secs: wait.ceil().max(1.0) as u64,
        })
    }

    /// Forgets buckets that are full by now (at most once a second, so that a flood of new
    /// keys does not make every check walk the map). Whether there is room afterwards.
    fn sweep(&self, st: &mut Buckets<K>, now: Instant) -> bool {
        if st
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        st.last_sweep = Some(now);
        st.map.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.per_sec < self.burst
        });
        st.map.len() < MAX_KEYS
    }
}

/// Open connections per key, with a maximum.
#[derive(Debug)]
pub(crate) struct ConnectionCounter<K> {
    max: usize,
    what: &'static str,
    open: Mutex<HashMap<K, usize>>,
}

/// One counted connection; dropping it releases the count.
#[derive(Debug)]
pub(crate) struct Permit<K: Hash + Eq> {
    counter: Arc<ConnectionCounter<K>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Permit<K> {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl<K: Hash + Eq + Clone> ConnectionCounter<K> {
    /// A counter allowing `max` open connections per key; 0 means no limit.
    pub(crate) fn new(max: usize, what: &'static str) -> Arc<Self> {
        Arc::new(ConnectionCounter {
            max,
            what,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// How many keys have open connections now.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Counts one more connection of `key`, until the permit is dropped.
    ///
    /// # Errors
    /// 429 `too_many_connections` when `key` already has the maximum open.
    pub(crate) fn acquire(self: &Arc<Self>, key: K) -> Result<Permit<K>, Error> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if self.max > 0 && *n >= self.max {
            metrics::counter!(LIMITED, "limit" => self.what).increment(1);
            return Err(Error::TooMany {
                code: "too_many_connections",
                message: format!(
                    "too many open connections {} (at most {})",
                    self.what, self.max
                ),
                retry_after_secs: CONNECTIONS_RETRY_SECS,
            });
        }
        *n += 1;
        drop(open);
        Ok(Permit {
            counter: self.clone(),
            key,
        })
    }
}

/// Who a rate of sends is counted for: the user, and for the guest (shared by every visitor)
/// also the client address, so that one visitor cannot use up every guest's sends.
pub(crate) type SendKey = (UserId, Option<IpAddr>);

/// The limits of one router: made from the configuration when it is built, shared by its
/// handlers (as an axum `Extension`).
#[derive(Debug)]
pub(crate) struct Limits {
    proxies: Vec<IpNet>,
    /// Open streaming connections per user.
    pub per_user: Arc<ConnectionCounter<UserId>>,
    /// Open streaming connections per client address (IPv6: per /64).
    pub per_ip: Arc<ConnectionCounter<IpAddr>>,
    /// Sends to server per user (HTTP and WebSocket together).
    pub sends: RateLimiter<SendKey>,
    /// `/api/notify` requests per API key.
    pub notify: RateLimiter<String>,
}

/// The permits of one streaming connection, held for its life.
#[derive(Debug, Default)]
pub(crate) struct ConnectionPermits {
    _ip: Option<Permit<IpAddr>>,
    _user: Option<Permit<UserId>>,
}

impl Limits {
    /// The limits `config` sets.
    ///
    /// # Errors
    /// A message naming a bad `server.trusted_proxies` entry (also caught by
    /// [`Config::validate`]).
    pub(crate) fn from_config(config: &Config) -> Result<Self, String> {
        let proxies = config
            .server
            .trusted_proxies
            .iter()
            .map(|p| parse_proxy(p))
            .collect::<Result<Vec<_>, _>>()?;
        let (l, r) = (&config.limits, &config.rate);
        Ok(Limits {
            proxies,
            per_user: ConnectionCounter::new(l.connections_per_user, "for this user"),
            per_ip: ConnectionCounter::new(l.connections_per_ip, "from this address"),
            sends: RateLimiter::new(r.send_per_sec, r.send_burst, "sends"),
            notify: RateLimiter::new(r.notify_per_sec, r.notify_burst, "notify requests"),
        })
    }

    /// Whether `ip` is a trusted proxy.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.proxies.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    /// untrusted address of `X-Forwarded-For` (read from the right, where each proxy appends).
    pub(crate) fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut ip = peer?.to_canonical();
        if !self.trusts(ip) {
            return Some(ip);
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(h) => {
                    ip = h.to_canonical();
                    if !self.trusts(ip) {
                        break;
                    }
                }
                // A hop a trusted proxy did not write: stop at the last one it did.
                Err(_) => break,
            }
        }
        Some(ip)
    }

    /// Counts a streaming connection of `user` from `ip` (when known).
    ///
    /// # Errors
    /// 429 `too_many_connections`.
    pub(crate) fn connect(
        &self,
        user: UserId,
        ip: Option<IpAddr>,
    ) -> Result<ConnectionPermits, Error> {
        let ip = self.connect_ip(ip)?;
        Ok(ConnectionPermits {
            _user: Some(self.per_user.acquire(user)?),
            _ip: ip._ip,
        })
    }

    /// Counts a streaming connection from `ip` before its user is known (a WebSocket before
    /// its subscribe frame).
    ///
    /// # Errors
    /// 429 `too_many_connections`.
    pub(crate) fn connect_ip(&self, ip: Option<IpAddr>) -> Result<ConnectionPermits, Error> {
        Ok(ConnectionPermits {
            _ip: ip.map(|ip| self.per_ip.acquire(ip_key(ip))).transpose()?,
            _user: None,
        })
    }

    /// Adds the user's count to the permits of a connection counted by address so far.
    ///
    /// # Errors
    /// 429 `too_many_connections`.
    pub(crate) fn connect_user(
        &self,
        permits: &mut ConnectionPermits,
        user: UserId,
    ) -> Result<(), Error> {
        permits._user = Some(self.per_user.acquire(user)?);
        Ok(())
    }

    /// Takes one send of `user` (from `ip`, which counts for the guest).
    ///
    /// # Errors
    /// 429 `rate_limited`.
    pub(crate) fn send(&self, user: UserId, ip: Option<IpAddr>) -> Result<(), Error> {
        let ip = if user == UserId::GUEST {
            ip.map(ip_key)
        } else {
            None
        };
        self.sends.check(&(user, ip))
    }
}

/// The key of an address for per-address limits: IPv4 as it is, IPv6 by its /64 (one
/// customer's network: a host has a whole /64 to pick addresses from).
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Parses one `server.trusted_proxies` entry: an address (`10.0.0.1`, `::1`) or a CIDR range
/// (`10.0.0.0/8`, `fd00::/8`).
///
/// # Errors
/// A message naming the entry.
pub(crate) fn parse_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(|ip| IpNet::from(ip.to_canonical()))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR range"))
}

/// The client's address, as [`Limits::client_ip`] decides; `None` when the server does not
/// hand over the peer address (`ConnectInfo<SocketAddr>`), and then per-address limits are
/// skipped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = peer(parts);
        let ip = match parts.extensions.get::<Arc<Limits>>() {
            Some(limits) => limits.client_ip(peer, &parts.headers),
            None => peer,
        };
        Ok(ClientIp(ip))
    }
}

/// The peer's address, when the server handed it over: `ConnectInfo<SocketAddr>` (a bare
/// `TcpListener`) or `ConnectInfo<PeerAddr>` (a [`crate::transport::WriteTimeoutListener`]).
fn peer(parts: &Parts) -> Option<IpAddr> {
    let ext = &parts.extensions;
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| ext.get::<ConnectInfo<PeerAddr>>().map(|c| c.0 .0))
        .map(|a| a.ip().to_canonical())
}

/// Whether the peer of a request is a trusted proxy (so its forwarding headers count).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FromTrustedProxy(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for FromTrustedProxy {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let trusted = match (peer(parts), parts.extensions.get::<Arc<Limits>>()) {
            (Some(ip), Some(limits)) => limits.trusts(ip),
            _ => false,
        };
        Ok(FromTrustedProxy(trusted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(proxies: &[&str]) -> Limits {
        let mut c = Config::default();
        c.server.trusted_proxies = proxies.iter().map(|p| p.to_string()).collect();
        Limits::from_config(&c).expect("valid proxies")
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().expect("header value"));
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let none = limits(&[]);
        let h = xff("203.0.113.9");
        assert_eq!(
            none.client_ip(Some(ip("10.0.0.2")), &h),
            Some(ip("10.0.0.2"))
        );
        let lan = limits(&["10.0.0.0/8"]);
        assert_eq!(
            lan.client_ip(Some(ip("10.0.0.2")), &h),
            Some(ip("203.0.113.9"))
        );
        // A client cannot hide behind a forged first hop: the nearest untrusted one counts.
        let h = xff("1.2.3.4, 203.0.113.9, 10.0.0.7");
        assert_eq!(
            lan.client_ip(Some(ip("10.0.0.2")), &h),
            Some(ip("203.0.113.9"))
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            lan.client_ip(Some(ip("192.0.2.1")), &h),
            Some(ip("192.0.2.1"))
        );
        // Garbage stops the walk at the last hop a proxy wrote.
        let h = xff("nonsense, 10.0.0.9");
        assert_eq!(
            lan.client_ip(Some(ip("10.0.0.2")), &h),
            Some(ip("10.0.0.9"))
        );
        assert_eq!(lan.client_ip(None, &h), None);
    }

    #[test]
    fn proxies_parse_as_addresses_or_ranges() {
        assert!(parse_proxy("127.0.0.1").is_ok());
        assert!(parse_proxy("::1").is_ok());
        assert!(parse_proxy("10.1.2.3/8").is_ok());
        assert!(parse_proxy("fd00::/8").is_ok());
        assert!(parse_proxy("10.0.0.0/33").is_err());
        assert!(parse_proxy("proxy.local").is_err());
        let l = limits(&["10.1.2.3/8", "::ffff:192.0.2.1"]);
        assert!(l.trusts(ip("10.200.0.1")));
        assert!(l.trusts(ip("192.0.2.1")));
        assert!(!l.trusts(ip("11.0.0.1")));
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_when_to_retry() {
        let r = RateLimiter::new(1, 3, "things");
        for _ in 0..3 {
            assert!(r.check(&"a").is_ok());
        }
        match r.check(&"a") {
            Err(Error::TooMany {
                code: "rate_limited",
                retry_after_secs,
                ..
            }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected rate_limited, got {other:?}"),
        }
        // Another key has its own bucket; a rate of 0 is off.
        assert!(r.check(&"b").is_ok());
        let off = RateLimiter::new(0, 0, "things");
        for _ in 0..1000 {
            assert!(off.check(&"a").is_ok());
        }
        assert_eq!(off.keys(), 0);
    }

    #[test]
    fn many_distinct_keys_stay_bounded() {
        let r = RateLimiter::new(1_000_000, 1, "things");
        for i in 0..(MAX_KEYS as u64 + 10_000) {
            let _ = r.check(&i);
        }
        assert!(r.keys() <= MAX_KEYS, "{} keys kept", r.keys());
    }

    #[test]
    fn a_connection_count_is_released_when_the_permit_drops() {
        let c = ConnectionCounter::new(2, "for this user");
        let a = c.acquire(UserId(1)).expect("first");
        let _b = c.acquire(UserId(1)).expect("second");
        assert!(matches!(
            c.acquire(UserId(1)),
            Err(Error::TooMany {
                code: "too_many_connections",
                ..
            })
        ));
        assert!(c.acquire(UserId(2)).is_ok());
        drop(a);
        let _c = c.acquire(UserId(1)).expect("after one closed");
        drop((_b, _c));
        assert_eq!(c.keys(), 0, "no key outlives its connections");
    }
}
