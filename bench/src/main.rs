//! `ugbench`: unitgate against nginx, haproxy and a bare Pingora proxy, in
//! one run on one machine. Every proxy gets one worker pinned to CPU 0;
//! the origin (nginx serving fixed bodies) and the load generators run on
//! CPU 1. Proxies are measured interleaved over several rounds and reported
//! as medians and ratios, never as absolute targets. The `tls` part
//! (`tls.rs`) sets unitgate's HTTPS listener against its plain one and
//! against nginx's. `bench/run` installs the tools, builds release
//! binaries and calls this; `docs/BENCHMARKS.md` explains the figures.
#![forbid(unsafe_code)]

mod control;
mod http;
mod load;
mod peers;
mod procs;
mod report;
mod tls;
mod tls_report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use peers::{GatewayPorts, Programs, Source, Target, BODIES};
use procs::{free_ports, Pin};
use report::{BodyRun, LatencyRow, MemRow};

/// unitgate's benchmark harness (see docs/BENCHMARKS.md).
#[derive(Debug, Parser)]
#[command(name = "ugbench")]
struct Args {
    /// Interleaved rounds of the throughput runs.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per throughput run (and per run of the tls part).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Connections of the load generators (closed loop).
    #[arg(long, default_value_t = 64)]
    conns: u32,
    /// Seconds per latency point.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Idle keep-alive connections held for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Units and routes of the control-plane topology.
    #[arg(long, default_value_t = 1000)]
    units: usize,
    #[arg(long, default_value_t = 10_000)]
    routes: usize,
    /// Repetitions of the control-plane measurements.
    #[arg(long, default_value_t = 11)]
    reps: usize,
    /// A few seconds end to end (CI): 1 round of 1 s, 200 idle connections.
    #[arg(long)]
    smoke: bool,
    /// Directory of the unitgate and bare-proxy binaries [default: the
    /// one ugbench runs from, where cargo built them beside it].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The oha binary.
    #[arg(long, default_value = "oha")]
    oha: PathBuf,
    /// Parts to run (comma-separated): throughput, latency, memory, tls,
    /// control.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,latency,memory,tls,control"
    )]
    parts: Vec<Part>,
    /// Another unitgate measured beside the first, as NAME=BINARY or
    /// NAME=BINARY;TOML-LINE;... (a before/after in one run), e.g.
    /// 'ws=target/release/unitgate;work_stealing = true'; `{origin}` in
    /// the lines is the origin's address, which also takes OTLP exports
    /// (`otlp_endpoint = "http://{origin}"`). Repeatable.
    #[arg(long)]
    variant: Vec<String>,
    /// Where results.md, latency.dat and latency.png go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Throughput,
    Latency,
    Memory,
    Tls,
    Control,
}

/// A `--variant`: name, binary, extra configuration lines (`;` between
/// them).
fn parse_variant(v: &str) -> Result<(&'static str, PathBuf, String)> {
    let (name, rest) = v
        .split_once('=')
        .with_context(|| format!("--variant {v:?}: expected NAME=BINARY[;TOML-LINE]..."))?;
    let (bin, conf) = rest.split_once(';').unwrap_or((rest, ""));
    let conf = conf.replace(';', "\n");
    let name: &'static str = Box::leak(format!("unitgate:{name}").into_boxed_str());
    Ok((name, existing(PathBuf::from(bin))?, conf))
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.rounds = 1;
        args.secs = 1;
        args.latency_secs = 1;
        args.idle = args.idle.min(200);
        args.reps = 3;
    }
    if args.rounds == 0 || args.secs == 0 || args.latency_secs == 0 || args.reps == 0 {
        bail!("--rounds, --secs, --latency-secs and --reps must be at least 1");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (proxy_pin, load_pin) = if cpus >= 2 {
        (Pin(Some(0)), Pin(Some(1)))
    } else {
        (Pin(None), Pin(None))
    };
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => own_dir()?,
    };
    let programs = Programs {
        nginx: which("nginx")?,
        haproxy: which("haproxy")?,
        unitgate: existing(bin_dir.join("unitgate"))?,
        bare: existing(bin_dir.join("bare-proxy"))?,
    };
    which("wrk")?;
    std::fs::create_dir_all(&args.out)?;
    // Absolute, so that gnuplot (run inside it) finds its output path.
    args.out = std::fs::canonicalize(&args.out)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut md = String::new();
    md.push_str(&header(&args, cpus));
    rt.block_on(run(&args, &programs, proxy_pin, load_pin, &mut md))?;
    let results = args.out.join("results.md");
    std::fs::write(&results, &md)?;
    println!("{md}");
    println!("written: {}", results.display());
    Ok(())
}

