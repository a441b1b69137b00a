//! The local web console: login, sessions and CSRF, the JSON API's routes
//! onto the one command path, and the embedded pages. The HTTP server that
//! carries it is `runtime::console`.

pub mod api;
pub mod assets;
pub mod auth;

use api::Refusal;
use auth::{LoginLimit, PasswordHash, Sessions};
use serde_json::Value as Json;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "lwgw_session";

/// What may log in.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The console password's stored hash.
    pub password: Option<PasswordHash>,
    /// A static token (`Authorization: Bearer`, or typed at the login).
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // The token is a secret: settings are printed in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("password", &self.password)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl Credentials {
    /// Whether any credential is set.
    pub fn any(&self) -> bool {
        self.password.is_some() || self.token.is_some()
    }
}

/// Who is let in: credentials, sessions and the login rate limit.
pub struct Gate {
    creds: Credentials,
    sessions: Sessions,
    limit: LoginLimit,
}

/// A request's login as the HTTP server read it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    /// The session cookie's value.
    pub cookie: Option<&'a str>,
    /// The bearer token.
    pub bearer: Option<&'a str>,
    /// The X-CSRF-Token header.
    pub csrf: Option<&'a str>,
}

fn refuse(status: u16, message: &str) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

impl Gate {
    /// A gate for `creds`, with at most `max_sessions` sessions that end
    /// after `idle` without a request.
    pub fn new(creds: Credentials, max_sessions: usize, idle: Duration, now: Instant) -> Gate {
        Gate {
            creds,
            sessions: Sessions::new(max_sessions, idle),
            limit: LoginLimit::new(now),
        }
    }

    /// Lets a request through, or says why not: 401 without a login, 403
    /// for a state change without the session's CSRF token. Without
    /// credentials (loopback only) a session is still needed: it is what
    /// keeps other web sites in the same browser out.
    pub fn admit(&mut self, now: Instant, p: Presented, writes: bool) -> Result<(), Refusal> {
        if let (Some(b), Some(t)) = (p.bearer, &self.creds.token) {
            // A bearer token is not sent by the browser on its own, so it
            // needs no CSRF token.
            if auth::same(b.as_bytes(), t.as_bytes()) {
                return Ok(());
            }
            return Err(refuse(401, "wrong token"));
        }
        let csrf = p
            .cookie
            .and_then(|c| self.sessions.check(now, c))
            .ok_or_else(|| refuse(401, "log in first"))?;
        if writes
            && !p
                .csrf
                .is_some_and(|h| auth::same(h.as_bytes(), csrf.as_bytes()))
        {
            return Err(refuse(403, "missing or wrong X-CSRF-Token"));
        }
        Ok(())
    }

    /// The CSRF token of this request's session, if it has one.
    pub fn session(&mut self, now: Instant, p: Presented) -> Option<String> {
        p.cookie.and_then(|c| self.sessions.check(now, c))
    }

    /// Without credentials, opens a session for whoever asks (the page
    /// then needs no login form); with credentials, none.
    pub fn open_without_credentials(
        &mut self,
        now: Instant,
        cookie: String,
        csrf: String,
    ) -> Option<String> {
        if self.creds.any() {
            return None;
        }
        self.sessions.open(now, cookie, csrf.clone());
        Some(csrf)
    }

    /// Whether credentials are configured.
    pub fn has_credentials(&self) -> bool {
        self.creds.any()
    }

    /// Checks a login body (`password` or `token`) from `ip`; on success
    /// opens a session under `cookie` with `csrf` (both fresh random values
    /// from the caller) and gives back the CSRF token. The HTTP server runs
    /// the same three steps with the hashing on a blocking thread.
    pub fn login(
        &mut self,
        now: Instant,
        ip: IpAddr,
        body: &Json,
        cookie: String,
        csrf: String,
    ) -> Result<String, Refusal> {
        let attempt = self.login_attempt(now, ip, body)?;
        let ok = attempt.verify();
        self.login_outcome(now, &attempt, ok, cookie, csrf)
    }

    /// The first step: the rate limit and the body, before any hashing.
    pub fn login_attempt(
        &mut self,
        now: Instant,
        ip: IpAddr,
        body: &Json,
    ) -> Result<LoginAttempt, Refusal> {
        if !self.limit.allow(now, ip) {
            return Err(refuse(429, "too many login attempts; wait a minute"));
        }
        let text = |k: &str| body.get(k).and_then(Json::as_str).map(str::to_string);
        let (password, token) = (text("password"), text("token"));
        if password.is_none() && token.is_none() {
            return Err(refuse(400, "give \"password\" or \"token\""));
        }
        Ok(LoginAttempt {
            ip,
            password,
            token,
            creds: self.creds.clone(),
        })
    }

    /// The last step: a session for a verified attempt, else 401.
    pub fn login_outcome(
        &mut self,
        now: Instant,
        attempt: &LoginAttempt,
        ok: bool,
        cookie: String,
        csrf: String,
    ) -> Result<String, Refusal> {
        let ip = attempt.ip;
        if !ok {
            log::warn!("console: failed login from {ip}");
            return Err(refuse(401, "wrong password"));
        }
        self.limit.succeeded(ip);
        log::info!("console: login from {ip}");
        self.sessions.open(now, cookie, csrf.clone());
        Ok(csrf)
    }

    /// Ends the request's session.
    pub fn logout(&mut self, p: Presented) {
        if let Some(c) = p.cookie {
            self.sessions.close(c);
        }
    }
}

