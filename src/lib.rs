//! lwm2m-gw: an LwM2M server and edge gateway for single-board computers.

pub mod coap;
pub mod lwm2m;
