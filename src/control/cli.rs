//! Command-line parsing and the admin subcommands (`serve`, `model ...`).

use crate::config::{Config, ConfigError};
use crate::lwm2m::{ddf, ModelLibrary, Version};
use crate::runtime::Gateway;
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
  lwm2m-gw --version | --help

Options (override the config file):
  --config FILE        TOML configuration (see README.md)
  --coap-port PORT     CoAP/UDP port (default 5685)
  --data-dir DIR       state directory (default $STATE_DIRECTORY or ./data)
  --models-dir DIR     system models directory (default ./models)

Logging: RUST_LOG=debug (default info).
";

/// Options shared by the subcommands that read the configuration.
#[derive(Debug, Default)]
struct Common {
    config: Option<PathBuf>,
    coap_port: Option<u16>,
    data_dir: Option<PathBuf>,
    models_dir: Option<PathBuf>,
}

impl Common {
    fn config(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(f) => Config::from_file(f)?,
            None => Config::default(),
        };
        if let Some(p) = self.coap_port {
            c.coap.port = p;
        }
        if let Some(d) = &self.data_dir {
            c.store.data_dir = Some(d.clone());
        }
        if let Some(d) = &self.models_dir {
            c.models.dir = d.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

enum Command {
    Serve(Common),
    ModelCheck(Vec<PathBuf>),
    ModelImport(Common, Vec<PathBuf>),
    ModelList(Common),
    ModelRm(Common, String),
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
            Long("data-dir") => c.data_dir = Some(p.value()?.into()),
            Long("models-dir") => c.models_dir = Some(p.value()?.into()),
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

/// Entry point of the `lwm2m-gw` binary.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
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
    }
    match run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lwm2m-gw: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        Command::Help => print!("{USAGE}"),
        Command::Version => println!("lwm2m-gw {}", env!("CARGO_PKG_VERSION")),
        Command::Serve(c) => {
            let gw = Gateway::start(c.config()?)?;
            smol::block_on(gw.run())?;
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
                println!(
                    "{:>6}  {:<7}  {:<6}  {:<40}  {}",
                    e.model.id,
                    e.model.version.to_string(),
                    layer,
                    e.model.name,
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
    Ok(())
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
