//! The command language (ThingsBoard's LwM2M RPC): parse, check against
//! the models, build the CoAP request, and turn the answer into JSON.
//!
//! Everything here is pure: the server owns exchanges and timing.

pub use super::answer::{result_name, Answer};
use super::registry::Registration;
pub use super::schema::DeviceSchema;
use crate::coap::{opt, Code, Message, MsgType, Token};
use crate::lwm2m::format::{self, ContentFormat};
use crate::lwm2m::model::{camel_case_key, ObjectModel, ResourceType, Version};
use crate::lwm2m::node::{within, Node, Schema};
use crate::lwm2m::Resource;
use crate::lwm2m::{link, ModelLibrary, Path};
use crate::profile::Resolved;
use serde_json::{json, Map, Value as Json};
use std::sync::Arc;

/// The methods of the command language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Read a node.
    Read,
    /// Discover attributes and resources.
    Discover,
    /// Write, partial update.
    WriteUpdate,
    /// Write, replace.
    WriteReplace,
    /// Write-Attributes.
    WriteAttributes,
    /// Read-Composite.
    ReadComposite,
    /// Write-Composite.
    WriteComposite,
    /// Execute.
    Execute,
    /// Create an object instance.
    Create,
    /// Delete an object instance.
    Delete,
    /// Start an observation.
    Observe,
    /// Cancel one observation.
    ObserveCancel,
    /// Cancel every observation of the device.
    ObserveCancelAll,
    /// List the device's observations.
    ObserveReadAll,
    /// Observe several paths as one (FETCH with Observe).
    ObserveComposite,
    /// Cancel a composite observation.
    ObserveCompositeCancel,
    /// What the device registered, without asking it.
    DiscoverAll,
}

impl Method {
    /// Every method, for help texts.
    pub const ALL: [Method; 17] = [
        Method::Read,
        Method::Discover,
        Method::WriteUpdate,
        Method::WriteReplace,
        Method::WriteAttributes,
        Method::ReadComposite,
        Method::WriteComposite,
        Method::Execute,
        Method::Create,
        Method::Delete,
        Method::Observe,
        Method::ObserveCancel,
        Method::ObserveCancelAll,
        Method::ObserveReadAll,
        Method::DiscoverAll,
        Method::ObserveComposite,
        Method::ObserveCompositeCancel,
    ];

    /// The method's name as written in commands.
    pub fn name(self) -> &'static str {
        match self {
            Method::Read => "Read",
            Method::Discover => "Discover",
            Method::WriteUpdate => "WriteUpdate",
            Method::WriteReplace => "WriteReplace",
            Method::WriteAttributes => "WriteAttributes",
            Method::ReadComposite => "ReadComposite",
            Method::WriteComposite => "WriteComposite",
            Method::Execute => "Execute",
            Method::Create => "Create",
            Method::Delete => "Delete",
            Method::Observe => "Observe",
            Method::ObserveCancel => "ObserveCancel",
            Method::ObserveCancelAll => "ObserveCancelAll",
            Method::ObserveReadAll => "ObserveReadAll",
            Method::ObserveComposite => "ObserveComposite",
            Method::ObserveCompositeCancel => "ObserveCompositeCancel",
            Method::DiscoverAll => "DiscoverAll",
        }
    }

    /// Parses a method name, ignoring case.
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// What the answer to a request means.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// A node at this path.
    Node(Path),
    /// A link-format Discover answer.
    Discover,
    /// Values for these paths (Read-Composite).
    Composite(Vec<Path>),
    /// Only the code matters.
    Status,
    /// The first value of an observation at this path.
    Observe(Path),
    /// The first values of a composite observation.
    ObserveComposite(Vec<Path>),
    /// One block of a package: the code, and the device's Block1 option
    /// (`{"block1": [num, more, szx]}`), which may ask for smaller blocks.
    Block,
}

/// A command turned into a request for the device.
#[derive(Debug)]
pub struct Plan {
    /// CON request without token and message id.
    pub msg: Message,
    /// How to read the answer.
    pub expect: Expect,
}

