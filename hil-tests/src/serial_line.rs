//! A serial line for the Modbus RTU tests, with no hardware: a pseudo-terminal pair made by
//! `socat` (two ttys joined back to back: what one end writes the other reads), the agent on
//! one end and a device on the other, and [`ScriptedRtuDevice`], a small RTU device for the
//! bad input no real stack sends (answers with a broken CRC).
//!
//! Linux refuses parity on a pseudo-terminal (`tcsetattr` answers EINVAL to PARENB), so the
//! line runs 8N1; the agent's parity setting is tested where it is parsed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio_serial::SerialPortBuilderExt as _;

/// How long socat may take to create its two links.
const SOCAT_STARTUP: Duration = Duration::from_secs(5);

/// Two linked ttys, `agent_end` and `device_end`, while socat runs; killed on drop.
#[derive(Debug)]
pub struct PtyPair {
    pub agent_end: PathBuf,
    pub device_end: PathBuf,
    socat: Option<Child>,
}

impl PtyPair {
    /// Starts socat with the links `folder/agent-tty` and `folder/device-tty`.
    pub async fn start(folder: &Path) -> anyhow::Result<Self> {
        let mut pair = PtyPair {
            agent_end: folder.join("agent-tty"),
            device_end: folder.join("device-tty"),
            socat: None,
        };
        pair.restart().await?;
        Ok(pair)
    }

    /// Ends socat: both ttys vanish, as when a USB adapter is pulled out.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut socat) = self.socat.take() {
            socat.kill().context("killing socat")?;
            socat.wait().context("reaping socat")?;
        }
        // socat removes its links on a clean exit only.
        for link in [&self.agent_end, &self.device_end] {
            let _ = std::fs::remove_file(link);
        }
        Ok(())
    }

    /// Starts socat again (after [`PtyPair::kill`]) with the same link names.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        let end = |link: &Path| format!("pty,raw,echo=0,link={}", link.display());
        let socat = Command::new("socat")
            .arg(end(&self.agent_end))
            .arg(end(&self.device_end))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start socat: install it with scripts/install-deps.sh (apt-get install socat)")?;
        self.socat = Some(socat);
        let deadline = tokio::time::Instant::now() + SOCAT_STARTUP;
        while !(self.agent_end.exists() && self.device_end.exists()) {
            if tokio::time::Instant::now() > deadline {
                bail!("socat made no pty links within {SOCAT_STARTUP:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// How [`ScriptedRtuDevice`] answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A valid answer: every bit set, every register 42.
    Good,
    /// The same answer with its CRC broken.
    BadCrc,
    /// 64 zero bytes: no frame at all, more than a decoder can skip over.
    Garbage,
    /// No answer.
    Silent,
}

/// A Modbus RTU device on a serial port that answers read requests (function codes 1-4) as
/// its script says, by unit id and function code; stops on drop.
pub struct ScriptedRtuDevice {
    task: JoinHandle<()>,
    shortest_pause: Arc<Mutex<Option<Duration>>>,
    /// Requests received, by unit id.
    requests: Arc<Mutex<[u64; 256]>>,
}

impl ScriptedRtuDevice {
    /// Opens `port` (8N1, 19200 baud) and answers until dropped.
    pub fn start(
        port: &Path,
        script: impl Fn(u8, u8) -> Reply + Send + 'static,
    ) -> anyhow::Result<Self> {
        let mut serial = tokio_serial::new(port.to_string_lossy(), 19_200)
            .parity(tokio_serial::Parity::None)
            .open_native_async()
            .with_context(|| format!("opening {}", port.display()))?;
        let shortest_pause = Arc::new(Mutex::new(None));
        let pauses = shortest_pause.clone();
        let requests = Arc::new(Mutex::new([0; 256]));
        let counts = requests.clone();
        let task = tokio::spawn(async move {
            // Every request of function codes 1-6 is 8 bytes: unit, function, address,
            // count, CRC.
            let mut request = [0u8; 8];
            let mut answered: Option<Instant> = None;
            while serial.read_exact(&mut request).await.is_ok() {
                if let Some(answered) = answered {
                    let pause = answered.elapsed();
                    let mut shortest = pauses.lock().unwrap_or_else(PoisonError::into_inner);
                    *shortest = Some(shortest.map_or(pause, |s: Duration| s.min(pause)));
                }
                let (unit, function) = (request[0], request[1]);
                counts.lock().unwrap_or_else(PoisonError::into_inner)[usize::from(unit)] += 1;
                let count = u16::from_be_bytes([request[4], request[5]]);
                let reply = script(unit, function);
                let Some(mut answer) = read_answer(unit, function, count) else {
                    continue;
                };
                match reply {
                    Reply::Silent => continue,
                    Reply::Good => {}
                    Reply::BadCrc => {
                        if let Some(last) = answer.last_mut() {
                            *last ^= 0x5a;
                        }
                    }
                    Reply::Garbage => answer = vec![0; 64],
                }
                if serial.write_all(&answer).await.is_err() {
                    return;
                }
                answered = Some(Instant::now());
            }
        });
        Ok(ScriptedRtuDevice {
            task,
            shortest_pause,
            requests,
        })
    }

    /// How many requests `unit` was sent so far.
    pub fn requests(&self, unit: u8) -> u64 {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)[usize::from(unit)]
    }

    /// The shortest time between an answer sent and the next request received (the line's
    /// silence between two frames, plus the pty's own delay).
    pub fn shortest_pause(&self) -> Option<Duration> {
        *self
            .shortest_pause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ScriptedRtuDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer frame to a read of `count` bits or registers, with its CRC; None for other
/// function codes.
fn read_answer(unit: u8, function: u8, count: u16) -> Option<Vec<u8>> {
    let mut frame = vec![unit, function];
    match function {
        1 | 2 => {
            let bytes = count.div_ceil(8);
            frame.push(u8::try_from(bytes).ok()?);
            frame.extend(std::iter::repeat_n(0xff, usize::from(bytes)));
        }
        3 | 4 => {
            frame.push(u8::try_from(count * 2).ok()?);
            for _ in 0..count {
                frame.extend(42u16.to_be_bytes());
            }
        }
        _ => return None,
    }
    let crc = gatehouse_edge::adapters::modbus::rtu::crc16(&frame);
    frame.extend(crc.to_le_bytes());
    Some(frame)
}
