//! `type: process` and `type: stdin` sources: the lines of a command's standard output and
//! error, or of the daemon's own standard input, scanned like a file's.
//!
//! A process source runs its `command` (an argv list; no shell unless the user writes
//! `sh -c`) in a process group of its own, with `env` added and `cwd` (relative to the config
//! file's directory), standard input closed. Two reader threads frame its stdout and stderr
//! into regions of complete lines and hand them over a bounded channel to the source's
//! folding thread, which scans them ([`super::lines::Folder`]) and sends each batch to the
//! ingest writer. A child that writes faster than Sentinel commits fills the channel, then
//! its pipe: it waits (backpressure), nothing is dropped.
//!
//! When the child exits, `restart` decides: `always` (the default), `on-failure` (a non-zero
//! status or a signal) or `never`. Restarts wait 0.5 s, doubling to 30 s, back to 0.5 s once
//! a child ran for a minute. The source's state (`pid`, `restarts`, `last_exit`) is in
//! `/status`. When the daemon stops, the group gets SIGTERM, then SIGKILL after 2 s, and
//! what the children wrote before is committed. A daemon killed with SIGKILL cannot stop
//! them: a child then ends on its next write (SIGPIPE), as a command in a broken pipeline
//! does.
//!
//! Counting is at most once: lines read but not committed when the daemon is killed are not
//! read again (a pipe cannot be re-read).
//!
//! **On an edge** (`forward.nats`) the folding thread's batches carry their error lines
//! ([`super::lines::Folder::forward_unpositioned`]) and the forwarder publishes them to
//! JetStream `unpositioned` (there is no position to skip by: an aggregator applies them
//! once per stream sequence), with message ids unique to the daemon's run that a retry
//! reuses, so a publish the server stored but did not acknowledge before an outage is
//! dropped as a duplicate when retried. Nothing is counted on the edge. While NATS is down
//! the forwarder waits, and with it this source: the folding thread's send waits, the
//! readers' channel fills, then the child's pipe, and the child blocks on its next write
//! (backpressure, as when the store is slow); nothing is dropped or counted locally, and
//! the child goes on once JetStream acknowledges again. Lines read but not yet
//! acknowledged when the daemon is killed (or stopped while NATS is down) are lost, as
//! above.
//!
//! A stdin source (`type: stdin`; `type: stdout`, the reference's name, is accepted with a
//! deprecation note) reads the daemon's standard input to its end (`app 2>&1 | sentinel
//! watch`), then stays `ended`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, select};
use serde_json::json;

use super::lines::{Folder, scanner_of};
use super::{Running, SourceBoard, SourceContext, SourceInfo, Stopper};
use crate::config::{ProcessSourceConfig, RestartPolicy, SourceConfig, resolve_path};
use crate::ingest::writer::{FileBatch, WriterHandle};
use crate::scan::LineReader;

/// The first wait before a restart; it doubles up to [`RESTART_MAX`].
pub const RESTART_MIN: Duration = Duration::from_millis(500);
/// The longest wait before a restart.
pub const RESTART_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long resets the wait to [`RESTART_MIN`].
const RAN_LONG: Duration = Duration::from_secs(60);
/// How long children get between SIGTERM and SIGKILL when the daemon stops.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// Regions the channel between the readers and the folding thread holds.
const CHUNK_QUEUE: usize = 16;
/// Bytes a reader asks for at a time.
const READ_BYTES: usize = 64 << 10;

/// Lines read by a reader thread: complete lines, plus over-long lines dropped before them.
struct Chunk {
    bytes: Vec<u8>,
    long_lines: u64,
}