/// What a parsed command needs from the server.
#[derive(Debug)]
pub enum Action {
    /// Send a request to the device.
    Send(Plan),
    /// Answer at once (DiscoverAll).
    Answer(Answer),
    /// Cancel the observation at this path.
    ObserveCancel(Path),
    /// Cancel the composite observation of these paths.
    ObserveCompositeCancel(Vec<Path>),
    /// Cancel every observation.
    ObserveCancelAll,
    /// List observations.
    ObserveReadAll,
}

/// Turns a command into an action for this device, or refuses it.
pub fn plan(
    reg: &Registration,
    lib: &ModelLibrary,
    profile: Option<&Resolved>,
    method: Method,
    params: &Json,
) -> Result<Action, String> {
    let p = Params {
        reg,
        lib,
        schema: DeviceSchema::new(lib, reg),
        profile,
        params,
    };
    let cf = p.format()?;
    let get = |path: &Path, accept: ContentFormat| {
        let mut m = p.request(Code::GET, path);
        m.set_uint_option(opt::ACCEPT, accept.code() as u64);
        m
    };
    match method {
        Method::Read => {
            let path = p.target()?;
            p.check_readable(&path)?;
            let accept = p.accept_for(&path, cf);
            send(get(&path, accept), Expect::Node(path))
        }
        Method::Observe => {
            let path = p.target()?;
            p.check_readable(&path)?;
            let accept = p.accept_for(&path, cf);
            let mut msg = get(&path, accept);
            msg.set_uint_option(opt::OBSERVE, 0);
            send(msg, Expect::Observe(path))
        }
        Method::Discover => {
            let path = p.target()?;
            if path.resource_instance.is_some() {
                return Err("Discover goes to an object, an instance or a resource".into());
            }
            send(get(&path, ContentFormat::Link), Expect::Discover)
        }
        Method::WriteUpdate | Method::WriteReplace => {
            let path = p.target()?;
            if path.instance.is_none() {
                return Err("Write goes to an instance, a resource or a resource instance".into());
            }
            let value = p.params.get("value").ok_or("Write needs a \"value\"")?;
            let node = Node::from_json(&path, value, &p.schema).map_err(|e| e.to_string())?;
            for (q, _) in node.entries(&path) {
                p.check_writable(&q)?;
            }
            let single = matches!(
                node,
                Node::ResourceInstance(_) | Node::Resource(Resource::Single(_))
            );
            let cf = if cf.is_structured() || single {
                cf
            } else {
                ContentFormat::Tlv
            };
            // Partial update (POST) is defined for instances and multiple
            // resources; a single value is always replaced.
            let code = if method == Method::WriteUpdate && !single {
                Code::POST
            } else {
                Code::PUT
            };
            let mut m = p.request(code, &path);
            m.set_uint_option(opt::CONTENT_FORMAT, cf.code() as u64);
            m.payload = format::encode(cf, &path, &node).map_err(|e| e.to_string())?;
            send(m, Expect::Status)
        }
        Method::WriteAttributes => {
            let path = p.target()?;
            let query = p.attributes(&path)?;
            let mut m = p.request(Code::PUT, &path);
            for q in query {
                m.add_option(opt::URI_QUERY, q.into_bytes());
            }
            send(m, Expect::Status)
        }
        Method::Execute => {
            let path = p.target()?;
            if path.resource.is_none() || path.resource_instance.is_some() {
                return Err("Execute goes to a resource".into());
            }
            if let Some(r) = p.resource_model(&path) {
                if !r.operations.execute {
                    return Err(format!("{path} ({}) is not executable", r.name));
                }
            }
            let mut m = p.request(Code::POST, &path);
            let args = p.params.get("args").or_else(|| p.params.get("value"));
            match args {
                None | Some(Json::Null) => {}
                Some(Json::String(s)) => {
                    check_execute_args(s)?;
                    m.set_uint_option(opt::CONTENT_FORMAT, 0);
                    m.payload = s.clone().into_bytes();
                }
                Some(other) => {
                    return Err(format!("Execute arguments must be a string, not {other}"))
                }
            }
            send(m, Expect::Status)
        }
        Method::Create => {
            let path = p.target()?;
            if path.resource.is_some() {
                return Err("Create goes to an object (/19) or a new instance (/19/1)".into());
            }
            let value = p
                .params
                .get("value")
                .ok_or("Create needs a \"value\" with the new instance's resources")?;
            let object = Path::object(path.object);
            let node = match path.instance {
                Some(i) => {
                    let inst = match Node::from_json(&path, value, &p.schema)
                        .map_err(|e| e.to_string())?
                    {
                        Node::Instance(inst) => inst,
                        _ => return Err("Create needs an instance".into()),
                    };
                    Node::Object([(i, inst)].into_iter().collect())
                }
                None => Node::from_json(&object, value, &p.schema).map_err(|e| e.to_string())?,
            };
            if let Node::Object(o) = &node {
                if o.len() != 1 {
                    return Err("Create makes exactly one instance".into());
                }
            }
            let cf = if cf.is_structured() {
                cf
            } else {
                ContentFormat::Tlv
            };
            let payload = format::encode(cf, &object, &node).map_err(|e| e.to_string())?;
            let mut m = p.request(Code::POST, &object);
            m.set_uint_option(opt::CONTENT_FORMAT, cf.code() as u64);
            m.payload = payload;
            send(m, Expect::Status)
        }
        Method::Delete => {
            let path = p.target()?;
            if path.instance.is_none() || path.resource.is_some() {
                return Err("Delete goes to an object instance (/19/1)".into());
            }
            if path.object == 3 {
                return Err("the Device object instance cannot be deleted".into());
            }
            send(p.request(Code::DELETE, &path), Expect::Status)
        }
        Method::ReadComposite | Method::ObserveComposite => {
            let paths = p.composite_targets()?;
            for q in &paths {
                p.check_readable(q)?;
            }
            let ccf = p.composite_format(cf);
            let mut m = p.root_request(Code::FETCH);
            m.set_uint_option(opt::CONTENT_FORMAT, ccf.code() as u64);
            m.set_uint_option(opt::ACCEPT, ccf.code() as u64);
            m.payload = format::encode_paths(ccf, &paths).map_err(|e| e.to_string())?;
            if method == Method::ObserveComposite {
                m.set_uint_option(opt::OBSERVE, 0);
                return send(m, Expect::ObserveComposite(paths));
            }
            send(m, Expect::Composite(paths))
        }
        Method::ObserveCompositeCancel => Ok(Action::ObserveCompositeCancel(p.targets()?)),
        Method::WriteComposite => {
            let nodes = p
                .params
                .get("nodes")
                .and_then(Json::as_object)
                .ok_or("WriteComposite needs \"nodes\": {\"<id or key>\": value}")?;
            if nodes.is_empty() {
                return Err("WriteComposite needs at least one node".into());
            }
            let mut entries = Vec::new();
            for (k, v) in nodes {
                let path = p.resolve(k)?;
                if path.resource.is_none() {
                    return Err(format!("WriteComposite writes resources; {k} is not one"));
                }
                let node = Node::from_json(&path, v, &p.schema).map_err(|e| format!("{k}: {e}"))?;
                for (q, val) in node.entries(&path) {
                    p.check_writable(&q)?;
                    entries.push((q, val));
                }
            }
            // Numeric path order on the wire, whatever order the caller wrote.
            entries.sort_by_key(|(q, _)| *q);
            let ccf = p.composite_format(cf);
            let mut m = p.root_request(Code::IPATCH);
            m.set_uint_option(opt::CONTENT_FORMAT, ccf.code() as u64);
            m.payload = format::encode_entries(ccf, &entries).map_err(|e| e.to_string())?;
            send(m, Expect::Status)
        }
        Method::ObserveCancel => Ok(Action::ObserveCancel(p.target()?)),
        Method::ObserveCancelAll => Ok(Action::ObserveCancelAll),
        Method::ObserveReadAll => Ok(Action::ObserveReadAll),
        Method::DiscoverAll => Ok(Action::Answer(Answer::ok(
            "CONTENT",
            Some(discover_all(reg)),
        ))),
    }
}

