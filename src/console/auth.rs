//! Console credentials: salted password hashes, sessions with their CSRF
//! tokens, and the login rate limit. Time and randomness come in as
//! arguments.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The scheme name at the head of a stored hash.
const SCHEME: &str = "pbkdf2-sha256";
/// PBKDF2 rounds for new hashes: about a quarter of a second on a
/// Raspberry Pi 3, which the login rate limit multiplies for a guesser.
pub const ITERATIONS: u32 = 200_000;
/// Fewer rounds than this in a stored hash is refused as too weak.
const MIN_ITERATIONS: u32 = 10_000;

/// Why a stored password hash cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    /// Not `pbkdf2-sha256$ROUNDS$SALT$HASH` with hex salt and hash.
    Format(String),
    /// The crypto library refused (out of memory).
    Crypto(String),
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::Format(why) => write!(
                f,
                "password_hash is not {SCHEME}$ROUNDS$SALT$HASH ({why}); \
                 write a new one with `lwm2m-gw http passwd`"
            ),
            HashError::Crypto(e) => write!(f, "password hash: {e}"),
        }
    }
}

impl std::error::Error for HashError {}

fn derive(password: &str, salt: &[u8], rounds: u32) -> Result<[u8; 32], HashError> {
    let mut key = [0u8; 32];
    mbedtls::hash::pbkdf2_hmac(
        mbedtls::hash::Type::Sha256,
        password.as_bytes(),
        salt,
        rounds,
        &mut key,
    )
    .map_err(|e| HashError::Crypto(e.to_string()))?;
    Ok(key)
}

/// The stored form of `password` with `salt`: `pbkdf2-sha256$ROUNDS$SALT$HASH`.
pub fn hash_password(password: &str, salt: &[u8; 16], rounds: u32) -> Result<String, HashError> {
    let key = derive(password, salt, rounds)?;
    Ok(format!(
        "{SCHEME}${rounds}${}${}",
        crate::lwm2m::node::hex(salt),
        crate::lwm2m::node::hex(&key)
    ))
}

/// A stored hash, checked once at start so a typo fails there.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    rounds: u32,
    salt: Vec<u8>,
    key: Vec<u8>,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({SCHEME}, {} rounds)", self.rounds)
    }
}

impl PasswordHash {
    /// Parses the stored form.
    pub fn parse(s: &str) -> Result<PasswordHash, HashError> {
        let bad = |why: &str| HashError::Format(why.into());
        let mut parts = s.trim().split('$');
        if parts.next() != Some(SCHEME) {
            return Err(bad("unknown scheme"));
        }
        let rounds: u32 = parts
            .next()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| bad("rounds"))?;
        if rounds < MIN_ITERATIONS {
            return Err(bad("fewer than 10 000 rounds"));
        }
        let salt = parts.next().and_then(unhex).ok_or_else(|| bad("salt"))?;
        let key = parts.next().and_then(unhex).ok_or_else(|| bad("hash"))?;
        if salt.len() < 8 || key.len() != 32 || parts.next().is_some() {
            return Err(bad("lengths"));
        }
        Ok(PasswordHash { rounds, salt, key })
    }

    /// Whether `password` is the one hashed.
    pub fn verify(&self, password: &str) -> bool {
        derive(password, &self.salt, self.rounds).is_ok_and(|k| same(&k, &self.key))
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Equality in time that does not depend on where the bytes differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One logged-in browser.
#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    last: Instant,
}

/// Logged-in sessions by cookie value, bounded; idle ones expire.
#[derive(Debug)]
pub struct Sessions {
    by_cookie: HashMap<String, Session>,
    max: usize,
    idle: Duration,
}

impl Sessions {
    /// At most `max` sessions, each ending after `idle` without a request.
    pub fn new(max: usize, idle: Duration) -> Sessions {
        Sessions {
            by_cookie: HashMap::new(),
            max: max.max(1),
            idle,
        }
    }

    /// Opens a session under `cookie` with `csrf` (both random, from the
    /// caller); past the bound the least recently used one is closed.
    pub fn open(&mut self, now: Instant, cookie: String, csrf: String) {
        self.expire(now);
        if self.by_cookie.len() >= self.max {
            if let Some(oldest) = self
                .by_cookie
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            {
                self.by_cookie.remove(&oldest);
            }
        }
        self.by_cookie.insert(cookie, Session { csrf, last: now });
    }

    /// The session's CSRF token if `cookie` is a live session; the
    /// request keeps it alive.
    pub fn check(&mut self, now: Instant, cookie: &str) -> Option<String> {
        let idle = self.idle;
        let s = self.by_cookie.get_mut(cookie)?;
        if now.saturating_duration_since(s.last) > idle {
            self.by_cookie.remove(cookie);
            return None;
        }
        s.last = now;
        Some(s.csrf.clone())
    }

    /// Ends a session.
    pub fn close(&mut self, cookie: &str) {
        self.by_cookie.remove(cookie);
    }

    /// Sessions open.
    pub fn len(&self) -> usize {
        self.by_cookie.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.by_cookie.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        self.by_cookie
            .retain(|_, s| now.saturating_duration_since(s.last) <= idle);
    }
}

/// Login attempts per address: a burst of [`LOGIN_BURST`], then one every
/// [`LOGIN_EVERY`]; the same over all addresses times ten.
#[derive(Debug)]
pub struct LoginLimit {
    per_ip: HashMap<IpAddr, (f64, Instant)>,
    all: (f64, Instant),
}