/// Starts the `type: process` sources (registered in [`crate::source::SOURCE_TYPES`]).
///
/// # Errors
///
/// Bad patterns, or a thread that cannot start.
pub fn start(sources: &[&SourceConfig], cx: &SourceContext) -> anyhow::Result<Running> {
    let mut running = Running {
        infos: Vec::new(),
        listening: Vec::new(),
        stoppers: Vec::new(),
    };
    for src in sources {
        let SourceConfig::Process(src) = src else {
            continue;
        };
        let mut folder = Folder::new(
            &src.common.name,
            scanner_of(&src.common, &cx.defaults)?,
            src.common.format,
            &cx.rules,
            cx.metrics.clone(),
        );
        // On an edge its error lines are published, not counted (see the module docs).
        folder.forward_unpositioned(cx.ingest.forwards(), &src.common.name);
        let (chunks_tx, chunks_rx) = bounded(CHUNK_QUEUE);
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let fold = spawn_folder(folder, chunks_rx, stop_rx.clone(), cx.ingest.clone())?;
        let cwd = src.cwd.as_deref().map_or_else(
            || cx.defaults.base_dir.clone(),
            |c| {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                resolve_path(c, &cx.defaults.base_dir, home.as_deref())
            },
        );
        let sup = Supervisor {
            src: src.clone(),
            cwd,
            board: cx.board.clone(),
            chunks: chunks_tx,
            stop: stop_rx,
            max_line_bytes: cx.defaults.max_line_bytes,
        };
        cx.board.set(
            &src.common.name,
            json!({"state": "starting", "pid": null, "restarts": 0, "last_exit": null}),
        );
        let supervisor = std::thread::Builder::new()
            .name(format!("sentinel-proc-{}", short(&src.common.name)))
            .spawn(move || sup.run())?;
        running.infos.push(SourceInfo {
            name: src.common.name.clone(),
            kind: "process".into(),
            detail: src.command.join(" "),
        });
        running.stoppers.push(Stopper::Threads(Box::new(move || {
            drop(stop_tx);
            let _ = supervisor.join();
            let _ = fold.join();
        })));
    }
    Ok(running)
}

/// Starts the `type: stdin` source (registered in [`crate::source::SOURCE_TYPES`]).
///
/// # Errors
///
/// Bad patterns, or a thread that cannot start.
pub fn start_stdin(sources: &[&SourceConfig], cx: &SourceContext) -> anyhow::Result<Running> {
    let mut running = Running {
        infos: Vec::new(),
        listening: Vec::new(),
        stoppers: Vec::new(),
    };
    for src in sources {
        let SourceConfig::Stdin(src) = src else {
            continue;
        };
        let name = src.common.name.clone();
        if src.deprecated_alias {
            tracing::warn!(
                source = %name,
                "`type: stdout` is deprecated: it reads standard input; write `type: stdin`"
            );
        }
        let mut folder = Folder::new(
            &name,
            scanner_of(&src.common, &cx.defaults)?,
            src.common.format,
            &cx.rules,
            cx.metrics.clone(),
        );
        folder.forward_unpositioned(cx.ingest.forwards(), &name);
        let (chunks_tx, chunks_rx) = bounded(CHUNK_QUEUE);
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let fold = spawn_folder(folder, chunks_rx, stop_rx, cx.ingest.clone())?;
        cx.board.set(&name, json!({"state": "reading"}));
        let board = cx.board.clone();
        let max = cx.defaults.max_line_bytes;
        let reader_name = name.clone();
        // Detached: a read of standard input cannot be interrupted; the folding thread
        // stops without it (and the process exits).
        std::thread::Builder::new()
            .name("sentinel-stdin".into())
            .spawn(move || {
                let end = pump(std::io::stdin().lock(), &chunks_tx, max);
                let state = match end {
                    Ok(()) => json!({"state": "ended", "error": null}),
                    Err(e) => {
                        tracing::warn!(source = %reader_name, error = %e, "reading standard input");
                        json!({"state": "ended", "error": format!("reading standard input: {e}")})
                    }
                };
                board.set(&reader_name, state);
            })?;
        running.infos.push(SourceInfo {
            name,
            kind: "stdin".into(),
            detail: "standard input".into(),
        });
        running.stoppers.push(Stopper::Threads(Box::new(move || {
            drop(stop_tx);
            let _ = fold.join();
        })));
    }
    Ok(running)
}

