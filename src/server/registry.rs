//! Registration state: Register, Update, De-register and lifetime expiry (sans-IO).

use crate::coap::Code;
use crate::lwm2m::{link, Path as LwPath, Version};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest endpoint name accepted; it ends up in logs, keys and MQTT topics.
pub const MAX_ENDPOINT_LEN: usize = 256;

/// An object or object instance the client announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLink {
    /// Object id.
    pub object: u16,
    /// Instance id, when the link names an instance.
    pub instance: Option<u16>,
    /// Object version (`ver=`), when given.
    pub version: Option<Version>,
}

/// Registration id: 10 base-36 characters on the wire (`/rd/<id>`), a u64 inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RegId(pub u64);

impl RegId {
    const LEN: usize = 10;
    const ALPHABET: &'static [u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    /// Number of distinct ids (36^10).
    pub const SPACE: u64 = 3_656_158_440_062_976;

    /// Parses the wire form; anything else is no registration.
    pub fn parse(s: &str) -> Option<RegId> {
        if s.len() != Self::LEN {
            return None;
        }
        s.bytes()
            .try_fold(0u64, |acc, c| {
                let d = Self::ALPHABET.iter().position(|a| *a == c)? as u64;
                Some(acc * 36 + d)
            })
            .map(RegId)
    }
}

impl fmt::Display for RegId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [b'0'; Self::LEN];
        let mut v = self.0;
        for b in buf.iter_mut().rev() {
            *b = Self::ALPHABET[(v % 36) as usize];
            v /= 36;
        }
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// Binding letters (`U`, `M`, `H`, `T`, `S`, `N`, `Q`) as a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Binding(u8);

impl Binding {
    const LETTERS: &'static str = "UMHTSNQ";

    /// Parses binding letters; `None` for an empty string or another letter.
    pub fn parse(s: &str) -> Option<Binding> {
        if s.is_empty() {
            return None;
        }
        s.chars()
            .try_fold(0u8, |acc, c| Some(acc | 1 << Self::LETTERS.find(c)?))
            .map(Binding)
    }

