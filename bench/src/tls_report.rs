//! The `tls` part's report: req/s and the proxy's CPU per request of every
//! listener under every load, and the ratios (TLS against plain on the
//! same proxy, unitgate against nginx on the same kind of listener).

use std::fmt::Write as _;

use crate::load::Throughput;
use crate::report::{median, ratio};

/// The loads of the part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    NewConnection,
    KeepAliveH1,
    KeepAliveH2,
}

impl Load {
    pub const ALL: [Load; 3] = [Load::NewConnection, Load::KeepAliveH1, Load::KeepAliveH2];

    /// For the progress lines.
    pub fn short(self) -> &'static str {
        match self {
            Load::NewConnection => "new-conn",
            Load::KeepAliveH1 => "h1-keepalive",
            Load::KeepAliveH2 => "h2-keepalive",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Load::NewConnection => "new connection per request (HTTP/1.1)",
            Load::KeepAliveH1 => "keep-alive HTTP/1.1",
            Load::KeepAliveH2 => "keep-alive HTTP/2",
        }
    }
}

/// The rounds of one load against one listener.
pub struct Run {
    pub load: Load,
    pub peer: &'static str,
    pub tls: bool,
    rps: Vec<f64>,
    /// The proxy's CPU time over the run's wall time (1.0: one CPU busy).
    busy: Vec<f64>,
    errors: u64,
}

impl Run {
    pub fn new(load: Load, peer: &'static str, tls: bool) -> Self {
        Run {
            load,
            peer,
            tls,
            rps: Vec::new(),
            busy: Vec::new(),
            errors: 0,
        }
    }

    pub fn push(&mut self, r: Throughput, busy: f64) {
        self.rps.push(r.rps);
        self.busy.push(busy);
        self.errors += r.errors;
    }

    fn rps(&self) -> f64 {
        median(&self.rps)
    }

    fn busy(&self) -> f64 {
        median(&self.busy)
    }

    /// Median over the rounds of the proxy's CPU microseconds per request.
    fn cpu_us(&self) -> f64 {
        let per: Vec<f64> = self
            .rps
            .iter()
            .zip(&self.busy)
            .map(|(rps, busy)| ratio(busy * 1e6, *rps))
            .collect();
        median(&per)
    }

    fn listener(&self) -> &'static str {
        if self.tls {
            "TLS"
        } else {
            "plain"
        }
    }
}

fn find<'a>(runs: &'a [Run], load: Load, peer: &str, tls: bool) -> Option<&'a Run> {
    runs.iter()
        .find(|r| r.load == load && r.peer == peer && r.tls == tls)
}

/// req/s of a listener's median, 0 when it was not measured.
fn rps(runs: &[Run], load: Load, peer: &str, tls: bool) -> f64 {
    find(runs, load, peer, tls).map_or(0.0, Run::rps)
}

fn cpu_us(runs: &[Run], load: Load, peer: &str, tls: bool) -> f64 {
    find(runs, load, peer, tls).map_or(0.0, Run::cpu_us)
}

/// The part's tables and ratios. `negotiated`: each peer's TLS parameters.
pub fn tls(
    out: &mut String,
    runs: &[Run],
    negotiated: &[(&str, String)],
    rounds: usize,
    secs: u64,
    conns: u32,
    streams: u32,
) {
    let _ = writeln!(
        out,
        "\n### TLS termination, 1 KiB body (median of {rounds} rounds, {secs} s each)\n"
    );
    let _ = writeln!(
        out,
        "Same certificate (EC P-256 leaf of `unitgate demo-tls`), TLS 1.2/1.3 with unitgate's \
         suites on both. Every new connection is a full handshake: oha never offers a session \
         to resume (unitgate would resume one; nginx has its cache and tickets off). New connection: `oha --disable-keepalive -c{conns}`; keep-alive \
         HTTP/1.1: `wrk -t1 -c{conns}`; HTTP/2: `oha --http2 -c{} -p{streams}`. Server CPU: \
         the proxy's CPU time over the run (100 % = its one CPU).\n",
        (conns / streams).max(1)
    );
    for (peer, params) in negotiated {
        let _ = writeln!(out, "- {peer} negotiates: {params}");
    }
    let _ = writeln!(
        out,
        "\n| load | proxy | listener | median req/s | rounds | server CPU | CPU µs/req | TLS/plain | vs nginx | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let m = r.rps();
        let rounds: Vec<String> = r.rps.iter().map(|x| format!("{x:.0}")).collect();
        let vs_plain = match (r.tls, find(runs, r.load, r.peer, false)) {
            (true, Some(plain)) => format!("{:.2}", ratio(m, plain.rps())),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {m:.0} | {} | {:.0} % | {:.1} | {vs_plain} | {:.2} | {} |",
            r.load.title(),
            r.peer,
            r.listener(),
            rounds.join(" / "),
            r.busy() * 100.0,
            r.cpu_us(),
            ratio(m, rps(runs, r.load, "nginx", r.tls)),
            r.errors
        );
    }
    ratios(out, runs);
}