fn short(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect()
}

/// Reads `rdr` to its end, sending regions of complete lines (and the unterminated last
/// line, completed) to `tx`. Stops early when the receiver is gone.
fn pump(rdr: impl Read, tx: &Sender<Chunk>, max_line_bytes: usize) -> std::io::Result<()> {
    let mut lr = LineReader::with_capacity(rdr, READ_BYTES, max_line_bytes);
    let mut skipped = 0;
    loop {
        let region = lr.next_region()?.map(|r| r.bytes.to_vec());
        let long = lr.skipped_long_lines() - skipped;
        skipped += long;
        let bytes = match region {
            Some(r) => r,
            None => {
                let mut tail = lr.take_partial().to_vec();
                let long = lr.skipped_long_lines() - skipped;
                if !tail.is_empty() || long > 0 {
                    if !tail.is_empty() {
                        tail.push(b'\n');
                    }
                    let _ = tx.send(Chunk {
                        bytes: tail,
                        long_lines: long,
                    });
                }
                return Ok(());
            }
        };
        if tx
            .send(Chunk {
                bytes,
                long_lines: long,
            })
            .is_err()
        {
            return Ok(());
        }
    }
}

/// The folding thread: scans what the readers send and hands batches to the writer. Ends
/// when every reader is done, or [`STOP_GRACE`] after `stop` (what is queued by then is
/// committed).
fn spawn_folder(
    mut folder: Folder,
    rx: Receiver<Chunk>,
    stop: Receiver<()>,
    writer: WriterHandle,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("sentinel-fold-{}", short(folder.name())))
        .spawn(move || {
            let mut deadline: Option<Instant> = None;
            loop {
                let got = match deadline {
                    None => select! {
                        recv(rx) -> m => m.ok(),
                        recv(stop) -> _ => {
                            deadline = Some(Instant::now() + STOP_GRACE + Duration::from_secs(1));
                            continue;
                        }
                    },
                    Some(d) => rx
                        .recv_timeout(d.saturating_duration_since(Instant::now()))
                        .ok(),
                };
                let Some(chunk) = got else {
                    break;
                };
                fold(&mut folder, chunk);
                // Take what queued meanwhile into the same batch.
                while folder.held_bytes() < (4 << 20)
                    && let Ok(c) = rx.try_recv()
                {
                    fold(&mut folder, c);
                }
                if !send(&mut folder, &writer) {
                    return;
                }
            }
            send(&mut folder, &writer);
        })
}

fn fold(folder: &mut Folder, c: Chunk) {
    if c.long_lines > 0 {
        folder.add_long_lines(c.long_lines);
    }
    if !c.bytes.is_empty() {
        folder.scan_region(&c.bytes);
    }
}

/// Sends what was folded; false when the writer is gone.
fn send(folder: &mut Folder, writer: &WriterHandle) -> bool {
    if folder.is_empty() {
        return true;
    }
    let batch = FileBatch {
        source: folder.name().clone(),
        batch: folder.take(),
        positions: Vec::new(),
        forget: Vec::new(),
        // On an edge: the error lines to publish (the forwarder drops the counts).
        forward: folder.take_forward(),
    };
    writer.send_files(batch).is_ok()
}

/// Runs, watches and restarts one process source's command.
struct Supervisor {
    src: ProcessSourceConfig,
    cwd: PathBuf,
    board: Arc<SourceBoard>,
    chunks: Sender<Chunk>,
    stop: Receiver<()>,
    max_line_bytes: usize,
}

impl Supervisor {
    fn name(&self) -> &str {
        &self.src.common.name
    }

    /// Whether the daemon is stopping (waits up to `wait` for it).
    fn stopping(&self, wait: Duration) -> bool {
        matches!(
            self.stop.recv_timeout(wait),
            Err(RecvTimeoutError::Disconnected) | Ok(())
        )
    }

