//! The simulated device's answers to device-management operations: read,
//! discover, write, write-attributes, create, delete, execute and the
//! composite ones, each checked against the object models as a real
//! client would.

use super::{refuse, Refusal, SimDevice, MAX_EXECUTED};
use crate::coap::{opt, Code, Message, MsgType, Token};
use crate::lwm2m::format::{self, ContentFormat};
use crate::lwm2m::node::{Instance, Node, Resource};
use crate::lwm2m::{Operations, Path};
use std::collections::BTreeMap;
use std::time::Instant;

impl SimDevice {
    pub(super) fn operations(&self, object: u16, r: u16) -> Operations {
        self.models
            .resource(object, r)
            .map(|m| m.operations)
            .unwrap_or_default()
    }

    pub(super) fn is_executable(&self, p: &Path) -> bool {
        p.resource
            .is_some_and(|r| self.operations(p.object, r).execute)
    }

    pub(super) fn readable(&self, object: u16, r: u16) -> bool {
        self.operations(object, r).read
    }

    pub(super) fn writable(&self, object: u16, r: u16) -> bool {
        self.operations(object, r).write
    }

    /// The node at `path`; with `only_readable`, leaves out write-only
    /// resources and refuses to read one directly.
    pub(super) fn node(&self, path: &Path, only_readable: bool) -> Result<Node, Refusal> {
        let not_found = || (Code::NOT_FOUND, format!("{path} does not exist"));
        let insts = self.objects.get(&path.object).ok_or_else(not_found)?;
        let filter = |o: u16, inst: &Instance| -> Instance {
            inst.iter()
                .filter(|(r, _)| !only_readable || self.readable(o, **r))
                .map(|(r, v)| (*r, v.clone()))
                .collect()
        };
        let Some(i) = path.instance else {
            return Ok(Node::Object(
                insts
                    .iter()
                    .map(|(i, inst)| (*i, filter(path.object, inst)))
                    .collect(),
            ));
        };
        let inst = insts.get(&i).ok_or_else(not_found)?;
        let Some(r) = path.resource else {
            return Ok(Node::Instance(filter(path.object, inst)));
        };
        if only_readable && !self.readable(path.object, r) && inst.contains_key(&r) {
            return refuse(Code::METHOD_NOT_ALLOWED, format!("{path} is not readable"));
        }
        let res = inst.get(&r).ok_or_else(not_found)?;
        match (path.resource_instance, res) {
            (None, res) => Ok(Node::Resource(res.clone())),
            (Some(ri), Resource::Multiple(m)) => m
                .get(&ri)
                .cloned()
                .map(Node::ResourceInstance)
                .ok_or_else(not_found),
            (Some(_), Resource::Single(_)) => Err(not_found()),
        }
    }

    pub(super) fn pick_format(
        &self,
        accept: Option<u16>,
        node: &Node,
    ) -> Result<ContentFormat, Refusal> {
        let cf = match accept {
            Some(c) => ContentFormat::from_code(c).ok_or((
                Code::NOT_ACCEPTABLE,
                format!("content format {c} not supported"),
            ))?,
            None => self.cfg.format,
        };
        let single = matches!(
            node,
            Node::ResourceInstance(_) | Node::Resource(Resource::Single(_))
        );
        if !cf.is_structured() && !single {
            return refuse(Code::NOT_ACCEPTABLE, format!("{cf} carries one value"));
        }
        Ok(cf)
    }

    pub(super) fn read_op(&mut self, p: &Path, accept: Option<u16>) -> Result<Message, Refusal> {
        let node = self.node(p, true)?;
        let cf = self.pick_format(accept, &node)?;
        let payload =
            format::encode(cf, p, &node).map_err(|e| (Code::NOT_ACCEPTABLE, e.to_string()))?;
        let mut m = Message::new(MsgType::Ack, Code::CONTENT, 0, Token::EMPTY);
        m.set_uint_option(opt::CONTENT_FORMAT, cf.code() as u64);
        m.payload = payload;
        Ok(m)
    }

    pub(super) fn discover(&self, p: &Path) -> Result<Message, Refusal> {
        let node = self.node(p, false)?;
        let mut links = vec![];
        let attrs = |q: &Path| -> String {
            self.attributes
                .get(q)
                .map(|a| a.iter().map(|x| format!(";{x}")).collect())
                .unwrap_or_default()
        };
        links.push(format!("<{p}>{}", attrs(p)));
        let res_link = |q: Path, r: &Resource| {
            let dim = match r {
                Resource::Multiple(m) => format!(";dim={}", m.len()),
                Resource::Single(_) => String::new(),
            };
            format!("<{q}>{dim}{}", attrs(&q))
        };
        match &node {
            Node::Object(o) => {
                for i in o.keys() {
                    links.push(format!("</{}/{i}>", p.object));
                }
            }
            Node::Instance(inst) => {
                for (r, res) in inst {
                    links.push(res_link(
                        Path {
                            resource: Some(*r),
                            ..*p
                        },
                        res,
                    ));
                }
            }
            Node::Resource(res) => links = vec![res_link(*p, res)],
            Node::ResourceInstance(_) => {
                return refuse(Code::BAD_REQUEST, "cannot discover a resource instance")
            }
        }
        let mut m = Message::new(MsgType::Ack, Code::CONTENT, 0, Token::EMPTY);
        m.set_uint_option(opt::CONTENT_FORMAT, ContentFormat::Link.code() as u64);
        m.payload = links.join(",").into_bytes();
        Ok(m)
    }

