//! `lwm2m-gw model check/import/list/rm` as a user runs them.

mod common;

use common::TempDir;
use std::process::{Command, Output};

fn gw(args: &[&str], data: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `model list` row of an object id (its newest version: models/
/// ships older ones too, listed first).
fn list_row<'a>(list: &'a str, id: &str) -> &'a str {
    list.lines()
        .rfind(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id} in {list}"))
}

const SHIPPED_3303: &str = include_str!("../models/3303.xml");

#[test]
fn check_reports_file_and_line_and_fails() {
    let dir = TempDir::new("check");
    let good = dir.0.join("good.xml");
    std::fs::write(&good, SHIPPED_3303).unwrap();
    let bad = dir.0.join("bad.xml");
    std::fs::write(
        &bad,
        SHIPPED_3303.replacen("<Type>Float</Type>", "<Type>Flaot</Type>", 1),
    )
    .unwrap();
    let line = SHIPPED_3303[..SHIPPED_3303.find("<Type>Float</Type>").unwrap()]
        .lines()
        .count();
    let o = gw(&["model", "check", good.to_str().unwrap()], &dir.0);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("object 3303"));
    let o = gw(
        &[
            "model",
            "check",
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
        &dir.0,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&format!("{}:{line}:", bad.display())),
        "{}",
        text(&o)
    );
    assert!(!dir.0.join("models").exists(), "check stores nothing");
}

#[test]
fn import_overrides_list_shows_and_rm_restores_the_shipped_model() {
    let dir = TempDir::new("import");
    let site_file = dir.0.join("temp.xml");
    std::fs::write(
        &site_file,
        SHIPPED_3303.replace("<Name>Temperature</Name>", "<Name>Site Temperature</Name>"),
    )
    .unwrap();
    let o = gw(&["model", "import", site_file.to_str().unwrap()], &dir.0);
    assert!(o.status.success(), "{}", text(&o));
    let list = text(&gw(&["model", "list"], &dir.0));
    let row = list_row(&list, "3303");
    assert!(
        row.contains("site*") && row.contains("Site Temperature"),
        "{list}"
    );
    let o = gw(&["model", "rm", "3303"], &dir.0);
    assert!(o.status.success(), "{}", text(&o));
    let list = text(&gw(&["model", "list"], &dir.0));
    let row = list_row(&list, "3303");
    assert!(
        row.contains("system") && row.contains("Temperature") && !row.contains("Site"),
        "{list}"
    );
    let o = gw(&["model", "rm", "3303"], &dir.0);
    assert!(!o.status.success());
    assert!(text(&o).contains("cannot be removed"), "{}", text(&o));
}

#[test]
fn new_object_version_coexists_with_the_shipped_one() {
    let dir = TempDir::new("versions");
    let f = dir.0.join("t10.xml");
    std::fs::write(
        &f,
        SHIPPED_3303.replace(
            "<ObjectVersion>1.1</ObjectVersion>",
            "<ObjectVersion>1.0</ObjectVersion>",
        ),
    )
    .unwrap();
    assert!(gw(&["model", "import", f.to_str().unwrap()], &dir.0)
        .status
        .success());
    let list = text(&gw(&["model", "list"], &dir.0));
    let rows: Vec<&str> = list
        .lines()
        .filter(|l| l.trim_start().starts_with("3303"))
        .collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(gw(&["model", "rm", "3303_1.0"], &dir.0).status.success());
    assert!(!gw(&["model", "rm", "3303_1.1"], &dir.0).status.success());
}

#[test]
fn importing_a_broken_file_stores_nothing_and_fails() {
    let dir = TempDir::new("broken");
    let f = dir.0.join("b.xml");
    std::fs::write(
        &f,
        "<LWM2M><Object ObjectType=\"MODefinition\"><Name>x</Name></Object></LWM2M>",
    )
    .unwrap();
    let o = gw(&["model", "import", f.to_str().unwrap()], &dir.0);
    assert!(!o.status.success());
    assert!(text(&o).contains("b.xml:1:"), "{}", text(&o));
    assert!(!text(&o).contains("panicked"));
}

/// Another program sharing the terminal's pipe (libcoap's coap-client)
/// can leave it non-blocking; a listing into a full pipe must then wait
/// for the reader, not fail with EAGAIN.
#[test]
fn a_listing_into_a_full_non_blocking_pipe_waits_for_the_reader() {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let dir = TempDir::new("nonblocking");
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors, which are owned below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fds[1] is the pipe's write end, open and ours.
    unsafe {
        // The smallest pipe the kernel gives (one page), so the listing fills it.
        libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096);
        let flags = libc::fcntl(fds[1], libc::F_GETFL);
        libc::fcntl(fds[1], libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    // SAFETY: each descriptor is owned exactly once from here on.
    let (mut reader, mut writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // Nearly full before the listing starts, so the listing cannot fit.
    let filler = ".".repeat(4000);
    std::io::Write::write_all(&mut writer, filler.as_bytes()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"))
        .args(["model", "list", "--data-dir"])
        .arg(&dir.0)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The listing meets the full pipe before anyone reads.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut out = String::new();
    reader.read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    list_row(out.strip_prefix(&filler).unwrap(), "3303");
}
