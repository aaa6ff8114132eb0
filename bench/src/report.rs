//! Medians, ratios and the report: markdown tables on stdout and in
//! `<out>/results.md`, latency data and a gnuplot PNG.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::load::Latency;

/// Median of `xs` (mean of the middle two for an even count); 0 if empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Milliseconds of a duration list: (median, max).
pub fn ms_median_max(ds: &[Duration]) -> (f64, f64) {
    let ms: Vec<f64> = ds.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    (median(&ms), ms.iter().copied().fold(0.0, f64::max))
}

/// Throughput of every target for one body: per-round req/s and errors.
pub struct BodyRun {
    pub body: &'static str,
    /// (target, req/s of each round, errors over all rounds)
    pub rows: Vec<(&'static str, Vec<f64>, u64)>,
}

impl BodyRun {
    pub fn median_of(&self, name: &str) -> f64 {
        self.rows
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, _)| median(v))
            .unwrap_or(0.0)
    }
}

/// Throughput tables and the ratios the project tracks.
pub fn throughput(out: &mut String, runs: &[BodyRun]) {
    for run in runs {
        let nginx = run.median_of("nginx");
        let direct = run.median_of("direct");
        let _ = writeln!(
            out,
            "\n### Throughput, {} body (req/s, median of rounds)\n",
            run.body
        );
        let _ = writeln!(
            out,
            "| target | median req/s | rounds | vs nginx | vs direct | errors |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for (name, v, errors) in &run.rows {
            let m = median(v);
            let rounds: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
            let _ = writeln!(
                out,
                "| {name} | {m:.0} | {} | {:.2} | {:.2} | {errors} |",
                rounds.join(" / "),
                ratio(m, nginx),
                ratio(m, direct)
            );
        }
        let ug = run.median_of("unitgate");
        let _ = writeln!(
            out,
            "\nRatios ({}): unitgate/nginx **{:.2}**, unitgate/haproxy **{:.2}**, \
             unitgate/bare-pingora **{:.2}**; proxy/direct: nginx {:.2}, haproxy {:.2}, \
             bare-pingora {:.2}, unitgate {:.2}",
            run.body,
            ratio(ug, nginx),
            ratio(ug, run.median_of("haproxy")),
            ratio(ug, run.median_of("bare-pingora")),
            ratio(nginx, direct),
            ratio(run.median_of("haproxy"), direct),
            ratio(run.median_of("bare-pingora"), direct),
            ratio(ug, direct),
        );
        paired(out, run);
        if run.rows.iter().any(|(n, _, _)| *n == "unitgate:auth") {
            let _ = writeln!(
                out,
                "\nAuth and quota ({}): unitgate:auth/unitgate **{:.2}** (the same gateway, \
                 a route with RS256 JWT auth and a per-user quota vs the plain route)",
                run.body,
                ratio(run.median_of("unitgate:auth"), ug),
            );
        }
    }
}

/// unitgate over each `--variant`, round by round, and the median of
/// those ratios. Both ran in the same round, seconds apart, so a machine
/// whose speed drifts over the run moves both alike: steadier than the
/// ratio of the medians.
fn paired(out: &mut String, run: &BodyRun) {
    let Some((_, ug, _)) = run.rows.iter().find(|(n, _, _)| *n == "unitgate") else {
        return;
    };
    let variants: Vec<_> = run
        .rows
        .iter()
        .filter(|(n, _, _)| n.starts_with("unitgate:") && *n != "unitgate:auth")
        .collect();
    for (name, v, _) in &variants {
        paired_line(out, run.body, "unitgate", ug, name, v);
    }
    // Each later variant over each earlier one (`--variant` order).
    for (i, (b_name, b, _)) in variants.iter().enumerate() {
        for (a_name, a, _) in &variants[i + 1..] {
            paired_line(out, run.body, a_name, a, b_name, b);
        }
    }
}

fn paired_line(out: &mut String, body: &str, a_name: &str, a: &[f64], b_name: &str, b: &[f64]) {
    let ratios = paired_ratios(a, b);
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let _ = writeln!(
        out,
        "\nPaired ({body}): {a_name}/{b_name} round by round {}, median **{:.2}**",
        shown.join(" / "),
        median(&ratios)
    );
}

/// `a[i] / b[i]` for each round both have.
pub fn paired_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| ratio(*x, *y)).collect()
}

/// One latency row: the load level, its rate, the target, the figures.
pub struct LatencyRow {
    pub level: u32,
    pub rate: u64,
    pub target: &'static str,
    pub lat: Latency,
}

