//! A peer device in a child process, driven by lines on its stdin and answering by lines on
//! its stdout: the pymodbus device and the test camera both speak this way.
//!
//! The child's first line is its `ready ...` announcement; after that every command line gets
//! exactly one answer line, and an answer `error REASON` is an error. The child is killed when
//! the [`ChildPeer`] is dropped.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Mutex, PoisonError,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// How long one command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A running child process speaking the line protocol.
#[derive(Debug)]
pub struct ChildPeer {
    /// What the peer is, for error messages ("the pymodbus peer").
    name: &'static str,
    io: Mutex<PeerIo>,
}

#[derive(Debug)]
struct PeerIo {
    child: Child,
    stdin: ChildStdin,
    /// Lines of the child's stdout, read by a thread.
    answers: Receiver<String>,
}

impl ChildPeer {
    /// Starts `command` and waits up to `startup` for its first line, which must start with
    /// `ready `; returns the peer and the rest of that line.
    pub fn spawn(
        name: &'static str,
        mut command: Command,
        startup: Duration,
    ) -> anyhow::Result<(Self, String)> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let (sender, answers) = mpsc::channel();
        if let Some(stdout) = stdout {
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let Some(stdin) = stdin else {
            // Unreachable with `Stdio::piped()`; kill rather than leak the child.
            let _ = child.kill();
            bail!("no stdin for {name}");
        };
        let mut io = PeerIo {
            child,
            stdin,
            answers,
        };
        let ready = io.next_line(name, startup)?;
        let Some(rest) = ready.strip_prefix("ready ") else {
            bail!("expected `ready ...` from {name}, got {ready:?}");
        };
        let rest = rest.to_owned();
        Ok((
            Self {
                name,
                io: Mutex::new(io),
            },
            rest,
        ))
    }

    /// Sends one command line and returns its answer line; an `error ...` answer is an error.
    pub fn command(&self, line: &str) -> anyhow::Result<String> {
        let mut io = self.io.lock().unwrap_or_else(PoisonError::into_inner);
        writeln!(io.stdin, "{line}")
            .and_then(|()| io.stdin.flush())
            .with_context(|| format!("sending `{line}` to {}", self.name))?;
        let answer = io.next_line(self.name, COMMAND_TIMEOUT)?;
        match answer.strip_prefix("error ") {
            Some(reason) => bail!("{} refused `{line}`: {reason}", self.name),
            None => Ok(answer),
        }
    }

    /// The child's process id (to stop or kill it from outside).
    pub fn pid(&self) -> u32 {
        self.io
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .child
            .id()
    }
}

impl PeerIo {
    fn next_line(&mut self, name: &str, timeout: Duration) -> anyhow::Result<String> {
        match self.answers.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                bail!("{name} did not answer within {timeout:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|status| status.to_string());
                bail!(
                    "{name} exited ({}); its stderr is above",
                    status.unwrap_or_else(|e| e.to_string())
                )
            }
        }
    }
}

impl Drop for ChildPeer {
    fn drop(&mut self) {
        let io = self.io.get_mut().unwrap_or_else(PoisonError::into_inner);
        // Fails only if the child already exited; wait() then reaps it either way.
        let _ = io.child.kill();
        let _ = io.child.wait();
    }
}