    pub(super) fn write_attributes(&mut self, p: &Path, msg: &Message) -> Result<Message, Refusal> {
        self.node(p, false)?;
        let entry = self.attributes.entry(*p).or_default();
        for q in msg.uri_query() {
            let name = q.split('=').next().unwrap_or("").to_string();
            entry.retain(|a| a.split('=').next() != Some(&name));
            if q.contains('=') {
                entry.push(q);
            }
        }
        Ok(changed(Code::CHANGED))
    }

    pub(super) fn decode_payload(&self, p: &Path, msg: &Message) -> Result<Node, Refusal> {
        let c = msg.content_format().unwrap_or(0);
        let cf = ContentFormat::from_code(c).ok_or((
            Code::UNSUPPORTED_CONTENT_FORMAT,
            format!("content format {c} not supported"),
        ))?;
        format::decode(cf, p, &msg.payload, &*self.models)
            .map_err(|e| (Code::BAD_REQUEST, e.to_string()))
    }

    pub(super) fn write(
        &mut self,
        p: &Path,
        msg: &Message,
        replace: bool,
    ) -> Result<Message, Refusal> {
        if p.instance.is_none() {
            return refuse(Code::METHOD_NOT_ALLOWED, "cannot write an object");
        }
        // Write-only resources (a firmware package) exist once written.
        self.node(
            &Path {
                resource: None,
                resource_instance: None,
                ..*p
            },
            false,
        )?;
        let node = self.decode_payload(p, msg)?;
        let entries = node.entries(p);
        for (q, _) in &entries {
            if !self.writable(q.object, q.resource.unwrap_or(0)) {
                return refuse(Code::METHOD_NOT_ALLOWED, format!("{q} is not writable"));
            }
        }
        let inst = self
            .objects
            .get_mut(&p.object)
            .and_then(|o| o.get_mut(&p.instance.unwrap_or(0)))
            .ok_or((Code::NOT_FOUND, format!("{p} does not exist")))?;
        match node {
            Node::Resource(res) => {
                let r = p.resource.unwrap_or(0);
                match (res, inst.get_mut(&r), replace) {
                    (Resource::Multiple(new), Some(Resource::Multiple(old)), false) => {
                        old.extend(new)
                    }
                    (res, _, _) => {
                        inst.insert(r, res);
                    }
                }
            }
            Node::ResourceInstance(v) => match inst.get_mut(&p.resource.unwrap_or(0)) {
                Some(Resource::Multiple(m)) => {
                    m.insert(p.resource_instance.unwrap_or(0), v);
                }
                _ => return refuse(Code::NOT_FOUND, format!("{p} does not exist")),
            },
            Node::Instance(new) => {
                for (r, res) in new {
                    match (res, inst.get_mut(&r), replace) {
                        (Resource::Multiple(n), Some(Resource::Multiple(old)), false) => {
                            old.extend(n)
                        }
                        (res, _, _) => {
                            inst.insert(r, res);
                        }
                    }
                }
            }
            Node::Object(_) => return refuse(Code::BAD_REQUEST, "object payload for an instance"),
        }
        Ok(changed(Code::CHANGED))
    }

    pub(super) fn create(&mut self, p: &Path, msg: &Message) -> Result<Message, Refusal> {
        if !self.objects.contains_key(&p.object) {
            return refuse(
                Code::NOT_FOUND,
                format!("object {} not supported", p.object),
            );
        }
        let multiple = self.models.get(p.object, None).is_some_and(|m| m.multiple);
        if !multiple {
            return refuse(
                Code::METHOD_NOT_ALLOWED,
                format!("object {} is single-instance", p.object),
            );
        }
        let node = self.decode_payload(p, msg)?;
        let Node::Object(mut o) = node else {
            return refuse(Code::BAD_REQUEST, "Create needs an instance");
        };
        let objects = self.objects.entry(p.object).or_default();
        let (id, inst) = match o.pop_first() {
            Some((id, inst)) => (id, inst),
            None => (
                (0..u16::MAX)
                    .find(|i| !objects.contains_key(i))
                    .unwrap_or(0),
                Instance::new(),
            ),
        };
        if objects.contains_key(&id) {
            return refuse(
                Code::BAD_REQUEST,
                format!("instance /{}/{id} exists", p.object),
            );
        }
        objects.insert(id, inst);
        let mut m = changed(Code::CREATED);
        m.add_option(opt::LOCATION_PATH, p.object.to_string().into_bytes());
        m.add_option(opt::LOCATION_PATH, id.to_string().into_bytes());
        Ok(m)
    }

