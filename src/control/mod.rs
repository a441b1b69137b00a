//! Local administration: the `lwm2m-gw` command line, the control socket,
//! and the one command path (parse a [`Request`], [`execute`] it) that the
//! control socket, the MQTT RPC topic and the CLI share.

pub mod bootstrap_cli;
pub mod cli;
mod common;
pub mod dispatch;
pub mod http_cli;
pub mod ota_cli;
mod ota_wait;
mod remote;
pub mod request;
pub mod socket;

pub use dispatch::{device_json, execute, Backend, Outcome};
pub use request::Request;