    /// True when the letter is in the set.
    pub fn has(self, letter: char) -> bool {
        Self::LETTERS
            .find(letter)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

impl Default for Binding {
    fn default() -> Self {
        Binding(1) // U
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in Self::LETTERS.chars().enumerate() {
            if self.0 & (1 << i) != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One registered client. Kept compact: a gateway holds many thousands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Registration id, the `<id>` of `/rd/<id>`.
    pub id: RegId,
    /// Endpoint client name.
    pub endpoint: String,
    /// Lifetime in seconds.
    pub lifetime: u32,
    /// LwM2M version the client speaks.
    pub lwm2m_version: Version,
    /// Binding letters.
    pub binding: Binding,
    /// Queue mode (`Q` parameter or `Q` in the binding).
    pub queue_mode: bool,
    /// MSISDN for the SMS binding.
    pub sms: Option<Box<str>>,
    /// Endpoint type (`et=`), when given.
    pub endpoint_type: Option<Box<str>>,
    /// Alternate root path set with `rt="oma.lwm2m"`; `None` is `/`.
    pub alternate_root: Option<Box<str>>,
    /// Announced objects and instances.
    pub objects: Vec<ObjectLink>,
    /// Content formats the client announced with `ct=` on the root link.
    pub content_formats: Vec<u16>,
    /// Transport address of the client.
    pub peer: SocketAddr,
    /// Wall-clock time of the Register, ms since the Unix epoch.
    pub registered_at_ms: u64,
    /// Wall-clock time of the last Register or Update.
    pub updated_at_ms: u64,
}

impl Registration {
    /// The version the device announced for `object` (`ver=` on any of
    /// its links, `</3>;ver=1.1` or `</3/0>;ver=1.1`), if it gave one.
    pub fn object_version(&self, object: u16) -> Option<Version> {
        self.objects
            .iter()
            .filter(|o| o.object == object)
            .find_map(|o| o.version)
    }

    /// The root path objects live under (`/` unless the client set another).
    pub fn root_path(&self) -> &str {
        self.alternate_root.as_deref().unwrap_or("/")
    }
}

/// Why a registration request was refused; maps to a CoAP code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegError {
    /// Missing or invalid parameter, or malformed payload: 4.00.
    BadRequest(String),
    /// Unsupported LwM2M version: 4.12.
    UnsupportedVersion(String),
    /// Refused by policy: 4.03.
    Forbidden(String),
    /// Unknown registration id: 4.04.
    NotFound,
    /// Payload not in link format: 4.15.
    UnsupportedFormat(u16),
    /// Registration table full: 5.03.
    Full,
}

impl RegError {
    /// The CoAP response code for this refusal.
    pub fn code(&self) -> Code {
        match self {
            RegError::BadRequest(_) => Code::BAD_REQUEST,
            RegError::UnsupportedVersion(_) => Code::PRECONDITION_FAILED,
            RegError::Forbidden(_) => Code::FORBIDDEN,
            RegError::NotFound => Code::NOT_FOUND,
            RegError::UnsupportedFormat(_) => Code::UNSUPPORTED_CONTENT_FORMAT,
            RegError::Full => Code::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for RegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegError::BadRequest(m) => write!(f, "bad request: {m}"),
            RegError::UnsupportedVersion(v) => write!(f, "unsupported LwM2M version {v:?}"),
            RegError::Forbidden(m) => write!(f, "forbidden: {m}"),
            RegError::NotFound => f.write_str("unknown registration"),
            RegError::UnsupportedFormat(c) => {
                write!(f, "payload content format {c} is not link format")
            }
            RegError::Full => f.write_str("registration table full"),
        }
    }
}

impl std::error::Error for RegError {}

/// Parameters of a Register or Update query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// `ep`.
    pub endpoint: Option<String>,
    /// `lt`.
    pub lifetime: Option<u32>,
    /// `lwm2m`.
    pub version: Option<Version>,
    /// `b`.
    pub binding: Option<Binding>,
    /// `sms`.
    pub sms: Option<String>,
    /// `Q` present.
    pub queue: bool,
    /// `et`.
    pub endpoint_type: Option<String>,
}

/// Parses the Uri-Query items of Register or Update.
pub fn parse_params(query: &[String]) -> Result<Params, RegError> {
    let mut p = Params::default();
    for item in query {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item.as_str(), None),
        };
        let need = |v: Option<&str>| {
            v.map(str::to_string)
                .ok_or_else(|| RegError::BadRequest(format!("{k} needs a value")))
        };
        match k {
            "ep" => {
                let ep = need(v)?;
                if ep.is_empty()
                    || ep.len() > MAX_ENDPOINT_LEN
                    || ep.chars().any(|c| c.is_control())
                {
                    return Err(RegError::BadRequest(format!(
                        "invalid endpoint name {ep:?}"
                    )));
                }
                p.endpoint = Some(ep);
            }
            "lt" => {
                let lt = need(v)?;
                match lt.parse::<u32>() {
                    Ok(n) if n > 0 => p.lifetime = Some(n),
                    _ => return Err(RegError::BadRequest(format!("invalid lifetime {lt:?}"))),
                }
            }
            "lwm2m" => {
                let s = need(v)?;
                match Version::parse(&s) {
                    Some(ver)
                        if [Version::new(1, 0), Version::new(1, 1), Version::new(1, 2)]
                            .contains(&ver) =>
                    {
                        p.version = Some(ver)
                    }
                    _ => return Err(RegError::UnsupportedVersion(s)),
                }
            }
            "b" => {
                let b = need(v)?;
                p.binding = Some(
                    Binding::parse(&b)
                        .ok_or_else(|| RegError::BadRequest(format!("invalid binding {b:?}")))?,
                );
            }
            "sms" => p.sms = Some(need(v)?),
            "Q" => p.queue = true,
            "et" => p.endpoint_type = Some(need(v)?),
            _ => {} // d= (domain), vnd= and others are not used by the gateway
        }
    }
    Ok(p)
}

