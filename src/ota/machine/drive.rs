//! Driving one device's update: what to send next, the blocks and their
//! answers, the executes, the strategy, and the waits for a device.

use super::*;

impl Ota {
    /// Slots freed: the next queued updates start, to be driven by the
    /// caller or the next timer.
    pub(super) fn promote_later(&mut self) {
        let free = self.cfg.max_concurrent.saturating_sub(self.running());
        let queued: Vec<String> = self
            .updates
            .iter()
            .filter(|(_, u)| u.rec.phase == Phase::Queued)
            .map(|(ep, u)| (u.rec.started_ms, ep.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .take(free)
            .map(|(_, ep)| ep)
            .collect();
        for ep in queued {
            let (now, stall) = (self.clock, self.cfg.stall_timeout);
            if let Some(u) = self.updates.get_mut(&ep) {
                u.next_at = Some(now);
                u.deadline = Some(now + stall);
            }
            self.set_phase(&ep, Phase::Initiated, "sending block 0");
        }
    }

    /// Starts queued updates in free slots, and sends their first block.
    pub(super) fn promote(&mut self, now: Instant) {
        let before: Vec<String> = self
            .updates
            .iter()
            .filter(|(_, u)| u.rec.phase == Phase::Queued)
            .map(|(ep, _)| ep.clone())
            .collect();
        self.promote_later();
        for ep in before {
            self.drive(now, &ep);
        }
    }

    /// Sends what the update needs next, unless it waits on something.
    pub(super) fn drive(&mut self, now: Instant, endpoint: &str) {
        let Some(u) = self.updates.get_mut(endpoint) else {
            return;
        };
        if !u.is_active() || u.waiting.is_some() || u.idle || u.next_at.is_none_or(|t| t > now) {
            return;
        }
        u.next_at = None;
        let kind = u.rec.image.kind;
        let obj = kind.object();
        if !u.observing {
            u.observing = true;
            // State, result and version move the update on; the package's
            // name, version and URI are for the platform and `ota status`.
            let paths: &[&str] = match kind {
                Kind::Firmware => &["/5/0/3", "/5/0/5", "/3/0/3", "/5/0/7"],
                Kind::Software => &["/9/0/7", "/9/0/9", "/9/0/1", "/9/0/0", "/9/0/3", "/3/0/19"],
            };
            for p in paths.iter().copied() {
                let handle = self.handle(endpoint);
                if let Some(h) = self.handles.get_mut(&handle) {
                    h.1 = Path::parse(p).ok();
                }
                self.actions.push_back(Action::Command {
                    handle,
                    endpoint: endpoint.to_string(),
                    method: "Observe",
                    params: json!({ "id": p }),
                });
            }
        }
        let u = self.updates.get_mut(endpoint).expect("present");
        let (want, action) = match u.rec.phase {
            Phase::Initiated if !u.delivery_checked => {
                u.rec.step = "reading how the device takes packages (/5/0/8, /5/0/9)".into();
                (
                    Want::ReadDelivery,
                    Action::Command {
                        handle: 0,
                        endpoint: endpoint.to_string(),
                        method: "Read",
                        params: json!({"id": "/5/0"}),
                    },
                )
            }
            Phase::Initiated | Phase::Downloading if u.rec.strategy == Strategy::Pull => {
                let base = if u.rec.secure {
                    self.cfg.pull_secure.clone()
                } else {
                    self.cfg.pull_plain.clone()
                };
                let Some(base) = base else {
                    let why = "no CoAP port to serve the package from".to_string();
                    self.fail(endpoint, why);
                    return;
                };
                let u = self.updates.get_mut(endpoint).expect("present");
                if u.rec.token.is_none() {
                    let token = (self.tokens)();
                    u.rec.url = Some(format!("{base}/fw/{token}"));
                    u.rec.token = Some(token.clone());
                    self.actions.push_back(Action::Serve {
                        token,
                        endpoint: endpoint.to_string(),
                        image: u.rec.image.id.clone(),
                        size: u.rec.image.size,
                        secure: u.rec.secure,
                    });
                }
                let p = match kind {
                    Kind::Firmware => "/5/0/1",
                    Kind::Software => "/9/0/3",
                };
                u.rec.step = format!("writing the package URI ({p})");
                (
                    Want::WriteUri,
                    Action::Command {
                        handle: 0,
                        endpoint: endpoint.to_string(),
                        method: "WriteReplace",
                        params: json!({"id": p, "value": u.rec.url.clone().unwrap_or_default()}),
                    },
                )
            }
            Phase::Initiated | Phase::Downloading => {
                let size = u.rec.image.size;
                let bs = u.rec.block_size as u64;
                let offset = u.rec.acked;
                let len = (size - offset).min(bs) as usize;
                let szx = BlockOpt::szx_for(bs as usize);
                let block = BlockOpt::new((offset / bs) as u32, offset + (len as u64) < size, szx);
                u.rec.blocks_sent += 1;
                u.rec.step = format!("block {} of {}", block.num, size.div_ceil(bs).max(1));
                (
                    Want::Block { offset, len, szx },
                    Action::Block {
                        handle: 0,
                        endpoint: endpoint.to_string(),
                        path: Path::parse(match kind {
                            Kind::Firmware => "/5/0/0",
                            Kind::Software => "/9/0/2",
                        })
                        .expect("valid"),
                        image: u.rec.image.id.clone(),
                        offset,
                        len,
                        block,
                        size,
                    },
                )
            }
            Phase::Downloaded | Phase::Updating => {
                u.rec.step = format!(
                    "reading the device's state (/{obj}/0){}",
                    if u.rec.phase == Phase::Updating {
                        " after the update"
                    } else {
                        ""
                    }
                );
                (
                    Want::ReadState,
                    Action::Command {
                        handle: 0,
                        endpoint: endpoint.to_string(),
                        method: "Read",
                        params: json!({ "id": format!("/{obj}/0") }),
                    },
                )
            }
            Phase::Verified => {
                let (e, p) = match kind {
                    Kind::Firmware => (Exec::Update, "/5/0/2"),
                    Kind::Software => (Exec::Install, "/9/0/4"),
                };
                u.rec.step = format!("executing {p}");
                (
                    Want::Execute(e),
                    Action::Command {
                        handle: 0,
                        endpoint: endpoint.to_string(),
                        method: "Execute",
                        params: json!({ "id": p }),
                    },
                )
            }
            _ => return,
        };
        let handle = self.handle(endpoint);
        let action = match action {
            Action::Block {
                endpoint,
                path,
                image,
                offset,
                len,
                block,
                size,
                ..
            } => Action::Block {
                handle,
                endpoint,
                path,
                image,
                offset,
                len,
                block,
                size,
            },
            Action::Command {
                endpoint,
                method,
                params,
                ..
            } => Action::Command {
                handle,
                endpoint,
                method,
                params,
            },
            other => other,
        };
        let u = self.updates.get_mut(endpoint).expect("present");
        u.waiting = Some((handle, want));
        self.actions.push_back(action);
    }

    /// A special read: the device's version, after an update.
    pub(super) fn read_version(&mut self, endpoint: &str) {
        let Some(vp) = self.version_path(endpoint) else {
            return;
        };
        if self
            .updates
            .get(endpoint)
            .is_none_or(|u| u.waiting.is_some())
        {
            // Asked after what is in flight answers.
            return;
        }
        let handle = self.handle(endpoint);
        let u = self.updates.get_mut(endpoint).expect("present");
        u.rec.step = format!("reading the version ({vp})");
        u.waiting = Some((handle, Want::ReadVersion));
        self.actions.push_back(Action::Command {
            handle,
            endpoint: endpoint.to_string(),
            method: "Read",
            params: json!({ "id": vp.to_string() }),
        });
    }

    pub(super) fn block_answered(
        &mut self,
        now: Instant,
        ep: &str,
        offset: u64,
        len: usize,
        szx: u8,
        a: &Answer,
    ) {
        let stall = self.cfg.stall_timeout;
        let u = self.updates.get_mut(ep).expect("present");
        let size = u.rec.image.size;
        // The device's Block1: [num, more, szx]; a smaller szx is the size
        // it takes from now on (RFC 7959 2.3).
        let theirs = a.value.as_ref().and_then(|v| {
            let b = v.get("block1")?.as_array()?;
            Some((b.first()?.as_u64()?, b.get(2)?.as_u64()? as u8))
        });
        match a.result {
            "CONTINUE" | "CHANGED" | "CREATED" => {
                let acked = match theirs {
                    Some((num, s)) if s < szx => {
                        u.rec.block_size = 16 << s;
                        ((num + 1) * (16u64 << s)).min(size)
                    }
                    _ => offset + len as u64,
                };
                let was = u.rec.phase;
                u.rec.acked = acked;
                u.rec.progress_ms = self.unix_ms;
                u.deadline = Some(now + stall);
                u.next_at = Some(now);
                if acked >= size {
                    u.poll_every = Duration::from_secs(1);
                    self.set_phase(
                        ep,
                        Phase::Downloaded,
                        "every block acknowledged; reading the device's state",
                    );
                } else if was == Phase::Initiated {
                    self.set_phase(ep, Phase::Downloading, "sending blocks");
                } else if u.rec.percent() != u.last_percent {
                    self.changed(ep, false);
                }
            }
            "REQUEST_ENTITY_TOO_LARGE" => {
                let smaller = match theirs {
                    Some((_, s)) if s < szx => s,
                    _ if szx > 0 => szx - 1,
                    _ => {
                        self.fail(
                            ep,
                            "the device takes no block, not even 16 bytes (4.13)".into(),
                        );
                        return;
                    }
                };
                u.rec.block_size = 16 << smaller;
                u.rec.acked = 0;
                u.next_at = Some(now);
                log::info!(
                    "ep={ep} package blocks too large (4.13); starting again with {} bytes",
                    u.rec.block_size
                );
                self.changed(ep, false);
            }
            "DEVICE_NOT_REGISTERED" | "DEVICE_ASLEEP" => self.wait_for_device(ep, a),
            "REQUEST_ENTITY_INCOMPLETE" => {
                // It lost the sequence (a restart on either side): from 0.
                u.rec.acked = 0;
                u.next_at = Some(now);
                self.retry(ep, "the device lost the block sequence (4.08)".into());
            }
            "TIMEOUT" | "SERVICE_UNAVAILABLE" | "INTERNAL_SERVER_ERROR" | "GATEWAY_TIMEOUT" => {
                let pause = if a.result == "SERVICE_UNAVAILABLE" {
                    Duration::from_secs(5)
                } else {
                    Duration::ZERO
                };
                u.next_at = Some(now + pause);
                self.retry(ep, format!("block at byte {offset}: {}", describe(a)));
            }
            _ => self.fail(
                ep,
                format!("the device refused the package: {}", describe(a)),
            ),
        }
    }

    pub(super) fn wait_for_device(&mut self, ep: &str, a: &Answer) {
        let u = self.updates.get_mut(ep).expect("present");
        u.idle = true;
        u.next_at = None;
        // No stall while it is away: a sleeping device is not a failure.
        u.deadline = None;
        u.rec.step = if a.result == "DEVICE_ASLEEP" {
            "waiting for the queue-mode device to wake".into()
        } else {
            "waiting for the device to register".into()
        };
        self.changed(ep, false);
    }

    pub(super) fn request_failed(&mut self, now: Instant, ep: &str, want: Want, a: &Answer) {
        match a.result {
            "DEVICE_NOT_REGISTERED" | "DEVICE_ASLEEP" => self.wait_for_device(ep, a),
            // Rebooting or busy: ask again after a pause.
            "TIMEOUT" | "SERVICE_UNAVAILABLE" | "CANCELLED" => {
                let every = self.cfg.poll_interval;
                if let Some(u) = self.updates.get_mut(ep) {
                    u.next_at = Some(now + every);
                }
            }
            _ => {
                let what = match want {
                    Want::ReadDelivery => "reading its firmware update object (/5/0)",
                    Want::WriteUri => "the package URI",
                    Want::Execute(Exec::Update) => "Update (/5/0/2)",
                    Want::Execute(Exec::Install) => "Install (/9/0/4)",
                    Want::Execute(Exec::Activate) => "Activate (/9/0/10)",
                    Want::ReadVersion => "reading its version",
                    _ => "reading its update state",
                };
                self.fail(ep, format!("the device refused {what}: {}", describe(a)));
            }
        }
    }

    pub(super) fn executed(&mut self, now: Instant, ep: &str, e: Exec) {
        let every = Duration::from_secs(1);
        let u = self.updates.get_mut(ep).expect("present");
        u.poll_every = every;
        u.next_at = Some(now + every);
        u.deadline = Some(now + self.cfg.stall_timeout);
        match e {
            Exec::Activate => {
                u.activated = true;
                self.read_version(ep);
            }
            Exec::Update | Exec::Install => {
                self.set_phase(ep, Phase::Updating, "waiting for the device's result");
            }
        }
    }

    /// Push or pull, from /5/0/9 (0 pull only, 1 push only, 2 both) and
    /// /5/0/8 (protocols: 0 CoAP, 1 CoAPS, ...); a device without them is
    /// taken to do both over CoAP and CoAPS.
    pub(super) fn choose_strategy(&mut self, now: Instant, ep: &str, v: &Json) {
        let u = self.updates.get_mut(ep).expect("present");
        u.delivery_checked = true;
        u.next_at = Some(now);
        let delivery = v.get("9").and_then(Json::as_i64);
        let protocols: Option<Vec<i64>> = v.get("8").and_then(|p| match p {
            Json::Object(m) => Some(m.values().filter_map(Json::as_i64).collect()),
            Json::Number(n) => n.as_i64().map(|x| vec![x]),
            _ => None,
        });
        let proto = i64::from(u.rec.secure);
        let scheme = if u.rec.secure { "coaps" } else { "coap" };
        let push_ok = delivery != Some(0);
        let proto_ok = protocols.as_ref().is_none_or(|p| p.contains(&proto));
        let pull_ok = delivery != Some(1) && proto_ok;
        let why_not_pull = if delivery == Some(1) {
            "the device takes push only (/5/0/9 = 1)".to_string()
        } else {
            format!(
                "the device cannot fetch over {scheme} (/5/0/8 = {:?})",
                protocols.unwrap_or_default()
            )
        };
        let chosen = match (u.rec.auto_strategy, u.rec.strategy) {
            (true, _) if push_ok => Ok(Strategy::Push),
            (true, _) if pull_ok => Ok(Strategy::Pull),
            (true, _) => Err(format!("neither push nor pull works: {why_not_pull}")),
            (false, Strategy::Push) if push_ok => Ok(Strategy::Push),
            (false, Strategy::Push) => Err("the device takes pull only (/5/0/9 = 0)".into()),
            (false, Strategy::Pull) if pull_ok => Ok(Strategy::Pull),
            (false, Strategy::Pull) => Err(why_not_pull),
        };
        match chosen {
            Ok(s) => {
                log::info!(
                    "ep={ep} firmware goes by {}",
                    if s == Strategy::Push { "push" } else { "pull" }
                );
                u.rec.strategy = s;
                self.changed(ep, false);
            }
            Err(why) => self.fail(ep, why),
        }
    }

    /// The device dropped a downloaded package without a failure result.
    pub(super) fn dropped(&mut self, now: Instant, ep: &str) {
        if self.retry(ep, "the device dropped the downloaded package".into()) {
            let u = self.updates.get_mut(ep).expect("present");
            u.rec.acked = 0;
            u.next_at = Some(now);
            self.set_phase(ep, Phase::Initiated, "sending block 0 again");
        }
    }

    pub(super) fn activate(&mut self, ep: &str) {
        let handle = self.handle(ep);
        let u = self.updates.get_mut(ep).expect("present");
        if u.waiting.is_some() {
            self.handles.remove(&handle);
            return;
        }
        u.rec.step = "executing /9/0/10 (Activate)".into();
        u.waiting = Some((handle, Want::Execute(Exec::Activate)));
        self.actions.push_back(Action::Command {
            handle,
            endpoint: ep.to_string(),
            method: "Execute",
            params: json!({"id": "/9/0/10"}),
        });
    }
}
