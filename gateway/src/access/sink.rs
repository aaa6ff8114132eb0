//! Where access-log lines go (`access_log`): standard output, a file, or
//! nowhere. Requests hand their [`Entry`] to a bounded queue and never
//! wait: when the queue is full the line is dropped and counted
//! (`unitgate_access_log_dropped_total`). One writer thread serialises the
//! entries and writes them through a buffer. It is woken by the first
//! line after a quiet spell; while lines keep coming it takes them in
//! batches every [`BATCH_INTERVAL`], so a busy gateway pays no wake-up or
//! write per request. A file is opened for appending and reopened at its
//! path on [`AccessLog::reopen`] (SIGHUP, after logrotate moved it).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use pingora_prometheus::prometheus::IntCounter;

use super::Entry;

/// Entries waiting for the writer at most.
pub const QUEUE: usize = 16 * 1024;

/// How long the writer lets lines gather while they keep coming: a line
/// is written at most this much after its request ended. The queue holds
/// 16,384 lines: 800,000 a second before one is dropped.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(20);

/// The writer's buffer: a batch goes out in writes of this size.
const BUFFER: usize = 256 * 1024;

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
    Off,
}

impl Target {
    /// `stdout`, `off`, or a file's path.
    pub fn parse(v: &str) -> Result<Target, String> {
        match v {
            "stdout" => Ok(Target::Stdout),
            "off" => Ok(Target::Off),
            "" => Err("access_log: empty (stdout, off, or a file's path)".into()),
            path => Ok(Target::File(path.into())),
        }
    }
}

/// The access log's handle on the request path (a clone writes to the
/// same queue).
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: Option<SyncSender<Box<Entry>>>,
    dropped: IntCounter,
    reopen: Arc<AtomicBool>,
    /// Lines queued and not yet written out ([`AccessLog::close`]).
    pending: Arc<AtomicUsize>,
}

impl AccessLog {
    /// Open `target` (a file is created if missing: an unwritable path
    /// fails here, before the gateway serves) and start its writer.
    pub fn open(target: &Target, dropped: IntCounter) -> io::Result<AccessLog> {
        let reopen = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicUsize::new(0));
        let out = match target {
            Target::Off => {
                return Ok(AccessLog {
                    queue: None,
                    dropped,
                    reopen,
                    pending,
                })
            }
            Target::Stdout => Out::Stdout(BufWriter::with_capacity(BUFFER, io::stdout())),
            Target::File(p) => Out::File(BufWriter::with_capacity(BUFFER, append(p)?), p.clone()),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let (flag, written) = (reopen.clone(), pending.clone());
        std::thread::Builder::new()
            .name("unitgate-access-log".into())
            .spawn(move || write_all(rx, out, &flag, &written))?;
        Ok(AccessLog {
            queue: Some(tx),
            dropped,
            reopen,
            pending,
        })
    }

    /// Whether lines are written at all (`access_log = "off"`: requests
    /// build none).
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queue `entry`; dropped and counted when the queue is full.
    pub fn write(&self, entry: Box<Entry>) {
        if let Some(q) = &self.queue {
            // Counted first: the writer may take it at once.
            self.pending.fetch_add(1, Ordering::Relaxed);
            if q.try_send(entry).is_err() {
                // Full, or the writer is gone (its output failed and was
                // reported).
                self.pending.fetch_sub(1, Ordering::Relaxed);
                self.dropped.inc();
            }
        }
    }

    /// Wait until every line queued so far is written out, at most
    /// `deadline`: the gateway calls it before it exits.
    pub fn close(&self, deadline: std::time::Duration) {
        let until = std::time::Instant::now() + deadline;
        while self.pending.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Reopen a file target at its path before the next line.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access_log {}: {e}", path.display())))
}

enum Out {
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<File>, PathBuf),
}

impl Out {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Out::Stdout(w) => w,
            Out::File(w, _) => w,
        }
    }

    /// A file target: flushed, then opened afresh at its path. A failed
    /// open keeps writing to the old file, and says so.
    fn reopen(&mut self) {
        if let Out::File(w, path) = self {
            let _ = w.flush();
            match append(path) {
                Ok(f) => *w = BufWriter::with_capacity(BUFFER, f),
                Err(e) => tracing::error!("{e}; still writing to the file opened before"),
            }
        }
    }
}

