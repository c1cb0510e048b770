//! Running external commands with a deadline, so that a hung daemon or CLI fails a test with a
//! message instead of hanging the whole CI run.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long an ordinary CLI call may take before the harness gives up on it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A printable form of a command line, for failure messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion with stdout and stderr captured; kills it and panics after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = describe(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{desc}`: {e}"));
    wait_output(child, &desc, timeout)
}

/// Waits for a spawned child (stdout/stderr piped) and collects its output; kills it and panics
/// after `timeout`. Used for background commands such as a long ping.
pub fn wait_output(mut child: Child, desc: &str, timeout: Duration) -> Output {
    // Readers run on their own threads: a grandchild that keeps the pipe open (a daemonised
    // command) must not block us forever, so we only wait a bounded time for them below.
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let out = collect(&stdout);
                let err = collect(&stderr);
                panic!(
                    "`{desc}` did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{desc}` failed: {e}"),
        }
    };
    Output {
        status,
        stdout: collect(&stdout),
        stderr: collect(&stderr),
    }
}

/// Formats a finished command for a failure message.
pub fn show(desc: &str, out: &Output) -> String {
    format!(
        "`{desc}` exited with {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

fn collect(rx: &mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    rx.recv_timeout(Duration::from_secs(3)).unwrap_or_default()
}
