//! Lifecycle hooks: each is run with the container's state JSON on stdin, its own args
//! (args[0] is argv[0]) and env, and killed when its timeout passes.

use oci_spec::runtime::Hook;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn run_all(kind: &str, hooks: Option<&Vec<Hook>>, state_json: &[u8]) -> Result<(), String> {
    for (i, h) in hooks.into_iter().flatten().enumerate() {
        run(h, state_json).map_err(|e| format!("error running {kind} hook #{i}: {e}"))?;
    }
    Ok(())
}

pub fn run(h: &Hook, state_json: &[u8]) -> Result<(), String> {
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = Command::new(h.path());
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    cmd.args(args.iter().skip(1))
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", h.path().display()))?;
    if let Some(stdin) = child.stdin.take() {
        write_state(stdin, state_json);
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let mut pause = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "timeout after {} seconds",
                h.timeout().unwrap_or(0)
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}, stdout: {}, stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// Gives the hook its state. A hook that exits without reading it is fine (runc ignores the
/// broken pipe too), but the binary dies of SIGPIPE by default: the signal is ignored for
/// the write only (the runtime is single-threaded here) and the old disposition restored,
/// so that nothing forked later inherits SIG_IGN.
fn write_state(mut stdin: std::process::ChildStdin, state_json: &[u8]) {
    // SAFETY: signal(2) with a valid signal number and SIG_IGN.
    let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let _ = stdin.write_all(state_json);
    drop(stdin);
    if old != libc::SIG_ERR {
        // SAFETY: restores the disposition signal() returned above.
        unsafe { libc::signal(libc::SIGPIPE, old) };
    }
}