/// What the object-list payload of Register or Update says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectList {
    /// Alternate root path (`None` is `/`).
    pub alternate_root: Option<Box<str>>,
    /// Announced objects and instances.
    pub objects: Vec<ObjectLink>,
    /// `ct=` of the root link.
    pub content_formats: Vec<u16>,
}

/// Parses a Register or Update payload.
pub fn parse_object_list(payload: &[u8]) -> Result<ObjectList, RegError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| RegError::BadRequest("payload is not UTF-8".into()))?;
    let links = link::parse(text).map_err(|e| RegError::BadRequest(e.to_string()))?;
    let mut out = ObjectList::default();
    if let Some(root) = links.iter().find(|l| l.attr("rt") == Some("oma.lwm2m")) {
        let t = root.target.trim_end_matches('/');
        out.alternate_root = (!t.is_empty()).then(|| t.into());
        if let Some(ct) = root.attr("ct") {
            for c in ct.split_whitespace() {
                let n = c
                    .parse::<u16>()
                    .map_err(|_| RegError::BadRequest(format!("invalid ct {ct:?}")))?;
                out.content_formats.push(n);
            }
        }
    }
    let prefix = out.alternate_root.as_deref().unwrap_or("");
    for l in &links {
        if l.attr("rt") == Some("oma.lwm2m") {
            continue;
        }
        let Some(rest) = l.target.strip_prefix(prefix) else {
            continue; // a link outside the LwM2M root is not an object
        };
        let first = rest.trim_start_matches('/').split('/').next().unwrap_or("");
        if first.is_empty() || !first.bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let path = LwPath::parse(rest).map_err(|e| RegError::BadRequest(e.to_string()))?;
        if path.depth() > 2 {
            return Err(RegError::BadRequest(format!(
                "{} is not an object or object instance",
                l.target
            )));
        }
        let version = match l.attr("ver") {
            Some(v) => Some(
                Version::parse(v)
                    .ok_or_else(|| RegError::BadRequest(format!("invalid ver {v:?}")))?,
            ),
            None => None,
        };
        out.objects.push(ObjectLink {
            object: path.object,
            instance: path.instance,
            version,
        });
    }
    out.objects.shrink_to_fit();
    out.content_formats.shrink_to_fit();
    Ok(out)
}

/// All registrations: a slab of boxed entries with small indexes by
/// endpoint, by id and by expiry (the endpoint name is stored once more,
/// as the index key; nothing else is duplicated).
pub struct Registry {
    slots: Vec<Option<Box<Entry>>>,
    free: Vec<u32>,
    by_ep: HashMap<Box<str>, u32>,
    by_id: HashMap<RegId, u32>,
    by_peer: HashMap<SocketAddr, u32>,
    expiry: BTreeSet<(Instant, u32)>,
    max: usize,
    grace: Duration,
    rng: fastrand::Rng,
}

struct Entry {
    reg: Registration,
    expires: Instant,
}

impl Registry {
    /// An empty registry holding at most `max` registrations; a client
    /// expires `grace` after its lifetime runs out.
    pub fn new(max: usize, grace: Duration, seed: u64) -> Registry {
        Registry {
            slots: Vec::new(),
            free: Vec::new(),
            by_ep: HashMap::new(),
            by_id: HashMap::new(),
            by_peer: HashMap::new(),
            expiry: BTreeSet::new(),
            max,
            grace,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Number of registrations.
    pub fn len(&self) -> usize {
        self.by_ep.len()
    }

    /// True when nobody is registered.
    pub fn is_empty(&self) -> bool {
        self.by_ep.is_empty()
    }

    fn entry(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize).and_then(|e| e.as_deref())
    }

    /// A registration by endpoint name.
    pub fn get(&self, endpoint: &str) -> Option<&Registration> {
        self.by_ep
            .get(endpoint)
            .and_then(|s| self.entry(*s))
            .map(|e| &e.reg)
    }

    /// A registration by registration id (wire form).
    pub fn get_by_id(&self, id: &str) -> Option<&Registration> {
        let id = RegId::parse(id)?;
        self.by_id
            .get(&id)
            .and_then(|s| self.entry(*s))
            .map(|e| &e.reg)
    }

    /// The registration whose device last spoke from `peer`.
    pub fn get_by_peer(&self, peer: SocketAddr) -> Option<&Registration> {
        self.by_peer
            .get(&peer)
            .and_then(|s| self.entry(*s))
            .map(|e| &e.reg)
    }

    /// Every registration, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Registration> {
        self.slots.iter().flatten().map(|e| &e.reg)
    }