/// Attempts an address may make at once.
pub const LOGIN_BURST: f64 = 5.0;
/// After the burst, one attempt per this long.
pub const LOGIN_EVERY: Duration = Duration::from_secs(12);
/// Addresses remembered; past it, those with a full bucket are forgotten.
const MAX_IPS: usize = 4096;

fn take(bucket: &mut (f64, Instant), now: Instant, burst: f64, every: Duration) -> bool {
    let dt = now.saturating_duration_since(bucket.1).as_secs_f64();
    bucket.0 = (bucket.0 + dt / every.as_secs_f64()).min(burst);
    bucket.1 = now;
    if bucket.0 >= 1.0 {
        bucket.0 -= 1.0;
        true
    } else {
        false
    }
}

impl LoginLimit {
    /// Full buckets as of `now`.
    pub fn new(now: Instant) -> LoginLimit {
        LoginLimit {
            per_ip: HashMap::new(),
            all: (LOGIN_BURST * 10.0, now),
        }
    }

    /// Whether `ip` may try a login now; each call is one attempt.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        if !self.per_ip.contains_key(&ip) && self.per_ip.len() >= MAX_IPS {
            let full = LOGIN_BURST * LOGIN_EVERY.as_secs_f64();
            self.per_ip
                .retain(|_, b| b.0 + now.saturating_duration_since(b.1).as_secs_f64() < full);
            if self.per_ip.len() >= MAX_IPS {
                // Every address is mid-guess: new ones wait with the rest.
                return false;
            }
        }
        let b = self.per_ip.entry(ip).or_insert((LOGIN_BURST, now));
        if !take(b, now, LOGIN_BURST, LOGIN_EVERY) {
            return false;
        }
        take(&mut self.all, now, LOGIN_BURST * 10.0, LOGIN_EVERY / 10)
    }

    /// A successful login gives the address its burst back.
    pub fn succeeded(&mut self, ip: IpAddr) {
        self.per_ip.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_hash_accepts_its_password_and_nothing_else() {
        let h = hash_password("correct horse", &[7u8; 16], MIN_ITERATIONS).unwrap();
        assert!(h.starts_with("pbkdf2-sha256$10000$07070707"));
        let p = PasswordHash::parse(&h).unwrap();
        assert!(p.verify("correct horse"));
        assert!(!p.verify("correct horse "));
        assert!(!p.verify(""));
    }

    #[test]
    fn the_same_password_with_another_salt_hashes_differently() {
        let a = hash_password("pw", &[1u8; 16], MIN_ITERATIONS).unwrap();
        let b = hash_password("pw", &[2u8; 16], MIN_ITERATIONS).unwrap();
        assert_ne!(a.rsplit('$').next(), b.rsplit('$').next());
    }

    #[test]
    fn a_known_pbkdf2_vector_is_reproduced() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1).
        let k = derive("passwd", b"salt", 1).unwrap();
        assert_eq!(
            crate::lwm2m::node::hex(&k),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    #[test]
    fn broken_or_weak_stored_hashes_are_refused_with_the_fix() {
        for bad in [
            "",
            "plain",
            "pbkdf2-sha256$100$0011223344556677$00",
            "pbkdf2-sha1$200000$0011223344556677$00",
            "pbkdf2-sha256$200000$zz$00",
            "pbkdf2-sha256$200000$0011223344556677$0011",
        ] {
            let e = PasswordHash::parse(bad).unwrap_err();
            assert!(e.to_string().contains("lwm2m-gw http passwd"), "{bad}: {e}");
        }
    }

    #[test]
    fn sessions_expire_when_idle_and_stay_bounded() {
        let t0 = Instant::now();
        let mut s = Sessions::new(2, Duration::from_secs(60));
        s.open(t0, "a".into(), "ca".into());
        assert_eq!(
            s.check(t0 + Duration::from_secs(59), "a").as_deref(),
            Some("ca")
        );
        // The check kept it alive.
        assert!(s.check(t0 + Duration::from_secs(100), "a").is_some());
        assert!(s.check(t0 + Duration::from_secs(161), "a").is_none());
        s.open(t0, "b".into(), "cb".into());
        s.open(t0 + Duration::from_secs(1), "c".into(), "cc".into());
        s.open(t0 + Duration::from_secs(2), "d".into(), "cd".into());
        assert_eq!(s.len(), 2);
        assert!(s.check(t0 + Duration::from_secs(3), "b").is_none());
        s.close("c");
        assert!(s.check(t0 + Duration::from_secs(3), "c").is_none());
        assert!(s.check(t0 + Duration::from_secs(3), "d").is_some());
    }

    #[test]
    fn logins_from_one_address_are_limited_and_others_still_get_in() {
        let t0 = Instant::now();
        let mut l = LoginLimit::new(t0);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..5 {
            assert!(l.allow(t0, a));
        }
        assert!(!l.allow(t0, a));
        assert!(l.allow(t0, b));
        assert!(!l.allow(t0 + Duration::from_secs(11), a));
        assert!(l.allow(t0 + Duration::from_secs(13), a));
        l.succeeded(a);
        assert!(l.allow(t0 + Duration::from_secs(13), a));
    }

    #[test]
    fn comparison_needs_equal_length_and_bytes() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
