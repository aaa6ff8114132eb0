//! The load: wrk for closed-loop throughput, oha for open-loop latency at a
//! fixed rate (with latency correction, so a stalled proxy cannot hide its
//! queue), and a crowd of idle keep-alive connections for memory.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http;
use crate::peers::Target;
use crate::procs::{pinned, Pin};

/// One closed-loop run.
pub struct Throughput {
    pub rps: f64,
    /// Non-2xx answers and socket errors together.
    pub errors: u64,
}

/// `wrk -t1 -c<conns> -d<secs>` against `path` of `target`.
pub fn wrk(target: &Target, path: &str, conns: u32, secs: u64, pin: Pin) -> Result<Throughput> {
    let mut cmd = pinned(pin, Path::new("wrk"));
    cmd.args([
        "-t1".to_string(),
        format!("-c{conns}"),
        format!("-d{secs}s"),
    ]);
    for (n, v) in &target.headers {
        cmd.arg("-H").arg(format!("{n}: {v}"));
    }
    cmd.arg(target.url(path));
    let out = cmd.output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk against {} failed: {}{}",
            target.name,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("wrk output for {}:\n{text}", target.name))
}

fn parse_wrk(text: &str) -> Result<Throughput> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .context("no Requests/sec line")?
        .trim()
        .parse()?;
    let mut errors = 0;
    for l in text.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1))
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok(Throughput { rps, errors })
}

/// Latency percentiles of one open-loop run, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub rps: f64,
    pub errors: u64,
}

/// `oha` at a fixed `rate` for `secs`, latency-corrected.
pub fn oha(
    oha: &Path,
    target: &Target,
    path: &str,
    rate: u64,
    secs: u64,
    pin: Pin,
) -> Result<Latency> {
    let mut cmd = pinned(pin, oha);
    cmd.args([
        "--no-tui".to_string(),
        "--output-format".into(),
        "json".into(),
        "-z".into(),
        format!("{secs}s"),
        "-q".into(),
        rate.to_string(),
        "--latency-correction".into(),
        "-c".into(),
        "64".into(),
    ]);
    for (n, v) in &target.headers {
        cmd.arg("-H").arg(format!("{n}: {v}"));
    }
    cmd.arg(target.url(path));
    let out = cmd.output().context("running oha")?;
    if !out.status.success() {
        bail!(
            "oha against {} failed: {}",
            target.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("oha output for {} is not JSON", target.name))?;
    let pct = |k: &str| -> Result<f64> {
        v["latencyPercentiles"][k]
            .as_f64()
            .map(|s| s * 1000.0)
            .with_context(|| format!("oha output has no latencyPercentiles.{k}"))
    };
    let ok = v["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
    let total: u64 = v["statusCodeDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(|n| n.as_u64()).sum())
        .unwrap_or(0);
    // Requests still in flight when the run's time is up are cut off by
    // oha itself ("aborted due to deadline"): not the proxy's errors.
    let failed: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains("deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    Ok(Latency {
        p50: pct("p50")?,
        p99: pct("p99")?,
        p999: pct("p99.9")?,
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        errors: total - ok + failed,
    })
}

/// Open `count` keep-alive connections to `target`, each after one full
/// request and response, and hold them. At most `parallel` handshakes are
/// in flight at once.
pub async fn idle_connections(
    target: &Target,
    path: &str,
    count: usize,
    parallel: usize,
) -> Result<Vec<TcpStream>> {
    let request = http::get_request(path, &target.headers, false);
    let mut held = Vec::with_capacity(count);
    let mut pending = tokio::task::JoinSet::new();
    let mut started = 0;
    while held.len() < count {
        while started < count && pending.len() < parallel {
            let (addr, req) = (target.addr, request.clone());
            pending.spawn(async move {
                tokio::time::timeout(Duration::from_secs(10), async move {
                    let mut s = TcpStream::connect(addr).await?;
                    s.write_all(&req).await?;
                    let r = http::read_response(&mut s).await?;
                    anyhow::ensure!(r.status == 200, "status {}", r.status);
                    Ok::<_, anyhow::Error>(s)
                })
                .await
                .context("an idle connection took over 10 s to open")?
            });
            started += 1;
        }
        match pending.join_next().await {
            Some(r) => {
                held.push(r?.with_context(|| {
                    format!("idle connection {} to {}", held.len(), target.name)
                })?)
            }
            None => break,
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read_with_its_errors() {
        let text = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n\
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
            Socket errors: connect 0, read 3, write 0, timeout 2\n\
            Non-2xx or 3xx responses: 5\n\
            Requests/sec:  12345.67\nTransfer/sec:      1.2MB\n";
        let t = parse_wrk(text).unwrap();
        assert_eq!(t.rps, 12345.67);
        assert_eq!(t.errors, 10);
        assert!(parse_wrk("nothing").is_err());
    }
}