    /// Register: a new registration, or one replacing the endpoint's old one
    /// (returned second).
    pub fn register(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: SocketAddr,
        params: Params,
        objects: ObjectList,
    ) -> Result<(Registration, Option<Registration>), RegError> {
        let endpoint = params
            .endpoint
            .ok_or_else(|| RegError::BadRequest("missing ep".into()))?;
        if !self.by_ep.contains_key(endpoint.as_str()) && self.by_ep.len() >= self.max {
            return Err(RegError::Full);
        }
        let binding = params.binding.unwrap_or_default();
        let reg = Registration {
            id: self.new_id(),
            lifetime: params.lifetime.unwrap_or(86_400),
            lwm2m_version: params.version.unwrap_or(Version::V1_0),
            queue_mode: params.queue || binding.has('Q'),
            binding,
            sms: params.sms.map(Into::into),
            endpoint_type: params.endpoint_type.map(Into::into),
            alternate_root: objects.alternate_root,
            objects: objects.objects,
            content_formats: objects.content_formats,
            peer,
            registered_at_ms: unix_ms,
            updated_at_ms: unix_ms,
            endpoint,
        };
        let old = self.remove(&reg.endpoint);
        let expires = now + Duration::from_secs(reg.lifetime as u64) + self.grace;
        self.insert(reg.clone(), expires);
        Ok((reg, old))
    }

    /// Update: refreshes lifetime and address, applies changed parameters
    /// and, when given, the new object list.
    pub fn update(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: SocketAddr,
        id: &str,
        params: Params,
        objects: Option<ObjectList>,
    ) -> Result<Registration, RegError> {
        let id = RegId::parse(id).ok_or(RegError::NotFound)?;
        let slot = *self.by_id.get(&id).ok_or(RegError::NotFound)?;
        let grace = self.grace;
        let Some(e) = self
            .slots
            .get_mut(slot as usize)
            .and_then(|e| e.as_deref_mut())
        else {
            return Err(RegError::NotFound);
        };
        self.expiry.remove(&(e.expires, slot));
        let reg = &mut e.reg;
        if let Some(lt) = params.lifetime {
            reg.lifetime = lt;
        }
        if let Some(b) = params.binding {
            reg.queue_mode = params.queue || b.has('Q');
            reg.binding = b;
        } else if params.queue {
            reg.queue_mode = true;
        }
        if let Some(sms) = params.sms {
            reg.sms = Some(sms.into());
        }
        if let Some(o) = objects {
            reg.alternate_root = o.alternate_root;
            reg.objects = o.objects;
            if !o.content_formats.is_empty() {
                reg.content_formats = o.content_formats;
            }
        }
        if reg.peer != peer {
            if self.by_peer.get(&reg.peer) == Some(&slot) {
                self.by_peer.remove(&reg.peer);
            }
            self.by_peer.insert(peer, slot);
        }
        reg.peer = peer;
        reg.updated_at_ms = unix_ms;
        e.expires = now + Duration::from_secs(reg.lifetime as u64) + grace;
        self.expiry.insert((e.expires, slot));
        Ok(e.reg.clone())
    }

    /// De-register by id (wire form).
    pub fn deregister(&mut self, id: &str) -> Option<Registration> {
        let slot = *self.by_id.get(&RegId::parse(id)?)?;
        let ep = self.entry(slot)?.reg.endpoint.clone();
        self.remove(&ep)
    }

