//! Command-line parsing and the admin subcommands (`serve`, `model ...`).

use super::common::Common;
use super::remote::{admin, bootstrap, devices, ota, rpc, stats, watch};
use crate::config::Config;
use crate::lwm2m::{ddf, ModelLibrary, Version};
use lexopt::prelude::*;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
lwm2m-gw: LwM2M server and edge gateway

Usage:
  lwm2m-gw serve [OPTIONS]                 run the gateway
  lwm2m-gw model check FILE...             validate DDF files, store nothing
  lwm2m-gw model import [OPTIONS] FILE...  add site models
  lwm2m-gw model list [OPTIONS]            list the models in force
  lwm2m-gw model rm [OPTIONS] ID[_VERSION] remove a site model (e.g. 3303 or 3303_1.1)
  lwm2m-gw rpc [OPTIONS] ENDPOINT 'METHOD {JSON}'
                                           run a command on a device, e.g.
                                           rpc sensor-1 'Read {\"id\":\"/3/0/9\"}'
  lwm2m-gw devices [OPTIONS]               list registered devices
  lwm2m-gw device [OPTIONS] ENDPOINT       show one device: registration, credential,
                                           latest attributes and telemetry
  lwm2m-gw device add [OPTIONS] ENDPOINT [--profile NAME] [--psk-identity ID --psk-key HEX
                      | --rpk-key BASE64 | --x509-cert FILE | --x509]
                                           provision a device's credential and profile
  lwm2m-gw device list [OPTIONS]           list provisioned devices
  lwm2m-gw device rm [OPTIONS] ENDPOINT    remove a device's credential
  lwm2m-gw device import [OPTIONS] FILE    provision the [[device]] tables of a TOML file
  lwm2m-gw profile import [OPTIONS] FILE...  add or replace device profiles (TOML)
  lwm2m-gw profile list [OPTIONS]          list profiles
  lwm2m-gw profile show [OPTIONS] NAME     print a profile as TOML
  lwm2m-gw profile rm [OPTIONS] NAME       remove a profile no device uses
  lwm2m-gw watch [OPTIONS] [ENDPOINT]      print values as devices report them
                                           (observations and Send)
  lwm2m-gw stats [OPTIONS]                 the gateway's counters and memory
  lwm2m-gw ota add FILE --kind firmware|software --title T --version V [OPTIONS]
                                           copy an image into the gateway's store
  lwm2m-gw ota list|rm ID [OPTIONS]        the images in the store
  lwm2m-gw ota start EP ID [--strategy push|pull|auto] [--block-size N] [--activate]
                      [--wait] [OPTIONS]
  lwm2m-gw ota start --profile NAME ID [--wait] [OPTIONS]
                                           update a device (or a profile's devices)
  lwm2m-gw ota status [EP]|cancel EP [OPTIONS]
                                           where each update stands, and why it waits
  lwm2m-gw http passwd [--config FILE]    set the web console's password (asked twice at
                                           a terminal, else the first line of stdin); its
                                           salted hash goes into [http] of FILE, or is
                                           printed without --config
  lwm2m-gw server-key [OPTIONS]            print the gateway's DTLS public key (base64
                                           SubjectPublicKeyInfo, for RPK devices); the key
                                           is made on first use if no dtls.key_file is set
  lwm2m-gw bootstrap add [OPTIONS] ENDPOINT [--profile NAME] [--psk-identity ID --psk-key HEX
                      | --rpk-key BASE64 | --x509-cert FILE] [--server-security nosec|psk
                      | --server-security rpk --server-key FILE | --server-security x509
                      --server-cert FILE --server-key FILE] [--server-uri URI] [--lifetime S]
                      [--binding U|UQ]
                                           enrol a device with the bootstrap server
  lwm2m-gw bootstrap import [OPTIONS] FILE enrol many (TOML [[device]] tables, or CSV
                                           with a header line); one bad entry: none
  lwm2m-gw bootstrap list|show EP|rm EP [OPTIONS]
                                           entries and the state of their bootstrap
  lwm2m-gw bootstrap trigger [OPTIONS] EP  make a registered device bootstrap again
  lwm2m-gw --version | --help

Methods: Read Discover WriteUpdate WriteReplace WriteAttributes ReadComposite
  WriteComposite Execute Create Delete Observe ObserveCancel ObserveCancelAll
  ObserveReadAll ObserveComposite ObserveCompositeCancel DiscoverAll (see
  README.md for their parameters). A command for a sleeping queue-mode device
  answers QUEUED and goes out when the device wakes.