async fn run(a: &Args, p: &Programs, proxy_pin: Pin, load_pin: Pin, md: &mut String) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("ugbench").tempdir()?;
    let d = dir.path();
    // nginx workers may drop to an unprivileged user: let them read.
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let origin_port = free_ports(1)?[0];
    let _origin = peers::origin(p, d, origin_port, load_pin)?;
    let origin: SocketAddr = ([127, 0, 0, 1], origin_port).into();
    http::wait_status(origin, "/healthz", &[], 200, Duration::from_secs(10)).await?;
    let topology = d.join("topology.yaml");
    std::fs::write(&topology, peers::topology_yaml(origin_port))?;

    // The proxies of the throughput, latency and memory parts.
    let parts = [Part::Throughput, Part::Latency, Part::Memory];
    if parts.iter().any(|part| a.parts.contains(part)) {
        let targets = start_targets(a, p, d, origin_port, &topology, proxy_pin).await?;
        measure_targets(a, targets, load_pin, md).await?;
    }
    if a.parts.contains(&Part::Tls) {
        let s = tls::Settings {
            rounds: a.rounds,
            secs: a.secs,
            conns: a.conns,
            oha: &a.oha,
        };
        tls::run(&s, p, d, origin_port, &topology, (proxy_pin, load_pin), md).await?;
    }
    if a.parts.contains(&Part::Control) {
        control(a, p, d, origin_port, proxy_pin, md).await?;
    }
    Ok(())
}

/// Start the origin's direct target, nginx, haproxy, the bare proxy,
/// unitgate (plain route and auth route) and the `--variant`s, and wait
/// until each answers.
async fn start_targets(
    a: &Args,
    p: &Programs,
    d: &std::path::Path,
    origin_port: u16,
    topology: &std::path::Path,
    proxy_pin: Pin,
) -> Result<Vec<Target>> {
    let variants = a
        .variant
        .iter()
        .map(|v| parse_variant(v))
        .collect::<Result<Vec<_>>>()?;
    let ports = free_ports(6 + 3 * variants.len())?;
    let gw_ports = GatewayPorts {
        public: ports[3],
        internal: ports[4],
        admin: ports[5],
    };
    let host = ("Host".to_string(), "api.example.com".to_string());
    let mut targets = vec![
        target("direct", origin_port, None, &host),
        target(
            "nginx",
            ports[0],
            Some(peers::nginx_proxy(p, d, ports[0], origin_port, proxy_pin)?),
            &host,
        ),
        target(
            "haproxy",
            ports[1],
            Some(peers::haproxy(p, d, ports[1], origin_port, proxy_pin)?),
            &host,
        ),
        target(
            "bare-pingora",
            ports[2],
            Some(peers::bare(p, d, ports[2], origin_port, proxy_pin)?),
            &host,
        ),
        target(
            "unitgate",
            gw_ports.public,
            Some(peers::unitgate(
                p,
                d,
                "unitgate",
                &gw_ports,
                Source::File(topology),
                "",
                proxy_pin,
            )?),
            &host,
        ),
    ];
    // The same unitgate, through the route with RS256 auth and a quota.
    let mut auth = target("unitgate:auth", gw_ports.public, None, &host);
    auth.headers = vec![
        ("Host".into(), peers::AUTH_HOST.into()),
        (
            "Authorization".into(),
            format!("Bearer {}", peers::auth_token()?),
        ),
    ];
    targets.push(auth);
    for (i, (name, bin, conf)) in variants.iter().enumerate() {
        let vp = GatewayPorts {
            public: ports[6 + 3 * i],
            internal: ports[7 + 3 * i],
            admin: ports[8 + 3 * i],
        };
        let programs = Programs {
            unitgate: bin.clone(),
            ..p.clone()
        };
        let log_name = name.replace(':', "-");
        let conf = conf.replace("{origin}", &format!("127.0.0.1:{origin_port}"));
        let proc = peers::unitgate(
            &programs,
            d,
            &log_name,
            &vp,
            Source::File(topology),
            &conf,
            proxy_pin,
        )?;
        targets.push(target(name, vp.public, Some(proc), &host));
    }
    for t in &mut targets {
        let ready = http::wait_status(
            t.addr,
            BODIES[0].0,
            &t.headers,
            200,
            Duration::from_secs(30),
        )
        .await;
        if let Err(e) = ready {
            let log = std::fs::read_to_string(d.join(format!("{}.log", t.name.replace(':', "-"))))
                .unwrap_or_default();
            bail!("{} not ready: {e:#}\n{log}", t.name);
        }
    }
    for t in targets
        .iter_mut()
        .filter(|t| t.name.starts_with("unitgate"))
    {
        let cookie = peers::unitgate_cookie(t.addr).await?;
        t.headers.push(("Cookie".into(), cookie));
    }
    Ok(targets)
}