    /// Puts back a registration loaded from the store. Returns false (and
    /// keeps nothing) when its lifetime ran out while the gateway was down.
    pub fn restore(&mut self, now: Instant, unix_ms: u64, reg: Registration) -> bool {
        let budget = Duration::from_secs(reg.lifetime as u64) + self.grace;
        // A wall clock behind the stored time (a board without RTC before NTP)
        // says nothing about elapsed time: give the full lifetime.
        let elapsed = Duration::from_millis(unix_ms.saturating_sub(reg.updated_at_ms));
        if elapsed >= budget || self.by_ep.len() >= self.max || self.by_id.contains_key(&reg.id) {
            return false;
        }
        self.remove(&reg.endpoint);
        self.insert(reg, now + (budget - elapsed));
        true
    }

    /// Earliest expiry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// Removes and returns every registration whose lifetime (plus grace) ran out.
    pub fn expire(&mut self, now: Instant) -> Vec<Registration> {
        let mut out = Vec::new();
        while let Some(&(t, slot)) = self.expiry.first() {
            if t > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(ep) = self.entry(slot).map(|e| e.reg.endpoint.clone()) {
                out.extend(self.remove(&ep));
            }
        }
        out
    }

    fn insert(&mut self, reg: Registration, expires: Instant) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.expiry.insert((expires, slot));
        self.by_id.insert(reg.id, slot);
        self.by_ep.insert(reg.endpoint.as_str().into(), slot);
        self.by_peer.insert(reg.peer, slot);
        self.slots[slot as usize] = Some(Box::new(Entry { reg, expires }));
    }

    fn remove(&mut self, ep: &str) -> Option<Registration> {
        let slot = self.by_ep.remove(ep)?;
        let e = self.slots.get_mut(slot as usize)?.take()?;
        self.expiry.remove(&(e.expires, slot));
        self.by_id.remove(&e.reg.id);
        if self.by_peer.get(&e.reg.peer) == Some(&slot) {
            self.by_peer.remove(&e.reg.peer);
        }
        self.free.push(slot);
        Some(e.reg)
    }

    fn new_id(&mut self) -> RegId {
        loop {
            let id = RegId(self.rng.u64(..RegId::SPACE));
            if !self.by_id.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    fn reg(r: &mut Registry, now: Instant, ep: &str, lt: &str) -> Registration {
        let p = parse_params(&q(&[&format!("ep={ep}"), &format!("lt={lt}")])).unwrap();
        r.register(
            now,
            1_000,
            peer(),
            p,
            parse_object_list(b"</1/0>,</3/0>").unwrap(),
        )
        .unwrap()
        .0
    }

    #[test]
    fn register_params_default_and_validate() {
        let p = parse_params(&q(&[
            "ep=dev1",
            "lt=300",
            "lwm2m=1.1",
            "b=U",
            "Q",
            "et=meter",
        ]))
        .unwrap();
        assert_eq!(p.endpoint.as_deref(), Some("dev1"));
        assert_eq!(
            (p.lifetime, p.version, p.queue),
            (Some(300), Some(Version::new(1, 1)), true)
        );
        assert_eq!(
            parse_params(&q(&["ep=a", "lwm2m=1.3"])),
            Err(RegError::UnsupportedVersion("1.3".into()))
        );
        assert_eq!(
            parse_params(&q(&["lwm2m=2.0"])).unwrap_err().code(),
            Code::PRECONDITION_FAILED
        );
        for bad in ["lt=0", "lt=-5", "lt=x", "ep=", "b=Z", "ep"] {
            assert_eq!(
                parse_params(&q(&[bad])).unwrap_err().code(),
                Code::BAD_REQUEST,
                "{bad}"
            );
        }
        let long = format!("ep={}", "x".repeat(MAX_ENDPOINT_LEN + 1));
        assert!(parse_params(&q(&[&long])).is_err());
    }

    #[test]
    fn an_objects_version_is_found_on_any_of_its_links_in_any_order() {
        let mut r = Registry::new(10, Duration::from_secs(1), 7);
        let p = parse_params(&q(&["ep=v"])).unwrap();
        let objects = parse_object_list(b"</3/0>,</3>;ver=1.1,</1/0>;ver=1.2,</5/0>").unwrap();
        let reg = r
            .register(Instant::now(), 1_000, peer(), p, objects)
            .unwrap()
            .0;
        assert_eq!(reg.object_version(3), Some(Version::new(1, 1)));
        assert_eq!(reg.object_version(1), Some(Version::new(1, 2)));
        assert_eq!(reg.object_version(5), None);
        assert_eq!(reg.object_version(9), None);
    }

    #[test]
    fn object_list_with_alternate_root_and_formats() {
        let o = parse_object_list(b"</lwm2m>;rt=\"oma.lwm2m\";ct=\"60 110 11543\",</lwm2m/1/0>,</lwm2m/3>;ver=1.1,</lwm2m/3/0>,</other/x>").unwrap();
        assert_eq!(o.alternate_root.as_deref(), Some("/lwm2m"));
        assert_eq!(o.content_formats, vec![60, 110, 11543]);
        assert_eq!(o.objects.len(), 3);
        assert_eq!(
            o.objects[1],
            ObjectLink {
                object: 3,
                instance: None,
                version: Some(Version::new(1, 1))
            }
        );
        assert_eq!(parse_object_list(b"").unwrap().objects, vec![]);
        for bad in [
            &b"</1/0"[..],
            b"</3/0/1>",
            b"</3/x>",
            b"</3>;ver=a",
            b"\xff",
        ] {
            assert_eq!(
                parse_object_list(bad).unwrap_err().code(),
                Code::BAD_REQUEST
            );
        }
    }

    #[test]
    fn ids_and_bindings_round_trip_their_wire_forms() {
        for v in [0, 1, 35, 36, RegId::SPACE - 1] {
            let id = RegId(v);
            assert_eq!(id.to_string().len(), 10);
            assert_eq!(RegId::parse(&id.to_string()), Some(id));
        }
        assert_eq!(RegId(35).to_string(), "000000000z");
        for bad in ["", "00000000000", "000000000A", "00000000-0"] {
            assert!(RegId::parse(bad).is_none(), "{bad}");
        }
        let b = Binding::parse("UQ").unwrap();
        assert!(b.has('U') && b.has('Q') && !b.has('S'));
        assert_eq!(b.to_string(), "UQ");
        assert_eq!(Binding::default().to_string(), "U");
        assert!(Binding::parse("").is_none() && Binding::parse("UX").is_none());
    }

    #[test]
    fn slots_are_reused_and_indexes_stay_consistent() {
        let mut r = Registry::new(100, Duration::ZERO, 3);
        let t = Instant::now();
        for round in 0..3 {
            let regs: Vec<Registration> = (0..50)
                .map(|i| reg(&mut r, t, &format!("e{i}"), "10"))
                .collect();
            for g in regs.iter().step_by(2) {
                r.deregister(&g.id.to_string()).unwrap();
            }
            assert_eq!(r.len(), 25, "round {round}");
            for g in regs.iter().skip(1).step_by(2) {
                assert_eq!(r.get_by_id(&g.id.to_string()).unwrap().endpoint, g.endpoint);
            }
        }
        assert!(r.slots.len() <= 75);
        assert_eq!(r.expire(t + Duration::from_secs(11)).len(), 25);
        assert!(r.is_empty() && r.expiry.is_empty() && r.by_id.is_empty());
    }

    #[test]
    fn register_without_endpoint_is_refused() {
        let mut r = Registry::new(10, Duration::ZERO, 1);
        let e = r
            .register(
                Instant::now(),
                0,
                peer(),
                Params::default(),
                ObjectList::default(),
            )
            .unwrap_err();
        assert_eq!(e.code(), Code::BAD_REQUEST);
    }

    #[test]
    fn reregistration_replaces_the_old_one_with_a_new_id() {
        let mut r = Registry::new(10, Duration::ZERO, 1);
        let t = Instant::now();
        let a = reg(&mut r, t, "dev", "60");
        let p = parse_params(&q(&["ep=dev"])).unwrap();
        let (b, old) = r
            .register(t, 2_000, peer(), p, ObjectList::default())
            .unwrap();
        assert_eq!(old.unwrap().id, a.id);
        assert_ne!(a.id, b.id);
        assert!(r.get_by_id(&a.id.to_string()).is_none());
        assert_eq!(r.len(), 1);
        assert_eq!(r.get("dev").unwrap().lifetime, 86_400);
    }

    #[test]
    fn update_refreshes_lifetime_and_changes_parameters() {
        let mut r = Registry::new(10, Duration::from_secs(5), 1);
        let t = Instant::now();
        let a = reg(&mut r, t, "dev", "60");
        assert_eq!(r.next_expiry(), Some(t + Duration::from_secs(65)));
        let t2 = t + Duration::from_secs(50);
        let p = parse_params(&q(&["lt=120", "b=UQ"])).unwrap();
        let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let u = r
            .update(
                t2,
                9_000,
                other,
                &a.id.to_string(),
                p,
                Some(parse_object_list(b"</3/0>,</3303/0>").unwrap()),
            )
            .unwrap();
        assert_eq!(
            (u.lifetime, u.queue_mode, u.peer, u.updated_at_ms),
            (120, true, other, 9_000)
        );
        assert_eq!(u.objects.len(), 2);
        assert_eq!(r.next_expiry(), Some(t2 + Duration::from_secs(125)));
        assert_eq!(
            r.update(t2, 0, peer(), "nope", Params::default(), None),
            Err(RegError::NotFound)
        );
    }

    #[test]
    fn expiry_removes_after_lifetime_plus_grace_only() {
        let mut r = Registry::new(10, Duration::from_secs(5), 1);
        let t = Instant::now();
        reg(&mut r, t, "a", "10");
        reg(&mut r, t, "b", "100");
        assert!(r.expire(t + Duration::from_secs(14)).is_empty());
        let gone = r.expire(t + Duration::from_secs(15));
        assert_eq!(
            gone.iter().map(|g| g.endpoint.as_str()).collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn deregister_removes_by_id() {
        let mut r = Registry::new(10, Duration::ZERO, 1);
        let a = reg(&mut r, Instant::now(), "a", "10");
        assert_eq!(r.deregister(&a.id.to_string()).unwrap().endpoint, "a");
        assert!(r.deregister(&a.id.to_string()).is_none());
        assert!(r.is_empty() && r.next_expiry().is_none());
    }

    #[test]
    fn table_is_bounded_but_known_endpoints_may_reregister() {
        let mut r = Registry::new(2, Duration::ZERO, 1);
        let t = Instant::now();
        reg(&mut r, t, "a", "10");
        reg(&mut r, t, "b", "10");
        let p = parse_params(&q(&["ep=c"])).unwrap();
        assert_eq!(
            r.register(t, 0, peer(), p, ObjectList::default())
                .unwrap_err(),
            RegError::Full
        );
        reg(&mut r, t, "a", "20");
    }

    #[test]
    fn restore_keeps_remaining_lifetime_and_drops_stale_ones() {
        let mut r = Registry::new(10, Duration::from_secs(5), 1);
        let t = Instant::now();
        let mut a = reg(&mut r, t, "a", "100");
        a.updated_at_ms = 1_000_000;
        let mut fresh = Registry::new(10, Duration::from_secs(5), 2);
        assert!(fresh.restore(t, 1_000_000 + 40_000, a.clone()));
        assert_eq!(fresh.next_expiry(), Some(t + Duration::from_secs(65)));
        assert_eq!(fresh.get_by_id(&a.id.to_string()).unwrap().endpoint, "a");
        let mut stale = Registry::new(10, Duration::from_secs(5), 2);
        assert!(!stale.restore(t, 1_000_000 + 106_000, a.clone()));
        // Clock behind the stored time: full lifetime.
        let mut back = Registry::new(10, Duration::from_secs(5), 2);
        assert!(back.restore(t, 5, a));
        assert_eq!(back.next_expiry(), Some(t + Duration::from_secs(105)));
    }
}
