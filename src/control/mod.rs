//! Local administration: the `lwm2m-gw` command line and the control socket.

pub mod cli;
pub mod socket;