fn send(msg: Message, expect: Expect) -> Result<Action, String> {
    Ok(Action::Send(Plan { msg, expect }))
}

/// The registration's object links as `[{"url": .., "attributes": {..}}]`.
pub fn discover_all(reg: &Registration) -> Json {
    let mut out = Vec::with_capacity(reg.objects.len() + 1);
    let mut root = Map::new();
    if !reg.content_formats.is_empty() {
        let cts: Vec<String> = reg.content_formats.iter().map(u16::to_string).collect();
        root.insert("ct".into(), Json::from(cts.join(" ")));
    }
    root.insert("rt".into(), Json::from("oma.lwm2m"));
    out.push(json!({"url": "/", "attributes": root}));
    for o in &reg.objects {
        let url = match o.instance {
            Some(i) => format!("/{}/{i}", o.object),
            None => format!("/{}", o.object),
        };
        let mut attrs = Map::new();
        if let Some(v) = o.version {
            attrs.insert("ver".into(), Json::from(v.to_string()));
        }
        out.push(json!({"url": url, "attributes": attrs}));
    }
    Json::Array(out)
}

/// A Discover answer as `[{"url": .., "attributes": {..}}]`.
pub fn discover_json(payload: &[u8]) -> Result<Json, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "Discover answer is not UTF-8")?;
    let links = link::parse(text).map_err(|e| e.to_string())?;
    Ok(Json::Array(
        links
            .into_iter()
            .map(|l| {
                let attrs: Map<String, Json> = l
                    .attrs
                    .into_iter()
                    .map(|(k, v)| (k, v.map(Json::from).unwrap_or(Json::Null)))
                    .collect();
                json!({"url": l.target, "attributes": attrs})
            })
            .collect(),
    ))
}

