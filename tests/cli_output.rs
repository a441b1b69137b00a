//! The CLI's output through a pipe that another program keeps setting
//! non-blocking (libcoap's coap-client does, on a pipe it shares): every
//! byte still comes out, and nothing fails with EAGAIN.

use std::io::Read;
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `model check` of many files: a line each, printed as it goes.
fn model_check(dir: &std::path::Path) -> Command {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut c = Command::new(env!("CARGO_BIN_EXE_lwm2m-gw"));
    c.args(["model", "check"]).args(files);
    c
}

#[test]
fn output_into_a_pipe_another_program_sets_non_blocking_arrives_whole() {
    let dir = std::env::temp_dir().join(format!("lwm2m-gw-cli-output-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/models/3.xml")).unwrap();
    for i in 0..150 {
        std::fs::write(dir.join(format!("m{i:03}.xml")), &model).unwrap();
    }
    let whole = model_check(&dir).output().unwrap();
    assert!(whole.status.success());
    assert!(
        whole.stdout.len() > 8192,
        "the output outgrows a small pipe"
    );

    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, which the files below own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (r, w) = (fds[0], fds[1]);
    // One page: the help fills it, so the child must wait for the reader.
    unsafe { libc::fcntl(w, libc::F_SETPIPE_SZ, 4096) };
    let writer = unsafe { std::fs::File::from_raw_fd(libc::dup(w)) };
    let mut child = model_check(&dir)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The other program: O_NONBLOCK on the shared pipe, again and again.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let meddler = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            unsafe {
                let f = libc::fcntl(w, libc::F_GETFL);
                libc::fcntl(w, libc::F_SETFL, f | libc::O_NONBLOCK);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    // Read only once the child has had time to find the pipe full; the
    // meddler holds a write end too, so the end is the child's exit.
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    let mut reader = unsafe { std::fs::File::from_raw_fd(r) };
    unsafe { libc::fcntl(r, libc::F_SETFL, libc::O_NONBLOCK) };
    let mut buf = [0u8; 1024];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut exited_at = None;
    while std::time::Instant::now() < deadline {
        match reader.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => {
                if exited_at.is_none() && child.try_wait().unwrap().is_some() {
                    exited_at = Some(std::time::Instant::now());
                }
                if exited_at.is_some_and(|t| t.elapsed() > Duration::from_millis(100)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    let status = child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    meddler.join().unwrap();
    unsafe { libc::close(w) };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(got, whole.stdout, "{err}");
}
