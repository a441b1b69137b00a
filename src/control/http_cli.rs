//! `lwm2m-gw http passwd`: the web console's password, hashed into the
//! config file.

use crate::console::auth;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;

/// Reads the new password: twice at a terminal with echo off, else the
/// first line of standard input.
pub fn read_password() -> io::Result<String> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = prompt("console password: ")?;
    let second = prompt("again: ")?;
    if first != second {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the two passwords differ",
        ));
    }
    Ok(first)
}

fn prompt(text: &str) -> io::Result<String> {
    eprint!("{text}");
    io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for our stdin.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    let echo_off = unsafe { libc::tcgetattr(fd, &mut old) } == 0 && {
        let mut t = old;
        t.c_lflag &= !libc::ECHO;
        // SAFETY: the same terminal, with echo cleared.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) == 0 }
    };
    let mut line = String::new();
    let read = io::stdin().lock().read_line(&mut line);
    if echo_off {
        // SAFETY: restores what tcgetattr gave.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// A fresh salted hash of `password`.
pub fn new_hash(password: &str) -> Result<String, Box<dyn std::error::Error>> {
    if password.chars().count() < 8 {
        return Err("the console password needs at least 8 characters".into());
    }
    let mut salt = [0u8; 16];
    if !crate::clock::random_bytes(&mut salt) {
        return Err("no randomness for a salt (neither getrandom nor /dev/urandom)".into());
    }
    Ok(auth::hash_password(password, &salt, auth::ITERATIONS)?)
}

/// `text` with `password_hash` set in its `[http]` table: the line
/// replaced if there is one, else added under the table's header, else a
/// new table at the end. Comments and the rest stay as they were.
pub fn set_hash(text: &str, hash: &str) -> String {
    let line = format!("password_hash = \"{hash}\"");
    let mut out: Vec<String> = Vec::new();
    let mut in_http = false;
    let mut done = false;
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with('[') {
            if in_http && !done {
                out.push(line.clone());
                done = true;
            }
            in_http = t.starts_with("[http]");
            out.push(l.to_string());
            continue;
        }
        if in_http
            && !done
            && t.starts_with("password_hash")
            && t[13..].trim_start().starts_with('=')
        {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(l.to_string());
    }
    if in_http && !done {
        out.push(line.clone());
        done = true;
    }
    if !done {
        if out.last().is_some_and(|l| !l.trim().is_empty()) {
            out.push(String::new());
        }
        out.push("[http]".into());
        out.push(line);
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// Writes the hash into `file`, checked as a whole config first, through
/// a temporary file so a crash leaves the old or the new file.
pub fn write_hash(file: &Path, hash: &str) -> Result<(), Box<dyn std::error::Error>> {
    let old = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", file.display()).into()),
    };
    let new = set_hash(&old, hash);
    crate::config::Config::from_toml(&new)
        .map_err(|e| format!("{} would not load after the change: {e}", file.display()))?;
    let tmp = file.with_extension("toml.tmp");
    std::fs::write(&tmp, &new).map_err(|e| format!("{}: {e}", tmp.display()))?;
    // The new file keeps the old one's mode and owner: a config readable
    // only by the service's group must stay so.
    if let Ok(meta) = std::fs::metadata(file) {
        use std::os::unix::fs::MetadataExt;
        let kept = std::fs::set_permissions(&tmp, meta.permissions())
            .and_then(|_| std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid())));
        if let Err(e) = kept {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("{}: keeping its mode and owner: {e}", file.display()).into());
        }
    }
    std::fs::rename(&tmp, file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_replaces_the_old_one_and_keeps_the_rest() {
        let t = "# site\n[coap]\nport = 5683\n\n[http]\nlisten = \"0.0.0.0:8080\"\npassword_hash = \"old\"\n# note\n[mqtt]\nurl = \"\"\n";
        let n = set_hash(t, "NEW");
        assert_eq!(
            n,
            "# site\n[coap]\nport = 5683\n\n[http]\nlisten = \"0.0.0.0:8080\"\npassword_hash = \"NEW\"\n# note\n[mqtt]\nurl = \"\"\n"
        );
    }

    #[test]
    fn the_hash_goes_into_an_existing_table_or_a_new_one() {
        assert_eq!(
            set_hash(
                "[http]\nlisten = \"127.0.0.1:8080\"\n[coap]\nport = 1\n",
                "H"
            ),
            "[http]\nlisten = \"127.0.0.1:8080\"\npassword_hash = \"H\"\n[coap]\nport = 1\n"
        );
        assert_eq!(
            set_hash("[coap]\nport = 1\n", "H"),
            "[coap]\nport = 1\n\n[http]\npassword_hash = \"H\"\n"
        );
        assert_eq!(set_hash("", "H"), "[http]\npassword_hash = \"H\"\n");
        // A key that only starts like it is left alone.
        assert_eq!(
            set_hash("[http]\npassword_hash_old = 1\n", "H"),
            "[http]\npassword_hash_old = 1\npassword_hash = \"H\"\n"
        );
    }

    #[test]
    fn the_config_file_keeps_its_mode_and_the_rest_of_its_text() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lwm2m-gw-passwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("gw.toml");
        std::fs::write(&f, "# site\n[coap]\nport = 5683\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let hash = auth::hash_password("long enough", &[3u8; 16], 10_000).unwrap();
        write_hash(&f, &hash).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("# site\n[coap]\nport = 5683\n"), "{text}");
        assert!(text.contains(&hash));
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // A file the config loader refuses is left alone.
        std::fs::write(&f, "[coap]\nport = \"x\"\n").unwrap();
        assert!(write_hash(&f, &hash).is_err());
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "[coap]\nport = \"x\"\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(new_hash("short").is_err());
    }
}