    fn run(self) {
        let mut restarts: u64 = 0;
        let mut backoff = RESTART_MIN;
        let mut readers: Vec<JoinHandle<()>> = Vec::new();
        let mut last_error: Option<String> = None;
        loop {
            readers.retain(|r| !r.is_finished());
            let started = Instant::now();
            let outcome = match self.spawn() {
                Ok((child, rs)) => {
                    readers.extend(rs);
                    last_error = None;
                    tracing::info!(source = %self.name(), pid = child.id(), "command started");
                    self.board.set(
                        self.name(),
                        json!({"state": "running", "pid": child.id(), "error": null}),
                    );
                    self.watch(child)
                }
                Err(e) => {
                    let msg = format!("cannot run {:?}: {e}", self.src.command[0]);
                    if last_error.as_deref() != Some(msg.as_str()) {
                        tracing::error!(source = %self.name(), "{msg}");
                    }
                    self.board.set(
                        self.name(),
                        json!({"state": "failing", "pid": null, "error": msg}),
                    );
                    last_error = Some(msg);
                    Exit::Failed
                }
            };
            let failed = match outcome {
                Exit::Stopped => break,
                Exit::Exited(status) => {
                    let text = describe(status);
                    tracing::info!(source = %self.name(), "command ended: {text}");
                    self.board
                        .set(self.name(), json!({"pid": null, "last_exit": text}));
                    !status.success()
                }
                Exit::Failed => true,
            };
            let again = match self.src.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => failed,
                RestartPolicy::Never => false,
            };
            if !again {
                if last_error.is_none() {
                    self.board.set(self.name(), json!({"state": "exited"}));
                }
                // Done: wait for the daemon to stop.
                let _ = self.stop.recv();
                break;
            }
            if started.elapsed() >= RAN_LONG {
                backoff = RESTART_MIN;
            }
            if last_error.is_none() {
                self.board.set(self.name(), json!({"state": "restarting"}));
            }
            if self.stopping(backoff) {
                break;
            }
            backoff = (backoff * 2).min(RESTART_MAX);
            restarts += 1;
            self.board.set(self.name(), json!({"restarts": restarts}));
        }
        self.board
            .set(self.name(), json!({"state": "stopped", "pid": null}));
        // The group was killed: the readers reach the end of their pipes.
        for r in readers {
            let _ = r.join();
        }
    }

    fn spawn(&self) -> std::io::Result<(Child, Vec<JoinHandle<()>>)> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&self.src.command[0]);
        cmd.args(&self.src.command[1..])
            .envs(self.src.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn()?;
        let mut readers = Vec::new();
        let max = self.max_line_bytes;
        if let Some(out) = child.stdout.take() {
            let tx = self.chunks.clone();
            readers.push(
                std::thread::Builder::new()
                    .name("sentinel-proc-out".into())
                    .spawn(move || {
                        let _ = pump(out, &tx, max);
                    })?,
            );
        }
        if let Some(err) = child.stderr.take() {
            let tx = self.chunks.clone();
            readers.push(
                std::thread::Builder::new()
                    .name("sentinel-proc-err".into())
                    .spawn(move || {
                        let _ = pump(err, &tx, max);
                    })?,
            );
        }
        Ok((child, readers))
    }

    /// Waits for the child to exit, or for the daemon to stop (then stops its group).
    fn watch(&self, mut child: Child) -> Exit {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Exit::Exited(status),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(source = %self.name(), error = %e, "waiting for the command");
                }
            }
            if self.stopping(Duration::from_millis(50)) {
                stop_group(&mut child);
                return Exit::Stopped;
            }
        }
    }
}

enum Exit {
    Exited(ExitStatus),
    Failed,
    Stopped,
}

/// SIGTERM to the child's group, SIGKILL after [`STOP_GRACE`]; reaps the child.
fn stop_group(child: &mut Child) {
    let pgid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            // The leader is gone; the rest of its group gets the same end.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    let _ = child.wait();
}

/// `exit 3`, `signal 9`.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}
