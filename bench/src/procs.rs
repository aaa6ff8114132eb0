//! Child processes of a bench run: started pinned to a CPU, stopped on drop
//! (a polite signal first, SIGKILL after a bounded wait), their resident
//! memory and CPU time read from `/proc` (the whole process tree, so
//! nginx's master and worker count together).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Which CPU a process runs on. `None` when the machine has fewer than two
/// CPUs (nothing is pinned then, and the report says so).
#[derive(Clone, Copy, Debug)]
pub struct Pin(pub Option<usize>);

/// A running child, stopped when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    stop_signal: &'static str,
}

impl Proc {
    /// Start `program args` pinned to `pin`, its output appended to
    /// `log_dir/<name>.log`.
    pub fn start(
        name: &str,
        pin: Pin,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log_dir: &Path,
        stop_signal: &'static str,
    ) -> Result<Self> {
        let mut cmd = pinned(pin, program);
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
        let err = log.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stop_signal,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fail if the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }

    /// Resident memory of the process and all its descendants, in KiB.
    pub fn rss_kib(&self) -> u64 {
        tree_rss_kib(self.pid())
    }

    /// CPU time (user and system) the process and all its descendants
    /// have used so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        tree_cpu_ticks(self.pid()) as f64 / USER_HZ
    }
}

/// The unit of the times in `/proc/<pid>/stat` (fixed at 100 by the
/// kernel's ABI, whatever the kernel's own tick rate).
const USER_HZ: f64 = 100.0;

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args([self.stop_signal, &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command for `program`, under `taskset -c <cpu>` when pinned.
pub fn pinned(pin: Pin, program: &Path) -> Command {
    match pin.0 {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn tree_rss_kib(pid: u32) -> u64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    own + children(pid).into_iter().map(tree_rss_kib).sum::<u64>()
}

fn tree_cpu_ticks(pid: u32) -> u64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu_ticks(&s))
        .unwrap_or(0);
    own + children(pid).into_iter().map(tree_cpu_ticks).sum::<u64>()
}

/// utime + stime of a `/proc/<pid>/stat` line (fields 14 and 15, counted
/// after the command name, which may hold spaces and parentheses).
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// `count` distinct free loopback ports.
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let mut held = Vec::new();
    for _ in 0..count {
        held.push(std::net::TcpListener::bind("127.0.0.1:0")?);
    }
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// This process's hard limit on open files (`/proc/self/limits`); children
/// can raise their soft limit up to it and no further.
pub fn fd_hard_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_an_odd_command_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 1 0";
        assert_eq!(stat_cpu_ticks(stat), Some(287));
        assert_eq!(stat_cpu_ticks("42 (x"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(stat_cpu_ticks(&own).is_some());
    }
}
