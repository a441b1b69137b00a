//! Local administration: the `lwm2m-gw` command line.

pub mod cli;
