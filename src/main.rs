//! The `lwm2m-gw` binary: command-line entry point.

fn main() -> std::process::ExitCode {
    lwm2m_gw::control::cli::main()
}
