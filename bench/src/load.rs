//! The load: wrk for closed-loop throughput, oha for open-loop latency at a
//! fixed rate (with latency correction, so a stalled proxy cannot hide its
//! queue) and for the closed-loop runs wrk cannot do (a full TLS handshake
//! per request, HTTP/2), and a crowd of idle keep-alive connections for
//! memory.

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
    let args = [
        "-z".to_string(),
        format!("{secs}s"),
        "-q".into(),
        rate.to_string(),
        "--latency-correction".into(),
        "-c".into(),
        "64".into(),
    ];
    let v = run_oha(oha, target, path, &args, pin)?;
    let pct = |k: &str| -> Result<f64> {
        v["latencyPercentiles"][k]
            .as_f64()
            .map(|s| s * 1000.0)
            .with_context(|| format!("oha output has no latencyPercentiles.{k}"))
    };
    let c = oha_counts(&v, &["deadline"]);
    Ok(Latency {
        p50: pct("p50")?,
        p99: pct("p99")?,
        p999: pct("p99.9")?,
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        errors: c.answered - c.ok + c.failed,
    })
}

/// How a closed-loop oha run uses its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OhaMode {
    /// HTTP/1.1, a new connection (and so a new TLS handshake) for every
    /// request.
    NewConnection,
    /// HTTP/2 (over TLS, by ALPN): each connection carries `streams`
    /// requests at once.
    Http2 { streams: u32 },
}

impl OhaMode {
    /// The errors oha reports for requests in flight at the deadline: on
    /// HTTP/1.1 "aborted due to deadline"; on HTTP/2 it drops the
    /// connections, and their open streams fail as canceled.
    fn cut_off(self) -> &'static [&'static str] {
        match self {
            OhaMode::NewConnection => &["deadline"],
            OhaMode::Http2 { .. } => &["deadline", "canceled"],
        }
    }

    fn args(self) -> Vec<String> {
        match self {
            OhaMode::NewConnection => vec!["--disable-keepalive".into()],
            OhaMode::Http2 { streams } => vec!["--http2".into(), "-p".into(), streams.to_string()],
        }
    }
}

/// Closed-loop `oha -c<conns> -z<secs>` in `mode`, on one worker thread.
/// Requests per second count the 200s only, over oha's own elapsed time.
pub fn oha_closed(
    oha: &Path,
    target: &Target,
    path: &str,
    mode: OhaMode,
    conns: u32,
    secs: u64,
    pin: Pin,
) -> Result<Throughput> {
    let mut args = vec![
        "-z".to_string(),
        format!("{secs}s"),
        "-c".into(),
        conns.to_string(),
        "--worker-threads".into(),
        "1".into(),
    ];
    args.extend(mode.args());
    let v = run_oha(oha, target, path, &args, pin)?;
    let c = oha_counts(&v, mode.cut_off());
    let elapsed = v["summary"]["total"]
        .as_f64()
        .filter(|s| *s > 0.0)
        .context("oha output has no summary.total")?;
    Ok(Throughput {
        rps: c.ok as f64 / elapsed,
        errors: c.answered - c.ok + c.failed,
    })
}

/// `count` requests one after the other in `mode` (each within 5 s): fails
/// unless every one is answered 200.
pub fn oha_probe(oha: &Path, target: &Target, path: &str, mode: OhaMode, count: u32) -> Result<()> {
    let mut args = vec![
        "-n".to_string(),
        count.to_string(),
        "-c".into(),
        "1".into(),
        "-t".into(),
        "5s".into(),
    ];
    args.extend(mode.args());
    let v = run_oha(oha, target, path, &args, Pin(None))?;
    let ok = oha_counts(&v, &[]).ok;
    if ok != u64::from(count) {
        bail!(
            "{} ({mode:?}): {ok} of {count} requests answered 200: {} {}",
            target.name,
            v["statusCodeDistribution"],
            v["errorDistribution"]
        );
    }
    Ok(())
}

/// oha with `args` against `path` of `target`, its JSON summary.
fn run_oha(
    oha: &Path,
    target: &Target,
    path: &str,
    args: &[String],
    pin: Pin,
) -> Result<serde_json::Value> {
    let mut cmd = pinned(pin, oha);
    cmd.args(["--no-tui", "--output-format", "json"]);
    cmd.args(args);
    if target.tls {
        // The bench's certificate comes from a local CA.
        cmd.arg("--insecure");
    }
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
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("oha output for {} is not JSON", target.name))
}

/// The outcome of an oha run.
struct OhaCounts {
    /// Answered 200.
    ok: u64,
    /// Answered at all.
    answered: u64,
    /// Failed without an answer, less the errors cut off.
    failed: u64,
}

/// The counts of an oha summary, less errors whose name holds one of
/// `cut`: the requests oha itself cuts off when the run's time is up.
fn oha_counts(v: &serde_json::Value, cut: &[&str]) -> OhaCounts {
    let ok = v["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
    let answered: u64 = v["statusCodeDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(|n| n.as_u64()).sum())
        .unwrap_or(0);
    let failed: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !cut.iter().any(|c| k.contains(c)))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    OhaCounts {
        ok,
        answered,
        failed,
    }
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

    #[test]
    fn oha_counts_leave_out_what_the_deadline_cut() {
        let v = serde_json::json!({
            "statusCodeDistribution": {"200": 90, "502": 2},
            "errorDistribution": {"aborted due to deadline": 7, "operation was canceled": 3,
                "connection reset": 1},
        });
        let c = oha_counts(&v, OhaMode::Http2 { streams: 8 }.cut_off());
        assert_eq!((c.ok, c.answered, c.failed), (90, 92, 1));
        let c = oha_counts(&v, OhaMode::NewConnection.cut_off());
        assert_eq!(c.failed, 4);
    }
}