/// Arguments are `digit` or `digit='text'`, comma separated (LwM2M 1.1 5.4.5).
fn check_execute_args(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    let bad = || format!("Execute arguments {s:?} must look like 0='text',1");
    let mut rest = s;
    loop {
        let mut chars = rest.chars();
        match chars.next() {
            Some(c) if c.is_ascii_digit() => {}
            _ => return Err(bad()),
        }
        rest = chars.as_str();
        if let Some(r) = rest.strip_prefix("='") {
            let end = r.find('\'').ok_or_else(bad)?;
            rest = &r[end + 1..];
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => return Ok(()),
            None => return Err(bad()),
        }
    }
}

struct Params<'a> {
    reg: &'a Registration,
    lib: &'a ModelLibrary,
    schema: DeviceSchema<'a>,
    profile: Option<&'a Resolved>,
    params: &'a Json,
}

impl Params<'_> {
    /// The content format: the command's `format`, else the profile's,
    /// else the device's choice.
    fn format(&self) -> Result<ContentFormat, String> {
        match self.params.get("format") {
            Some(Json::String(s)) => {
                ContentFormat::from_name(s).ok_or_else(|| format!("unknown content format {s:?}"))
            }
            Some(Json::Number(n)) => n
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .and_then(ContentFormat::from_code)
                .ok_or_else(|| format!("unknown content format {n}")),
            Some(other) => Err(format!("format must be a name or number, not {other}")),
            None => Ok(self
                .profile
                .and_then(|p| p.profile.content_format())
                .unwrap_or_else(|| device_format(self.reg))),
        }
    }

    /// Single resources may be asked for in the structured format too;
    /// a text/plain device format is only used for single values.
    fn accept_for(&self, path: &Path, cf: ContentFormat) -> ContentFormat {
        let single = path.resource_instance.is_some()
            || (path.resource.is_some()
                && self
                    .schema
                    .resource(path.object, path.resource.unwrap_or(0))
                    .is_some_and(|(_, m)| !m));
        if cf.is_structured() || single {
            cf
        } else {
            ContentFormat::Tlv
        }
    }

    fn composite_format(&self, cf: ContentFormat) -> ContentFormat {
        if cf.is_composite() {
            return cf;
        }
        self.reg
            .content_formats
            .iter()
            .filter_map(|c| ContentFormat::from_code(*c))
            .find(|c| c.is_composite())
            .unwrap_or(ContentFormat::SenmlCbor)
    }

    /// A request to the device's root path (composite operations).
    fn root_request(&self, code: Code) -> Message {
        let mut m = Message::new(MsgType::Con, code, 0, Token::EMPTY);
        for seg in self.reg.root_path().split('/').filter(|s| !s.is_empty()) {
            m.add_option(opt::URI_PATH, seg.as_bytes().to_vec());
        }
        m
    }

    /// A request to `path` under the device's root path.
    fn request(&self, code: Code, path: &Path) -> Message {
        let mut m = self.root_request(code);
        for x in [
            Some(path.object),
            path.instance,
            path.resource,
            path.resource_instance,
        ]
        .into_iter()
        .flatten()
        {
            m.add_option(opt::URI_PATH, x.to_string().into_bytes());
        }
        m
    }

    fn target(&self) -> Result<Path, String> {
        match (self.params.get("id"), self.params.get("key")) {
            (Some(Json::String(id)), _) => self.resolve_id(id),
            (None, Some(Json::String(k))) => self.resolve_key(k),
            (Some(other), _) => Err(format!("\"id\" must be a string path, not {other}")),
            (None, Some(other)) => Err(format!("\"key\" must be a string, not {other}")),
            (None, None) => Err("the command needs an \"id\" (path) or a \"key\"".into()),
        }
    }

    /// The `ids` (or `keys`) list of a composite command, not empty.
    fn target_list(&self) -> Result<&Vec<Json>, String> {
        let list = self
            .params
            .get("ids")
            .or_else(|| self.params.get("keys"))
            .and_then(Json::as_array)
            .ok_or("a composite command needs \"ids\" or \"keys\": a list")?;
        if list.is_empty() {
            return Err("a composite command needs at least one path".into());
        }
        Ok(list)
    }

    fn targets(&self) -> Result<Vec<Path>, String> {
        self.target_list()?
            .iter()
            .map(|x| match x {
                Json::String(s) => self.resolve(s),
                other => Err(format!("{other} is not a path or key")),
            })
            .collect()
    }

    /// The paths of a Read- or Observe-Composite. A client answers such a
    /// request with the values it has (OMA interoperability test
    /// LightweightM2M-1.1-int-236 asks for objects the client lacks), so a
    /// path of an object the device did not register still goes out, as
    /// long as one path names an object it did register.
    fn composite_targets(&self) -> Result<Vec<Path>, String> {
        let list = self.target_list()?;
        let (mut paths, mut registered, mut refusal) = (Vec::new(), false, None);
        for x in list {
            let Json::String(s) = x else {
                return Err(format!("{x} is not a path or key"));
            };
            match self.resolve(s) {
                Ok(path) => {
                    registered = true;
                    paths.push(path);
                }
                Err(e) => match self.unregistered(s) {
                    Some(path) => {
                        refusal.get_or_insert(e);
                        paths.push(path);
                    }
                    None => return Err(e),
                },
            }
        }
        match refusal {
            Some(e) if !registered => Err(e),
            _ => Ok(paths),
        }
    }

    /// A well-formed path (or a profile key's path) whose only fault is an
    /// object the device did not register.
    fn unregistered(&self, s: &str) -> Option<Path> {
        let path = if s.starts_with('/') || s.starts_with(|c: char| c.is_ascii_digit()) {
            Path::parse_versioned(s).ok()?.0
        } else {
            self.profile.and_then(|p| p.path_of(s))?
        };
        if self.reg.objects.iter().any(|o| o.object == path.object) {
            return None;
        }
        // Where a model exists the path must still fit it.
        if let (Some(r), Some(model)) = (path.resource, self.lib.get(path.object, None)) {
            model.resource(r)?;
        }
        Some(path)
    }

    /// A path if it looks like one, else a key.
    fn resolve(&self, s: &str) -> Result<Path, String> {
        if s.starts_with('/') || s.starts_with(|c: char| c.is_ascii_digit()) {
            self.resolve_id(s)
        } else {
            self.resolve_key(s)
        }
    }

    fn resolve_id(&self, s: &str) -> Result<Path, String> {
        let (path, version) = Path::parse_versioned(s).map_err(|e| e.to_string())?;
        if !self.reg.objects.iter().any(|o| o.object == path.object) {
            return Err(format!(
                "the device did not register object {} ({s})",
                path.object
            ));
        }
        if let Some(v) = version {
            // An object announced without `ver` is version 1.0.
            let announced = self
                .reg
                .object_version(path.object)
                .unwrap_or(Version::new(1, 0));
            if v != announced {
                return Err(format!(
                    "{s} names object {} version {v}; the device registered version {announced}",
                    path.object
                ));
            }
            if self.lib.get_compatible(path.object, v).is_none() {
                return Err(format!("no model for object {} version {v}", path.object));
            }
        }
        if let (Some(r), Some(model)) = (path.resource, self.model_for(path.object, version)) {
            match model.resource(r) {
                None => {
                    return Err(format!(
                        "object {} ({}) has no resource {r}",
                        path.object, model.name
                    ))
                }
                Some(rm) if path.resource_instance.is_some() && !rm.multiple => {
                    return Err(format!("{path}: {} is a single-instance resource", rm.name))
                }
                _ => {}
            }
        }
        Ok(path)
    }

    fn model_for(&self, object: u16, version: Option<Version>) -> Option<&Arc<ObjectModel>> {
        match version {
            Some(v) => self.lib.get_compatible(object, v),
            None => self.schema.model(object),
        }
    }

    fn resolve_key(&self, key: &str) -> Result<Path, String> {
        if let Some(path) = self.profile.and_then(|p| p.path_of(key)) {
            if !self.reg.objects.iter().any(|o| o.object == path.object) {
                return Err(format!(
                    "key {key:?} is {path} in the profile, and the device did not register object {}",
                    path.object
                ));
            }
            return Ok(path);
        }
        let mut seen = Vec::new();
        for o in &self.reg.objects {
            if seen.contains(&o.object) {
                continue;
            }
            seen.push(o.object);
            let Some(model) = self.schema.model(o.object) else {
                continue;
            };
            if let Some(r) = model
                .resources
                .iter()
                .find(|r| camel_case_key(&r.name).eq_ignore_ascii_case(key))
            {
                let instance = self
                    .reg
                    .objects
                    .iter()
                    .find(|x| x.object == o.object && x.instance.is_some())
                    .and_then(|x| x.instance)
                    .unwrap_or(0);
                return Ok(Path {
                    object: o.object,
                    instance: Some(instance),
                    resource: Some(r.id),
                    resource_instance: None,
                });
            }
        }
        Err(format!(
            "unknown key {key:?}: no resource of the device's objects has that name"
        ))
    }

    fn resource_model(&self, path: &Path) -> Option<&crate::lwm2m::ResourceModel> {
        self.schema.model(path.object)?.resource(path.resource?)
    }

    fn check_readable(&self, path: &Path) -> Result<(), String> {
        if let Some(r) = self.resource_model(path) {
            if !r.operations.read {
                return Err(format!("{path} ({}) is not readable", r.name));
            }
        }
        Ok(())
    }

    fn check_writable(&self, path: &Path) -> Result<(), String> {
        match self.resource_model(path) {
            Some(r) if !r.operations.write => Err(format!("{path} ({}) is read-only", r.name)),
            Some(_) => Ok(()),
            None => Err(format!(
                "{path} is not in the object model; cannot type the value"
            )),
        }
    }

    /// Write-Attributes query strings, checked.
    fn attributes(&self, path: &Path) -> Result<Vec<String>, String> {
        let attrs = self
            .params
            .get("attributes")
            .and_then(Json::as_object)
            .ok_or("WriteAttributes needs \"attributes\": {\"pmin\": 10, ...}")?;
        if attrs.is_empty() {
            return Err("WriteAttributes needs at least one attribute".into());
        }
        let numeric = self.resource_model(path).map(|r| {
            matches!(
                r.rtype,
                ResourceType::Integer | ResourceType::UnsignedInteger | ResourceType::Float
            )
        });
        let mut out = Vec::new();
        // In name order, so the query is the same whatever order the
        // caller (or the profile) wrote the attributes in.
        let mut sorted: Vec<_> = attrs.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in sorted {
            let q = match (k.as_str(), v) {
                (_, Json::Null) => k.clone(),
                ("pmin" | "pmax" | "epmin" | "epmax" | "hqmax", v) => match v.as_u64() {
                    Some(n) => format!("{k}={n}"),
                    None => return Err(format!("{k} must be a whole number of seconds, not {v}")),
                },
                ("gt" | "lt" | "st", v) => {
                    if path.resource.is_none() {
                        return Err(format!("{k} applies to a resource, not {path}"));
                    }
                    if numeric == Some(false) {
                        return Err(format!("{k} applies to numeric resources only"));
                    }
                    match v.as_f64() {
                        Some(f) if k != "st" || f > 0.0 => format!("{k}={}", v),
                        _ => return Err(format!("{k} must be a number (st above 0), not {v}")),
                    }
                }
                ("edge" | "con", v) => match v.as_u64() {
                    Some(n @ (0 | 1)) => format!("{k}={n}"),
                    _ => return Err(format!("{k} must be 0 or 1, not {v}")),
                },
                _ => return Err(format!("unknown attribute {k:?}")),
            };
            out.push(q);
        }
        if let (Some(a), Some(b)) = (
            attrs.get("pmin").and_then(Json::as_u64),
            attrs.get("pmax").and_then(Json::as_u64),
        ) {
            if a > b {
                return Err(format!("pmin {a} is greater than pmax {b}"));
            }
        }
        if let (Some(lt), Some(gt)) = (
            attrs.get("lt").and_then(Json::as_f64),
            attrs.get("gt").and_then(Json::as_f64),
        ) {
            if lt >= gt {
                return Err(format!("lt {lt} must be below gt {gt}"));
            }
        }
        Ok(out)
    }
}

