//! The `lwm2m-gw` binary: wires the command line to the runtime.

use lwm2m_gw::config::Config;
use lwm2m_gw::runtime::Gateway;
use std::process::ExitCode;

/// `lwm2m-gw serve`: start the gateway and run it until it fails.
fn serve(cfg: Config) -> Result<(), Box<dyn std::error::Error>> {
    let gw = Gateway::start(cfg)?;
    smol::block_on(gw.run())?;
    Ok(())
}

fn main() -> ExitCode {
    lwm2m_gw::control::cli::main(serve)
}