/// A login to verify: what was typed and what it must match. Verifying
/// a password costs 200 000 rounds of HMAC-SHA256, a quarter of a second
/// on a Raspberry Pi 3, so the HTTP server does it off its own thread.
// No Debug: it holds what was typed.
#[derive(Clone)]
pub struct LoginAttempt {
    ip: IpAddr,
    password: Option<String>,
    token: Option<String>,
    creds: Credentials,
}

impl LoginAttempt {
    /// Whether it matches the configured password or token.
    pub fn verify(&self) -> bool {
        let by_token = |t: &str| {
            self.creds
                .token
                .as_ref()
                .is_some_and(|x| auth::same(x.as_bytes(), t.as_bytes()))
        };
        let by_password = |p: &str| {
            self.creds.password.as_ref().is_some_and(|h| h.verify(p))
                // The login form has one field: a token typed there works
                // as well.
                || by_token(p)
        };
        !self.creds.any()
            || self.token.as_deref().is_some_and(by_token)
            || self.password.as_deref().is_some_and(by_password)
    }
}

/// Whether a Host header names this machine's loopback: without
/// credentials only those are served, so a web page whose name is made to
/// point at 127.0.0.1 (DNS rebinding) is refused.
pub fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gate() -> (Gate, Instant) {
        let now = Instant::now();
        let hash = auth::hash_password("s3cret", &[9u8; 16], 10_000).unwrap();
        let creds = Credentials {
            password: Some(PasswordHash::parse(&hash).unwrap()),
            token: Some("tok-123".into()),
        };
        (Gate::new(creds, 8, Duration::from_secs(600), now), now)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn credentials_never_print_their_token() {
        let c = Credentials {
            password: None,
            token: Some("tok-secret-123456".into()),
        };
        assert!(!format!("{c:?}").contains("tok-secret"));
    }

    #[test]
    fn only_loopback_host_names_pass_the_host_check() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "LOCALHOST",
            "127.0.0.2",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "192.168.1.5:8080",
            "[2001:db8::1]:80",
            "",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn without_credentials_a_session_is_still_needed_and_writes_need_its_token() {
        let now = Instant::now();
        let mut g = Gate::new(Credentials::default(), 4, Duration::from_secs(60), now);
        assert_eq!(
            g.admit(now, Presented::default(), false)
                .unwrap_err()
                .status,
            401
        );
        let csrf = g
            .open_without_credentials(now, "c".into(), "x".into())
            .unwrap();
        let mut p = Presented {
            cookie: Some("c"),
            ..Default::default()
        };
        assert!(g.admit(now, p, false).is_ok());
        assert_eq!(g.admit(now, p, true).unwrap_err().status, 403);
        p.csrf = Some(&csrf);
        assert!(g.admit(now, p, true).is_ok());
        let (mut g, now) = gate();
        assert!(g
            .open_without_credentials(now, "c".into(), "x".into())
            .is_none());
    }

    #[test]
    fn without_a_login_nothing_is_let_through() {
        let (mut g, now) = gate();
        let e = g.admit(now, Presented::default(), false).unwrap_err();
        assert_eq!(e.status, 401);
        let forged = Presented {
            cookie: Some("made-up"),
            ..Default::default()
        };
        assert_eq!(g.admit(now, forged, false).unwrap_err().status, 401);
    }

    #[test]
    fn a_session_reads_freely_but_writes_only_with_its_csrf_token() {
        let (mut g, now) = gate();
        let csrf = g
            .login(
                now,
                IP,
                &json!({"password": "s3cret"}),
                "c1".into(),
                "x1".into(),
            )
            .unwrap();
        assert_eq!(csrf, "x1");
        let mut p = Presented {
            cookie: Some("c1"),
            ..Default::default()
        };
        assert!(g.admit(now, p, false).is_ok());
        assert_eq!(g.admit(now, p, true).unwrap_err().status, 403);
        p.csrf = Some("x2");
        assert_eq!(g.admit(now, p, true).unwrap_err().status, 403);
        p.csrf = Some("x1");
        assert!(g.admit(now, p, true).is_ok());
        g.logout(p);
        assert_eq!(g.admit(now, p, false).unwrap_err().status, 401);
    }

    #[test]
    fn a_wrong_password_opens_no_session_and_repeated_tries_are_limited() {
        let (mut g, now) = gate();
        for _ in 0..5 {
            let e = g
                .login(
                    now,
                    IP,
                    &json!({"password": "guess"}),
                    "c".into(),
                    "x".into(),
                )
                .unwrap_err();
            assert_eq!(e.status, 401);
        }
        let e = g
            .login(
                now,
                IP,
                &json!({"password": "s3cret"}),
                "c".into(),
                "x".into(),
            )
            .unwrap_err();
        assert_eq!(e.status, 429);
        let p = Presented {
            cookie: Some("c"),
            ..Default::default()
        };
        assert_eq!(g.admit(now, p, false).unwrap_err().status, 401);
    }

    #[test]
    fn the_token_works_as_bearer_and_at_the_login() {
        let (mut g, now) = gate();
        let p = Presented {
            bearer: Some("tok-123"),
            ..Default::default()
        };
        assert!(g.admit(now, p, true).is_ok());
        let p = Presented {
            bearer: Some("tok-124"),
            ..Default::default()
        };
        assert_eq!(g.admit(now, p, false).unwrap_err().status, 401);
        assert!(g
            .login(
                now,
                IP,
                &json!({"password": "tok-123"}),
                "c".into(),
                "x".into()
            )
            .is_ok());
        assert!(g
            .login(
                now,
                IP,
                &json!({"token": "tok-123"}),
                "d".into(),
                "y".into()
            )
            .is_ok());
    }
}
