//! lwm2m-gw: an LwM2M server and edge gateway for single-board computers.
//!
//! # Layering
//! Sans-IO cores take bytes and time as arguments and give back bytes,
//! timers and events; none of them opens a socket, reads a clock or spawns
//! a task: [`coap`], [`lwm2m`], [`server`], [`bootstrap`], [`dtls`],
//! [`profile`], [`credentials`], [`sim`]. The future `ota` core is a
//! sibling of [`server`] and [`bootstrap`].
//!
//! The I/O parts stand above them: [`store`] (sled), [`northbound`] (the
//! MQTT thread), [`control`] (control socket, CLI, and the one command
//! path), and [`runtime`] (sockets and the event loop), which only the
//! binaries import. [`config`] resolves the file into typed settings once;
//! [`clock`] is the one place the shells read the wall clock and the OS
//! random source; [`logging`] is the log format (device text escaped).
//!
//! [`console`] is the web console's login, routes and pages; its HTTP
//! server is in [`runtime`].
//!
//! Arrows point down only: runtime → control → config → console → northbound →
//! store → server, bootstrap, dtls → credentials → profile → lwm2m, coap.

pub mod bootstrap;
pub mod clock;
pub mod coap;
pub mod config;
pub mod console;
pub mod control;
pub mod credentials;
pub mod dtls;
#[cfg(test)]
mod heap_count;
pub mod logging;
pub mod lwm2m;
pub mod northbound;
pub mod notify;
pub mod ota;
pub mod profile;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod store;