fn ratios(out: &mut String, runs: &[Run]) {
    let r = |load, peer, tls| rps(runs, load, peer, tls);
    let nc = Load::NewConnection;
    let hs = |peer| cpu_us(runs, nc, peer, true) - cpu_us(runs, nc, peer, false);
    let _ = writeln!(
        out,
        "\nRatios, new connection per request: unitgate TLS/plain **{:.2}**, nginx TLS/plain \
         **{:.2}**; unitgate/nginx over TLS **{:.2}** (plain {:.2}). Server CPU per full \
         handshake (µs/req TLS − plain): unitgate **{:.0} µs**, nginx **{:.0} µs** \
         (unitgate/nginx {:.2}).",
        ratio(r(nc, "unitgate", true), r(nc, "unitgate", false)),
        ratio(r(nc, "nginx", true), r(nc, "nginx", false)),
        ratio(r(nc, "unitgate", true), r(nc, "nginx", true)),
        ratio(r(nc, "unitgate", false), r(nc, "nginx", false)),
        hs("unitgate"),
        hs("nginx"),
        ratio(hs("unitgate"), hs("nginx")),
    );
    let h1 = Load::KeepAliveH1;
    let _ = writeln!(
        out,
        "\nRatios, keep-alive HTTP/1.1: unitgate TLS/plain **{:.2}**, nginx TLS/plain **{:.2}**; \
         unitgate/nginx over TLS **{:.2}** (plain {:.2}).",
        ratio(r(h1, "unitgate", true), r(h1, "unitgate", false)),
        ratio(r(h1, "nginx", true), r(h1, "nginx", false)),
        ratio(r(h1, "unitgate", true), r(h1, "nginx", true)),
        ratio(r(h1, "unitgate", false), r(h1, "nginx", false)),
    );
    let h2 = Load::KeepAliveH2;
    let _ = writeln!(
        out,
        "\nRatios, keep-alive HTTP/2 over TLS: unitgate/nginx **{:.2}**; HTTP/2 against \
         HTTP/1.1 over TLS: unitgate {:.2}, nginx {:.2}.",
        ratio(r(h2, "unitgate", true), r(h2, "nginx", true)),
        ratio(r(h2, "unitgate", true), r(h1, "unitgate", true)),
        ratio(r(h2, "nginx", true), r(h1, "nginx", true)),
    );
    // Where the proxy had CPU to spare, something else set the pace.
    let idle: Vec<String> = runs
        .iter()
        .filter(|r| r.busy() < 0.9 && !r.rps.is_empty())
        .map(|r| {
            format!(
                "{} {} {} ({:.0} %)",
                r.peer,
                r.listener(),
                r.load.short(),
                r.busy() * 100.0
            )
        })
        .collect();
    if !idle.is_empty() {
        let _ = writeln!(
            out,
            "\nNot bound by the proxy (its CPU under 90 % busy: the load generator on the \
             other CPU, or other load on the machine, set the pace): {}. Compare their CPU \
             µs/req rather than req/s.",
            idle.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(load: Load, peer: &'static str, tls: bool, rps: f64, busy: f64) -> Run {
        let mut r = Run::new(load, peer, tls);
        r.push(Throughput { rps, errors: 0 }, busy);
        r
    }

    #[test]
    fn ratios_and_cpu_per_handshake() {
        let nc = Load::NewConnection;
        let runs = vec![
            run(nc, "unitgate", true, 1000.0, 1.0),
            run(nc, "unitgate", false, 4000.0, 1.0),
            run(nc, "nginx", true, 2000.0, 0.5),
            run(nc, "nginx", false, 5000.0, 0.5),
        ];
        assert_eq!(runs[0].cpu_us(), 1000.0);
        let mut md = String::new();
        tls(&mut md, &runs, &[("nginx", "TLSv1.3".into())], 1, 1, 64, 8);
        assert!(md.contains("unitgate TLS/plain **0.25**"), "{md}");
        assert!(md.contains("unitgate/nginx over TLS **0.50**"), "{md}");
        // unitgate 1000 - 250 µs, nginx 250 - 100 µs.
        assert!(md.contains("unitgate **750 µs**, nginx **150 µs**"), "{md}");
        assert!(md.contains("nginx TLS new-conn (50 %)"), "{md}");
        assert!(md.contains("| new connection per request (HTTP/1.1) | unitgate | TLS | 1000 | 1000 | 100 % | 1000.0 | 0.25 | 0.50 | 0 |"), "{md}");
    }
}