/// The format to use with a device: the first it announced that we
/// implement (`ct` in its registration), else TLV for LwM2M 1.0 and 1.1
/// and SenML CBOR from 1.2, which every 1.2 client must support.
pub fn device_format(reg: &Registration) -> ContentFormat {
    reg.content_formats
        .iter()
        .filter_map(|c| ContentFormat::from_code(*c))
        .find(|c| c.is_structured())
        .unwrap_or(if reg.lwm2m_version >= Version::new(1, 2) {
            ContentFormat::SenmlCbor
        } else {
            ContentFormat::Tlv
        })
}

/// Turns a device's answer into the command's answer.
pub fn answer(expect: &Expect, resp: &Message, schema: &dyn Schema) -> Answer {
    let result = result_name(resp.code);
    if !resp.code.is_success() {
        let diag = String::from_utf8_lossy(&resp.payload).into_owned();
        let mut a = Answer::fail(
            result,
            if diag.is_empty() {
                format!("device answered {}", resp.code)
            } else {
                diag
            },
        );
        // A 4.13 to a block may name the size the device takes.
        if let (Expect::Block, Some(Ok(b))) = (expect, resp.block1()) {
            a.value = Some(serde_json::json!({"block1": [b.num, b.more, b.szx]}));
        }
        return a;
    }
    let cf = resp.content_format();
    let decode_at = |path: &Path| -> Result<Json, String> {
        let cf = cf.unwrap_or(0);
        let cf = ContentFormat::from_code(cf)
            .ok_or(format!("device answered in unknown content format {cf}"))?;
        format::decode(cf, path, &resp.payload, schema)
            .map(|n| n.to_json())
            .map_err(|e| format!("device answer in {cf} did not decode: {e}"))
    };
    let value = match expect {
        Expect::Status => return Answer::ok(result, None),
        Expect::Block => {
            return Answer::ok(
                result,
                match resp.block1() {
                    Some(Ok(b)) => Some(serde_json::json!({"block1": [b.num, b.more, b.szx]})),
                    _ => None,
                },
            )
        }
        Expect::Node(p) | Expect::Observe(p) => decode_at(p),
        Expect::Discover => discover_json(&resp.payload),
        Expect::Composite(paths) | Expect::ObserveComposite(paths) => (|| {
            let cf = cf
                .and_then(ContentFormat::from_code)
                .ok_or("composite answer without a known content format")?;
            let entries =
                format::decode_entries(cf, &resp.payload, schema).map_err(|e| e.to_string())?;
            let mut out = Map::new();
            // Keys in numeric path order, whatever order they were asked in.
            let mut sorted: Vec<&Path> = paths.iter().collect();
            sorted.sort();
            for p in sorted {
                let mine: Vec<_> = entries
                    .iter()
                    .filter(|(q, _)| within(p, q))
                    .cloned()
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let node = Node::from_entries(p, mine, schema).map_err(|e| e.to_string())?;
                out.insert(p.to_string(), node.to_json());
            }
            Ok(Json::Object(out))
        })(),
    };
    match value {
        Ok(v) => Answer::ok(result, Some(v)),
        Err(e) => Answer::fail("INTERNAL_SERVER_ERROR", e),
    }
}