/// The throughput, latency and memory parts, over `targets` (stopped
/// when done).
async fn measure_targets(
    a: &Args,
    targets: Vec<Target>,
    load_pin: Pin,
    md: &mut String,
) -> Result<()> {
    // Throughput, interleaved: each round starts one target later.
    let mut runs = Vec::new();
    let bodies = if a.parts.contains(&Part::Throughput) || a.parts.contains(&Part::Latency) {
        &BODIES[..]
    } else {
        &[]
    };
    for &(path, size) in bodies {
        let body = if size >= 1024 * 64 { "64 KiB" } else { "1 KiB" };
        let mut rows: Vec<(&'static str, Vec<f64>, u64)> =
            targets.iter().map(|t| (t.name, Vec::new(), 0)).collect();
        for round in 0..a.rounds {
            for k in 0..targets.len() {
                let i = (k + round) % targets.len();
                let r = load::wrk(&targets[i], path, a.conns, a.secs, load_pin)?;
                eprintln!(
                    "{body} round {} {:>12}: {:>9.0} req/s",
                    round + 1,
                    targets[i].name,
                    r.rps
                );
                rows[i].1.push(r.rps);
                rows[i].2 += r.errors;
            }
        }
        runs.push(BodyRun { body, rows });
    }
    if a.parts.contains(&Part::Throughput) {
        report::throughput(md, &runs);
    }

    // Latency at 25/50/75 % of the slowest proxy's 1 KiB maximum.
    if a.parts.contains(&Part::Latency) {
        latency(a, &targets, &runs[0], load_pin, md)?;
    }
    if a.parts.contains(&Part::Memory) {
        memory(a, &targets, md).await?;
    }
    Ok(())
}

fn latency(
    a: &Args,
    targets: &[Target],
    first: &BodyRun,
    load_pin: Pin,
    md: &mut String,
) -> Result<()> {
    let slowest = first
        .rows
        .iter()
        .filter(|(n, _, _)| *n != "direct")
        .map(|(_, v, _)| report::median(v))
        .fold(f64::INFINITY, f64::min);
    let mut lat_rows = Vec::new();
    for level in [25u32, 50, 75] {
        let rate = ((slowest * f64::from(level) / 100.0) as u64).max(1);
        for t in targets {
            let lat = load::oha(&a.oha, t, BODIES[0].0, rate, a.latency_secs, load_pin)?;
            eprintln!(
                "latency {level}% ({rate}/s) {:>12}: p99 {:.3} ms",
                t.name, lat.p99
            );
            lat_rows.push(LatencyRow {
                level,
                rate,
                target: t.name,
                lat,
            });
        }
    }
    report::latency(md, &lat_rows, a.latency_secs);
    let png = report::latency_plot(&a.out, &lat_rows)?;
    match png {
        Some(png) => md.push_str(&format!("\nLatency plot: `{}`\n", png.display())),
        None => md.push_str("\n(gnuplot not found: no latency plot)\n"),
    }
    Ok(())
}

async fn memory(a: &Args, targets: &[Target], md: &mut String) -> Result<()> {
    // Memory with idle keep-alive connections, one proxy at a time.
    let mut mem = Vec::new();
    for t in targets.iter().filter(|t| t.proc.is_some()) {
        let rss = || t.proc.as_ref().map_or(0, procs::Proc::rss_kib);
        let idle_kib = rss();
        // haproxy refuses to start with a maxconn its descriptors cannot
        // back (two per connection): it holds what it can take.
        let conns = match t.name {
            "haproxy" => a
                .idle
                .min(peers::haproxy_maxconn().saturating_sub(50) as usize),
            _ => a.idle,
        };
        let held = load::idle_connections(t, BODIES[0].0, conns, 200).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held_kib = rss();
        drop(held);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after_kib = rss();
        eprintln!(
            "memory {:>12}: {idle_kib} -> {held_kib} -> {after_kib} KiB",
            t.name
        );
        mem.push(MemRow {
            target: t.name,
            conns,
            idle_kib,
            held_kib,
            after_kib,
        });
    }
    report::memory(md, &mem, a.idle);
    Ok(())
}

async fn control(
    a: &Args,
    p: &Programs,
    d: &std::path::Path,
    origin_port: u16,
    proxy_pin: Pin,
    md: &mut String,
) -> Result<()> {
    let kv = control::large_kv(a.units, a.routes);
    let (apply_med, apply_max) = report::ms_median_max(&control::apply_times(&kv, a.reps)?);
    let drains = control::drain_times(p, d, origin_port, a.reps, proxy_pin).await?;
    let (d_med, d_max) = report::ms_median_max(&drains.drain);
    let (u_med, u_max) = report::ms_median_max(&drains.undrain);
    md.push_str(&format!(
        "\n### Control plane ({} repetitions)\n\n| measure | median | max |\n|---|---|---|\n\
         | validate, index and publish {} units / {} routes (in-process) | {apply_med:.1} ms | {apply_max:.1} ms |\n\
         | etcd drain-key write -> gateway applies it (admin `/gslb/dc`) | {d_med:.1} ms | {d_max:.1} ms |\n\
         | etcd drain-key delete -> gateway applies it | {u_med:.1} ms | {u_max:.1} ms |\n",
        a.reps, a.units, a.routes
    ));
    Ok(())
}

fn target(
    name: &'static str,
    port: u16,
    proc: Option<procs::Proc>,
    host: &(String, String),
) -> Target {
    Target {
        name,
        addr: ([127, 0, 0, 1], port).into(),
        headers: vec![host.clone()],
        tls: false,
        proc,
    }
}

fn header(a: &Args, cpus: usize) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let pinning = if cpus >= 2 {
        "proxy under test on CPU 0; origin and load generator on CPU 1"
    } else {
        "one CPU: nothing pinned (figures are not comparable with pinned runs)"
    };
    format!(
        "## ugbench run\n\nMachine: {cpus} CPUs ({cpu}); {pinning}.\n\
         Each proxy: one worker, keep-alive to the client and the origin. Throughput: \
         `wrk -t1 -c{}` for {} s per run, {} rounds interleaved.\n",
        a.conns, a.secs, a.rounds
    )
}

fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not found (bench/run installs it)"))
}

/// The directory of the running ugbench: cargo builds unitgate and
/// bare-proxy beside it, wherever its target directory is.
fn own_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

fn existing(p: PathBuf) -> Result<PathBuf> {
    if p.is_file() {
        Ok(p)
    } else {
        bail!(
            "{} not found (build it: cargo build --release -p unitgate -p unitgate-bench)",
            p.display()
        )
    }
}