    pub(super) fn delete(&mut self, p: &Path) -> Result<Message, Refusal> {
        if p.depth() != 2 {
            return refuse(
                Code::METHOD_NOT_ALLOWED,
                "only object instances can be deleted",
            );
        }
        if p.object == 3 {
            return refuse(
                Code::METHOD_NOT_ALLOWED,
                "the Device object cannot be deleted",
            );
        }
        match self
            .objects
            .get_mut(&p.object)
            .and_then(|o| o.remove(&p.instance.unwrap_or(0)))
        {
            Some(_) => Ok(changed(Code::DELETED)),
            None => refuse(Code::NOT_FOUND, format!("{p} does not exist")),
        }
    }

    pub(super) fn execute(
        &mut self,
        now: Instant,
        p: &Path,
        msg: &Message,
    ) -> Result<Message, Refusal> {
        self.node(
            &Path {
                resource: None,
                ..*p
            },
            false,
        )?;
        if !msg.payload.is_empty() && std::str::from_utf8(&msg.payload).is_err() {
            return refuse(Code::BAD_REQUEST, "arguments are not text");
        }
        // A long-running simulator keeps only the latest executions.
        if self.executed.len() >= MAX_EXECUTED {
            self.executed.remove(0);
        }
        self.executed.push(*p);
        if (p.object, p.resource) == (1, Some(8)) {
            self.send_update(now);
        }
        if (p.object, p.resource) == (1, Some(9)) {
            // Bootstrap-Request Trigger: the device's loop bootstraps again
            // once this Execute is answered.
            self.rebootstrap = true;
        }
        if matches!(
            (p.object, p.resource),
            (5, Some(2)) | (9, Some(4)) | (9, Some(10))
        ) {
            self.package_execute(now, p)?;
        }
        Ok(changed(Code::CHANGED))
    }

    pub(super) fn read_composite(
        &mut self,
        msg: &Message,
        accept: Option<u16>,
    ) -> Result<Message, Refusal> {
        let cf = composite(msg.content_format(), Code::UNSUPPORTED_CONTENT_FORMAT)?;
        let paths = format::decode_paths(cf, &msg.payload)
            .map_err(|e| (Code::BAD_REQUEST, e.to_string()))?;
        let mut entries = Vec::new();
        for p in &paths {
            if let Ok(node) = self.node(p, true) {
                entries.extend(node.entries(p));
            }
        }
        let out = match accept {
            Some(_) => composite(accept, Code::NOT_ACCEPTABLE)?,
            None => cf,
        };
        let mut m = Message::new(MsgType::Ack, Code::CONTENT, 0, Token::EMPTY);
        m.set_uint_option(opt::CONTENT_FORMAT, out.code() as u64);
        m.payload = format::encode_entries(out, &entries)
            .map_err(|e| (Code::NOT_ACCEPTABLE, e.to_string()))?;
        Ok(m)
    }

    pub(super) fn write_composite(&mut self, msg: &Message) -> Result<Message, Refusal> {
        let cf = composite(msg.content_format(), Code::UNSUPPORTED_CONTENT_FORMAT)?;
        let entries = format::decode_entries(cf, &msg.payload, &*self.models)
            .map_err(|e| (Code::BAD_REQUEST, e.to_string()))?;
        // All or nothing: check every target before changing any.
        for (p, _) in &entries {
            let parent = Path {
                resource_instance: None,
                ..*p
            };
            self.node(
                &Path {
                    resource: None,
                    ..parent
                },
                false,
            )?;
            if p.resource.is_none() || !self.writable(p.object, p.resource.unwrap_or(0)) {
                return refuse(Code::METHOD_NOT_ALLOWED, format!("{p} is not writable"));
            }
        }
        for (p, v) in entries {
            let inst = self
                .objects
                .get_mut(&p.object)
                .and_then(|o| o.get_mut(&p.instance.unwrap_or(0)));
            if let Some(inst) = inst {
                let r = p.resource.unwrap_or(0);
                match p.resource_instance {
                    None => {
                        inst.insert(r, Resource::Single(v));
                    }
                    Some(ri) => {
                        if let Resource::Multiple(m) = inst
                            .entry(r)
                            .or_insert_with(|| Resource::Multiple(BTreeMap::new()))
                        {
                            m.insert(ri, v);
                        }
                    }
                }
            }
        }
        Ok(changed(Code::CHANGED))
    }
}

/// A format that carries paths from several objects, or `refusal`.
pub(super) fn composite(code: Option<u16>, refusal: Code) -> Result<ContentFormat, Refusal> {
    let c = code.unwrap_or(0);
    ContentFormat::from_code(c)
        .filter(|f| f.is_composite())
        .ok_or((
            refusal,
            format!("content format {c} cannot carry composite values"),
        ))
}

pub(super) fn changed(code: Code) -> Message {
    Message::new(MsgType::Ack, code, 0, Token::EMPTY)
}