/// The writer thread: until every handle is gone. It blocks for the
/// first line after a quiet spell (one wake-up), then takes what gathered
/// every [`BATCH_INTERVAL`] until a batch finds nothing: while it sleeps,
/// a request's `try_send` finds no receiver waiting and wakes nobody. A
/// batch is at most [`QUEUE`] lines, so a reopen waits for no lull.
/// `pending` falls by what each batch wrote, once it is flushed.
fn write_all(rx: Receiver<Box<Entry>>, mut out: Out, reopen: &AtomicBool, pending: &AtomicUsize) {
    let mut scratch = Vec::with_capacity(1024);
    let mut next = None;
    loop {
        if next.is_none() {
            match rx.recv() {
                Ok(entry) => next = Some(entry),
                Err(_) => return,
            }
        }
        if reopen.swap(false, Ordering::Relaxed) {
            out.reopen();
        }
        let mut wrote = 0;
        let mut gone = false;
        while wrote < QUEUE {
            if let Some(entry) = next.take() {
                write_one(&mut out, &entry, &mut scratch);
                wrote += 1;
            }
            match rx.try_recv() {
                Ok(entry) => next = Some(entry),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
        }
        let _ = out.writer().flush();
        pending.fetch_sub(wrote, Ordering::Relaxed);
        if gone {
            return;
        }
        if next.is_none() {
            // Nothing left: wait for lines to gather, then see whether any
            // did; a batch that finds none goes back to blocking.
            std::thread::sleep(BATCH_INTERVAL);
            match rx.try_recv() {
                Ok(entry) => next = Some(entry),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

/// One line, serialised whole before it is written, so an output that
/// fails mid-batch never leaves half a line before the next one.
fn write_one(out: &mut Out, entry: &Entry, scratch: &mut Vec<u8>) {
    scratch.clear();
    entry.write_line(scratch);
    if let Err(e) = out.writer().write_all(scratch) {
        tracing::error!("access log: {e}; lines are lost until it can be written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> IntCounter {
        IntCounter::new("dropped", "dropped").unwrap()
    }

    fn lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let got: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn entry(id: &str) -> Box<Entry> {
        Box::new(Entry {
            request_id: id.into(),
            ..Entry::default()
        })
    }

    #[test]
    fn close_returns_once_every_queued_line_is_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&Target::File(path.clone()), counter()).unwrap();
        for i in 0..1000 {
            log.write(entry(&i.to_string()));
        }
        log.close(std::time::Duration::from_secs(10));
        // Read at once, no waiting: every line is there, whole.
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string()
            })
            .collect();
        assert_eq!(ids.len(), 1000);
        assert_eq!(ids[999], "\"999\"");
    }

    #[test]
    fn a_file_is_reopened_at_its_path_after_it_was_moved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&Target::File(path.clone()), counter()).unwrap();
        log.write(entry("a"));
        assert_eq!(lines(&path, 1)[0]["request_id"], "a");
        let moved = dir.path().join("access.log.1");
        std::fs::rename(&path, &moved).unwrap();
        log.write(entry("b"));
        assert_eq!(lines(&moved, 2)[1]["request_id"], "b");
        log.reopen();
        log.write(entry("c"));
        assert_eq!(lines(&path, 1)[0]["request_id"], "c");
        assert_eq!(lines(&moved, 2).len(), 2);
    }

    #[test]
    fn an_unwritable_path_fails_at_open_naming_it() {
        let e = AccessLog::open(&Target::File("/nonexistent/dir/a.log".into()), counter());
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/dir/a.log"));
        assert_eq!(Target::parse("off"), Ok(Target::Off));
        assert!(Target::parse("").is_err());
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let dropped = counter();
        let (tx, rx) = sync_channel(4);
        let log = AccessLog {
            queue: Some(tx),
            dropped: dropped.clone(),
            reopen: Arc::default(),
            pending: Arc::default(),
        };
        // Nobody drains the queue: the writer is stuck.
        for i in 0..10 {
            log.write(entry(&i.to_string()));
        }
        assert_eq!(dropped.get(), 6);
        assert_eq!(log.pending.load(Ordering::Relaxed), 4);
        assert_eq!(rx.try_iter().count(), 4);
    }

    #[test]
    fn off_writes_nothing_and_counts_nothing() {
        let dropped = counter();
        let log = AccessLog::open(&Target::Off, dropped.clone()).unwrap();
        assert!(!log.enabled());
        log.write(entry("a"));
        assert_eq!(dropped.get(), 0);
    }
}