Options (override the config file):
  --config FILE        TOML configuration (see README.md)
  --coap-port PORT     CoAP/UDP port (default 5685)
  --dtls-port PORT     CoAP over DTLS port (default 5686)
  --bootstrap-port PORT       bootstrap server port (default 5687; 0: off)
  --bootstrap-dtls-port PORT  bootstrap server DTLS port (default 5688; 0: off)
  --data-dir DIR       state directory (default $STATE_DIRECTORY or ./data)
  --models-dir DIR     system models directory (default ./models)
  --control-socket P   control socket (default $RUNTIME_DIRECTORY/control.sock,
                       else control.sock in the data directory)
  --http-listen ADDR:PORT  serve: the web console on ADDR:PORT ([http] listen;
                       off by default; 127.0.0.1:8080 is the usual choice)
  --mqtt-url URL       serve: northbound MQTT broker, mqtt://host:port (the rest
                       of the MQTT settings live in [mqtt] of the config file)
  --json               print answers as JSON (rpc, devices, device, watch, stats)
  --timeout SECONDS    how long rpc waits for the device (default 120); for
                       watch, how long without a report before it stops
  --wait               rpc: after QUEUED, wait for the outcome too
  --count N            watch: stop after N reports

Logging: RUST_LOG=debug (default info).
";

enum Command {
    Serve(Common),
    ModelCheck(Vec<PathBuf>),
    ModelImport(Common, Vec<PathBuf>),
    ModelList(Common),
    ModelRm(Common, String),
    Rpc(Common, String, String, Option<String>),
    Devices(Common),
    Device(Common, String),
    Watch(Common, Option<String>),
    Stats(Common),
    ServerKey(Common),
    HttpPasswd(Common),
    DeviceAdd(Common, String),
    DeviceList(Common),
    DeviceRm(Common, String),
    DeviceImport(Common, PathBuf),
    ProfileImport(Common, Vec<PathBuf>),
    ProfileList(Common),
    ProfileShow(Common, String),
    ProfileRm(Common, String),
    Bootstrap(Common, super::bootstrap_cli::BsCommand),
    Ota(Common, super::ota_cli::OtaCommand),
    Help,
    Version,
}

