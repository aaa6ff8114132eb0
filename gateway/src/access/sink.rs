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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
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
}

impl AccessLog {
    /// Open `target` (a file is created if missing: an unwritable path
    /// fails here, before the gateway serves) and start its writer.
    pub fn open(target: &Target, dropped: IntCounter) -> io::Result<AccessLog> {
        let reopen = Arc::new(AtomicBool::new(false));
        let out = match target {
            Target::Off => {
                return Ok(AccessLog {
                    queue: None,
                    dropped,
                    reopen,
                })
            }
            Target::Stdout => Out::Stdout(BufWriter::with_capacity(BUFFER, io::stdout())),
            Target::File(p) => Out::File(BufWriter::with_capacity(BUFFER, append(p)?), p.clone()),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("unitgate-access-log".into())
            .spawn(move || write_all(rx, out, &flag))?;
        Ok(AccessLog {
            queue: Some(tx),
            dropped,
            reopen,
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
            match q.try_send(entry) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.dropped.inc(),
                // The writer is gone (its output failed and was reported).
                Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
            }
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
/// a request's `try_send` finds no receiver waiting and wakes nobody.
fn write_all(rx: Receiver<Box<Entry>>, mut out: Out, reopen: &AtomicBool) {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        loop {
            if reopen.swap(false, Ordering::Relaxed) {
                out.reopen();
            }
            let mut wrote = false;
            let gone = loop {
                if let Some(entry) = next.take() {
                    write_one(&mut out, &entry);
                    wrote = true;
                }
                match rx.try_recv() {
                    Ok(entry) => next = Some(entry),
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            let _ = out.writer().flush();
            if gone {
                return;
            }
            if !wrote {
                break;
            }
            std::thread::sleep(BATCH_INTERVAL);
        }
    }
}

fn write_one(out: &mut Out, entry: &Entry) {
    if let Err(e) = entry.write_line(out.writer()) {
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
        };
        // Nobody drains the queue: the writer is stuck.
        for i in 0..10 {
            log.write(entry(&i.to_string()));
        }
        assert_eq!(dropped.get(), 6);
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