/// The latency table, with p99 added over direct at the same rate.
pub fn latency(out: &mut String, rows: &[LatencyRow], secs: u64) {
    let _ = writeln!(
        out,
        "\n### Latency, open loop (oha -c64 --latency-correction, {secs} s per point, 1 KiB)\n"
    );
    let _ = writeln!(out, "| load | rate | target | p50 ms | p99 ms | p99.9 ms | p99 over direct | achieved req/s | errors |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let direct = rows
            .iter()
            .find(|d| d.rate == r.rate && d.target == "direct")
            .map(|d| d.lat.p99)
            .unwrap_or(0.0);
        let _ = writeln!(
            out,
            "| {}% | {} | {} | {:.3} | {:.3} | {:.3} | {:+.3} ms | {:.0} | {} |",
            r.level,
            r.rate,
            r.target,
            r.lat.p50,
            r.lat.p99,
            r.lat.p999,
            r.lat.p99 - direct,
            r.lat.rps,
            r.lat.errors
        );
    }
}

/// Resident memory of a proxy idle, holding the connections, after.
pub struct MemRow {
    pub target: &'static str,
    /// Connections held (fewer than asked where the proxy cannot take more).
    pub conns: usize,
    pub idle_kib: u64,
    pub held_kib: u64,
    pub after_kib: u64,
}

pub fn memory(out: &mut String, rows: &[MemRow], conns: usize) {
    let _ = writeln!(
        out,
        "\n### Memory with {conns} idle keep-alive connections (RSS)\n"
    );
    let _ = writeln!(
        out,
        "| proxy | connections held | before | holding | 3 s after closing | per connection |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for r in rows {
        let per = (r.held_kib.saturating_sub(r.idle_kib)) as f64 / r.conns.max(1) as f64;
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {per:.1} KiB |",
            r.target,
            r.conns,
            r.idle_kib as f64 / 1024.0,
            r.held_kib as f64 / 1024.0,
            r.after_kib as f64 / 1024.0,
        );
    }
}

/// The latency data file and a gnuplot script drawing p50/p99/p99.9 per
/// target against the load level; runs gnuplot when it is installed.
pub fn latency_plot(
    dir: &Path,
    rows: &[LatencyRow],
) -> std::io::Result<Option<std::path::PathBuf>> {
    let mut targets: Vec<&str> = Vec::new();
    for r in rows {
        if !targets.contains(&r.target) {
            targets.push(r.target);
        }
    }
    let mut data = String::new();
    for t in &targets {
        let _ = writeln!(data, "# {t}");
        for r in rows.iter().filter(|r| r.target == *t) {
            let _ = writeln!(
                data,
                "{} {} {:.4} {:.4} {:.4}",
                r.level, r.rate, r.lat.p50, r.lat.p99, r.lat.p999
            );
        }
        data.push_str("\n\n");
    }
    std::fs::write(dir.join("latency.dat"), data)?;
    let png = dir.join("latency.png");
    let mut script = format!(
        "set terminal png size 1500,520\nset output '{}'\n\
         set multiplot layout 1,3 title 'Latency by load (1 KiB, open loop, latency-corrected)'\n\
         set xlabel 'load (% of the slowest proxy maximum)'\nset ylabel 'ms'\n\
         set logscale y\nset grid\nset key top left\nset xrange [20:80]\n",
        png.display()
    );
    for (col, what) in [(3, "p50"), (4, "p99"), (5, "p99.9")] {
        let lines: Vec<String> = targets
            .iter()
            .enumerate()
            .map(|(idx, t)| {
                format!(
                    "'latency.dat' index {idx} using 1:{col} with linespoints lw 2 lc {} title '{t}'",
                    idx + 1
                )
            })
            .collect();
        let _ = writeln!(script, "set title '{what}'\nplot {}", lines.join(", "));
    }
    script.push_str("unset multiplot\n");
    std::fs::write(dir.join("latency.gp"), script)?;
    let ok = std::process::Command::new("gnuplot")
        .arg("latency.gp")
        .current_dir(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    Ok(ok.then_some(png))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratios_are_taken_round_by_round() {
        let r = paired_ratios(&[10.0, 20.0, 30.0], &[10.0, 10.0, 40.0]);
        assert_eq!(r, vec![1.0, 2.0, 0.75]);
        assert_eq!(median(&r), 1.0);
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(ratio(1.0, 4.0), 0.25);
    }
}