fn parse(args: Vec<String>) -> Result<Command, lexopt::Error> {
    let mut p = lexopt::Parser::from_args(args);
    let mut c = Common::default();
    let mut words: Vec<String> = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Long("config") => c.config = Some(p.value()?.into()),
            Long("coap-port") => c.coap_port = Some(p.value()?.parse()?),
            Long("dtls-port") => c.dtls_port = Some(p.value()?.parse()?),
            Long("bootstrap-port") => c.bootstrap_port = Some(p.value()?.parse()?),
            Long("bootstrap-dtls-port") => c.bootstrap_dtls_port = Some(p.value()?.parse()?),
            Long("server-security") => c.bs.server_security = Some(p.value()?.string()?),
            Long("server-uri") => c.bs.server_uri = Some(p.value()?.string()?),
            Long("server-key") => c.bs.server_key = Some(p.value()?.string()?),
            Long("server-cert") => c.bs.server_cert = Some(p.value()?.string()?),
            Long("lifetime") => c.bs.lifetime = Some(p.value()?.parse()?),
            Long("binding") => c.bs.binding = Some(p.value()?.string()?),
            Long("data-dir") => c.data_dir = Some(p.value()?.into()),
            Long("models-dir") => c.models_dir = Some(p.value()?.into()),
            Long("control-socket") => c.control_socket = Some(p.value()?.into()),
            Long("mqtt-url") => c.mqtt_url = Some(p.value()?.string()?),
            Long("http-listen") => c.http_listen = Some(p.value()?.parse()?),
            Long("json") => c.json = true,
            Long("timeout") => c.timeout_s = Some(p.value()?.parse()?),
            Long("wait") => c.wait = true,
            Long("count") => c.count = Some(p.value()?.parse()?),
            Long("profile") => c.cred.profile = Some(p.value()?.string()?),
            Long("psk-identity") => c.cred.psk_identity = Some(p.value()?.string()?),
            Long("psk-key") => c.cred.psk_key = Some(p.value()?.string()?),
            Long("rpk-key") => c.cred.rpk_key = Some(p.value()?.string()?),
            Long("x509-cert") => c.cred.x509_cert = Some(p.value()?.string()?),
            Long("x509") => c.cred.x509 = true,
            Long("kind") => c.ota.kind = Some(p.value()?.string()?),
            Long("title") => c.ota.title = Some(p.value()?.string()?),
            // `ota add ... --version V` names the image's version.
            Long("version") if words.first().is_some_and(|w| w == "ota") => {
                c.ota.version = Some(p.value()?.string()?)
            }
            Long("block-size") => c.ota.block_size = Some(p.value()?.parse()?),
            Long("activate") => c.ota.activate = true,
            Long("strategy") => c.ota.strategy = Some(p.value()?.string()?),
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Value(v) => words.push(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let files = |rest: &[&str]| need_files(rest.iter().map(PathBuf::from).collect());
    Ok(match w.as_slice() {
        ["serve"] => Command::Serve(c),
        ["model", "check", rest @ ..] => Command::ModelCheck(files(rest)?),
        ["model", "import", rest @ ..] => Command::ModelImport(c, files(rest)?),
        ["model", "list"] => Command::ModelList(c),
        ["model", "rm", id] => Command::ModelRm(c, id.to_string()),
        ["model", "rm", ..] => return Err("model rm takes exactly one ID[_VERSION]".into()),
        ["rpc", ep, cmd] => Command::Rpc(c, ep.to_string(), cmd.to_string(), None),
        ["rpc", ep, method, params] => Command::Rpc(
            c,
            ep.to_string(),
            method.to_string(),
            Some(params.to_string()),
        ),
        ["rpc", ..] => return Err("rpc takes ENDPOINT and 'METHOD {JSON}'".into()),
        ["devices"] => Command::Devices(c),
        ["device", "add", ep] => Command::DeviceAdd(c, ep.to_string()),
        ["device", "list"] => Command::DeviceList(c),
        ["device", "rm", ep] => Command::DeviceRm(c, ep.to_string()),
        ["device", "import", f] => Command::DeviceImport(c, PathBuf::from(f)),
        ["device", "add" | "rm" | "import", ..] => {
            return Err("device add/rm take one ENDPOINT, device import one FILE".into())
        }
        ["device", ep] => Command::Device(c, ep.to_string()),
        ["profile", "import", rest @ ..] => Command::ProfileImport(c, files(rest)?),
        ["profile", "list"] => Command::ProfileList(c),
        ["profile", "show", name] => Command::ProfileShow(c, name.to_string()),
        ["profile", "rm", name] => Command::ProfileRm(c, name.to_string()),
        ["profile", ..] => {
            return Err("profile takes import FILE..., list, show NAME or rm NAME".into())
        }
        ["device", ..] => return Err("device takes exactly one ENDPOINT".into()),
        ["watch"] => Command::Watch(c, None),
        ["watch", ep] => Command::Watch(c, Some(ep.to_string())),
        ["stats"] => Command::Stats(c),
        ["bootstrap", rest @ ..] => {
            let spec = crate::bootstrap::EntrySpec {
                profile: c.cred.profile.clone(),
                psk_identity: c.cred.psk_identity.clone(),
                psk_key: c.cred.psk_key.clone(),
                rpk_key: c.cred.rpk_key.clone(),
                x509_cert: c.cred.x509_cert.clone(),
                ..c.bs.clone()
            };
            let cmd = super::bootstrap_cli::parse(rest, spec)?;
            Command::Bootstrap(c, cmd)
        }
        ["ota", rest @ ..] => {
            let cmd = super::ota_cli::parse(rest, c.ota.clone(), c.cred.profile.clone())?;
            Command::Ota(c, cmd)
        }
        ["server-key"] => Command::ServerKey(c),
        ["http", "passwd"] => Command::HttpPasswd(c),
        ["http", ..] => return Err("http takes passwd".into()),
        [] => return Err("no command given".into()),
        other => {
            return Err(format!("unknown command or extra arguments: {}", other.join(" ")).into())
        }
    })
}

fn need_files(v: Vec<PathBuf>) -> Result<Vec<PathBuf>, lexopt::Error> {
    if v.is_empty() {
        return Err("at least one FILE is needed".into());
    }
    Ok(v)
}

/// How `lwm2m-gw serve` runs a gateway: given by the binary, which alone
/// knows the runtime, so that this module stays below it.
pub type Serve = fn(Config) -> Result<(), Box<dyn std::error::Error>>;

/// Entry point of the `lwm2m-gw` binary.
pub fn main(serve: Serve) -> ExitCode {
    crate::logging::init("info");
    let cmd = match parse(std::env::args().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lwm2m-gw: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !matches!(cmd, Command::Serve(_)) {
        // A listing piped into `head` should end quietly, as other Unix tools do.
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        blocking_output();
    }
    match run(cmd, serve) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lwm2m-gw: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes stdout and stderr blocking, for good. A program that shares our
/// output (libcoap's coap-client does this) may set the pipe non-blocking
/// at any time, before we start or while we print, and a print then fails
/// with EAGAIN instead of waiting. The flag belongs to the open pipe that
/// both programs hold, so a pipe is opened anew through /proc: ours alone,
/// blocking. Anything else (a terminal, a file) is only made blocking now.
fn blocking_output() {
    for fd in [1, 2] {
        // SAFETY: fstat, open, dup2, close and fcntl on our own standard
        // descriptors; `st` and `path` outlive the calls.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO {
                let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
                let own = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if own >= 0 {
                    libc::dup2(own, fd);
                    libc::close(own);
                    continue;
                }
            }
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
    }
}

/// Runs a subcommand; `Ok(false)` is a clean failure already reported
/// (a command the device refused).
fn run(cmd: Command, serve: Serve) -> Result<bool, Box<dyn std::error::Error>> {
    match cmd {
        Command::Rpc(c, ep, method, params) => return rpc(&c, &ep, &method, params.as_deref()),
        Command::Devices(c) => return devices(&c, None),
        Command::Device(c, ep) => return devices(&c, Some(&ep)),
        Command::Watch(c, ep) => return watch(&c, ep.as_deref()),
        Command::DeviceAdd(c, ep) => {
            let mut spec = c.cred.clone();
            spec.endpoint = ep;
            let cred = spec.build(std::path::Path::new("."))?;
            let j = serde_json::json!({"op": "device-add", "credential": cred});
            return admin(&c, j);
        }
        Command::DeviceImport(c, file) => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let parsed: crate::credentials::ImportFile =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let base = file.parent().unwrap_or(std::path::Path::new("."));
            let creds = parsed
                .device
                .iter()
                .map(|s| s.build(base))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let j = serde_json::json!({"op": "device-import", "credentials": creds});
            return admin(&c, j);
        }
        Command::DeviceList(c) => return admin(&c, serde_json::json!({"op": "credentials"})),
        Command::DeviceRm(c, ep) => {
            return admin(&c, serde_json::json!({"op": "device-rm", "endpoint": ep}))
        }
        Command::ProfileImport(c, files) => {
            let mut ok = true;
            for f in files {
                let text =
                    std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                print!("{}: ", f.display());
                ok &= admin(&c, serde_json::json!({"op": "profile-put", "toml": text}))?;
            }
            return Ok(ok);
        }
        Command::ProfileList(c) => return admin(&c, serde_json::json!({"op": "profiles"})),
        Command::ProfileShow(c, name) => {
            return admin(&c, serde_json::json!({"op": "profile", "name": name}))
        }
        Command::ProfileRm(c, name) => {
            return admin(&c, serde_json::json!({"op": "profile-rm", "name": name}))
        }
        Command::Stats(c) => return stats(&c),
        Command::Bootstrap(c, cmd) => return bootstrap(&c, cmd),
        Command::Ota(c, cmd) => return ota(&c, cmd),
        Command::Help => print!("{USAGE}"),
        Command::Version => println!("lwm2m-gw {}", env!("CARGO_PKG_VERSION")),
        Command::ServerKey(c) => {
            let cfg = c.config()?;
            let id = crate::dtls::identity::load(&cfg.dtls_files(), &cfg.data_dir().join("dtls"))?;
            for p in &id.made {
                eprintln!("made {}", p.display());
            }
            for p in &id.remade {
                eprintln!("made {} again: the certificate names changed", p.display());
            }
            println!("{}", id.public_key_base64());
        }
        Command::Serve(c) => serve(c.config()?)?,
        Command::HttpPasswd(c) => {
            let hash = super::http_cli::new_hash(&super::http_cli::read_password()?)?;
            match &c.config {
                Some(f) => {
                    super::http_cli::write_hash(f, &hash)?;
                    eprintln!(
                        "console password set in {}; restart the gateway to use it",
                        f.display()
                    );
                }
                None => {
                    eprintln!("no --config FILE: add these lines to the configuration file");
                    println!("[http]\npassword_hash = \"{hash}\"");
                }
            }
        }
        Command::ModelCheck(files) => {
            let mut failed = 0;
            for f in &files {
                match ddf::parse_file(f) {
                    Ok(parsed) => {
                        for o in &parsed.objects {
                            println!(
                                "{}: ok: object {} {:?} version {}, {} resources",
                                f.display(),
                                o.id,
                                o.name,
                                o.version,
                                o.resources.len()
                            );
                        }
                        if parsed.objects.is_empty() {
                            println!(
                                "{}: ok: {} reusable resources, no object",
                                f.display(),
                                parsed.common_resources.len()
                            );
                        }
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                return Err(format!("{failed} of {} files invalid", files.len()).into());
            }
        }
        Command::ModelImport(c, files) => {
            let cfg = c.config()?;
            let mut lib = ModelLibrary::load(&cfg.models.dir, &cfg.site_models_dir());
            for m in lib.import_site(&cfg.site_models_dir(), &files)? {
                println!(
                    "imported object {} {:?} version {} into {}",
                    m.id,
                    m.name,
                    m.version,
                    cfg.site_models_dir().display()
                );
            }
            println!("a running gateway reads site models when it starts");
        }
        Command::ModelList(c) => {
            let cfg = c.config()?;
            let lib = ModelLibrary::load(&cfg.models.dir, &cfg.site_models_dir());
            println!(
                "{:>6}  {:<7}  {:<6}  {:<40}  SOURCE",
                "ID", "VERSION", "LAYER", "NAME"
            );
            for (e, hides) in lib.list() {
                let layer = if hides {
                    format!("{}*", e.layer)
                } else {
                    e.layer.to_string()
                };
                let name = e.model().map_or("(does not parse)", |m| m.name.as_str());
                println!(
                    "{:>6}  {:<7}  {:<6}  {:<40}  {}",
                    e.id,
                    e.version.to_string(),
                    layer,
                    name,
                    e.source.display()
                );
            }
            println!("(* a site model hiding the shipped model of the same id and version)");
        }
        Command::ModelRm(c, spec) => {
            let cfg = c.config()?;
            let (id, version) = parse_model_spec(&spec)?;
            let mut lib = ModelLibrary::load(&cfg.models.dir, &cfg.site_models_dir());
            for (id, v) in lib.remove_site(&cfg.site_models_dir(), id, version)? {
                let back = lib.entry(id, Some(v)).map(|e| {
                    format!(
                        "; shipped model {id} {v} is in force again ({})",
                        e.source.display()
                    )
                });
                println!(
                    "removed site model {id} version {v}{}",
                    back.unwrap_or_default()
                );
            }
        }
    }
    Ok(true)
}

/// `3303` or `3303_1.1`.
fn parse_model_spec(s: &str) -> Result<(u16, Option<Version>), String> {
    let (id, v) = match s.split_once('_') {
        Some((i, v)) => (
            i,
            Some(Version::parse(v).ok_or(format!("{s}: bad version {v:?}"))?),
        ),
        None => (s, None),
    };
    let id = id
        .parse::<u16>()
        .map_err(|_| format!("{s}: {id:?} is not an object id"))?;
    Ok((id, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn serve_flags_override_the_defaults() {
        let Ok(Command::Serve(c)) = parse(args(
            "serve --coap-port 7000 --data-dir /tmp/d --models-dir /m",
        )) else {
            panic!()
        };
        let cfg = c.config().unwrap();
        assert_eq!(cfg.coap.port, 7000);
        assert_eq!(cfg.data_dir(), PathBuf::from("/tmp/d"));
        assert_eq!(cfg.models.dir, PathBuf::from("/m"));
    }

    #[test]
    fn usage_errors_are_reported() {
        for bad in [
            "",
            "serve --coap-port x",
            "serve --nope",
            "model",
            "model check",
            "model rm",
            "model rm 1 2",
            "frob",
            "serve extra",
        ] {
            assert!(parse(args(bad)).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse(args("model rm 3303_1.1")),
            Ok(Command::ModelRm(_, _))
        ));
    }

    #[test]
    fn model_specs_parse() {
        assert_eq!(parse_model_spec("3303").unwrap(), (3303, None));
        assert_eq!(
            parse_model_spec("3_1.2").unwrap(),
            (3, Some(Version::new(1, 2)))
        );
        assert!(parse_model_spec("x").is_err() && parse_model_spec("3_x").is_err());
    }
}
