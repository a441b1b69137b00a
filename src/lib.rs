//! lwm2m-gw: an LwM2M server and edge gateway for single-board computers.

pub mod coap;
pub mod config;
pub mod control;
pub mod credentials;
pub mod dtls;
pub mod lwm2m;
pub mod northbound;
pub mod notify;
pub mod profile;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod store;
