//! The `lwm2m-gw` binary: wires the command line to the runtime.

use lwm2m_gw::config::Config;
use lwm2m_gw::runtime::{Gateway, Signals};
use std::process::ExitCode;

/// `lwm2m-gw serve`: start the gateway and run it until it fails, or
/// until SIGTERM or SIGINT stops it cleanly.
fn serve(cfg: Config) -> Result<(), Box<dyn std::error::Error>> {
    // Before Gateway::start starts any thread: they inherit the blocked
    // signals, and only the signal thread takes them.
    let bound = std::time::Duration::from_secs(cfg.service.stop_timeout_s);
    let signals = Signals::install(bound)?;
    let gw = Gateway::start(cfg)?.stop_on(signals);
    smol::block_on(gw.run())?;
    Ok(())
}

fn main() -> ExitCode {
    lwm2m_gw::control::cli::main(serve)
}
