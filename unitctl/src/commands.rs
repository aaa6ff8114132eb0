//! The commands. Each returns the process exit code.

use anyhow::{anyhow, bail, Result};
use config_center::kv::Kv;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use unit_router::drain::{units_of, would_strand};
use unit_router::spec::DrainSpec;
use unit_router::{decide, AllHealthy, DrainTarget, Facts, Here, Listener, RouteError, Topology};
use unitgate_geo::{GeoLookup, MmdbGeo};

use crate::cli::{Cli, Command, ExplainArgs, Kind, ListenerArg, Output, Target, Wait};
use crate::gateways::{self as gws, Waited};
use crate::report::Report;
use crate::store::{read_file, read_topology, Store};

/// Keys written at run time, never touched by `apply --prune`.
const RUNTIME: [&str; 3] = ["drain/", "gateways/", "instances/"];
/// Attempts of a read-check-write when etcd changed in between.
const ATTEMPTS: usize = 3;

pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub async fn run(cli: Cli) -> Result<i32> {
    let t = &cli.target;
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Apply {
            file,
            prune,
            dry_run,
        } => apply(t, &file, prune, dry_run).await,
        Command::Drain {
            kind,
            name,
            reason,
            ttl,
            force,
            wait,
        } => {
            let written = drain(t, kind, &name, reason, ttl, force).await?;
            waited(t, written, wait).await
        }
        Command::Undrain { kind, name, wait } => {
            let written = undrain(t, kind, &name).await?;
            waited(t, written, wait).await
        }
        Command::Status { output } => crate::status::status(t, output).await,
        Command::Explain { args, output } => explain(t, &args, output).await,
        Command::Token(a) => crate::auth::token(&a, now()),
        Command::EtcdSetup(a) => crate::etcd_setup::etcd_setup(t, &a).await,
    }
}

pub fn build(epoch: i64, kv: &Kv) -> Result<Topology> {
    Topology::build(epoch, kv, now()).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
        anyhow!(
            "{} problem(s) in the topology:\n{}",
            errs.0.len(),
            lines.join("\n")
        )
    })
}

pub fn summary(t: &Topology) -> String {
    let routes = t.routes.routes().len();
    format!(
        "{} regions, {} datacenters, {} units, {} services, {} shards, {} routes",
        t.regions.len(),
        t.dcs.len(),
        t.units.len(),
        t.services.len(),
        t.cluster.shards,
        routes
    )
}

fn validate(file: &std::path::Path) -> Result<i32> {
    let kv = read_file(file)?;
    match Topology::build(0, &kv, now()) {
        Ok(t) => {
            println!("{}: valid: {}", file.display(), summary(&t));
            for n in &t.notices {
                println!("  notice: {n}");
            }
            Ok(0)
        }
        Err(errs) => {
            eprintln!("{}: {} problem(s):", file.display(), errs.0.len());
            for e in errs.iter() {
                eprintln!("  {e}");
            }
            Ok(1)
        }
    }
}

fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

async fn apply(t: &Target, file: &std::path::Path, prune: bool, dry_run: bool) -> Result<i32> {
    let wanted = read_file(file)?;
    if let Some(k) = wanted
        .keys()
        .find(|k| RUNTIME.iter().any(|r| k.starts_with(r)))
    {
        bail!("{}: key {k} is written at run time (drain with `unitctl drain`); remove it from the file", file.display());
    }
    // The file alone must be valid before anything is read from etcd.
    build(0, &wanted)?;
    let mut store = Store::open(t).await?;
    for _ in 0..ATTEMPTS {
        let (rev, current) = store.list().await?;
        let mut result = current.clone();
        let mut deletes = Vec::new();
        if prune {
            for k in current.keys() {
                if !wanted.contains_key(k) && !RUNTIME.iter().any(|r| k.starts_with(r)) {
                    deletes.push(k.clone());
                    result.remove(k);
                }
            }
        }
        let mut puts = Vec::new();
        for (k, v) in &wanted {
            if current.get(k).is_none_or(|c| !same_json(c, v)) {
                puts.push((k.clone(), v.clone()));
            }
            result.insert(k.clone(), v.clone());
        }
        // What etcd will hold (file + drains + registrations) must be valid too.
        build(rev + 1, &result)?;
        if puts.is_empty() && deletes.is_empty() {
            println!(
                "no changes: etcd {} already matches {} (revision {rev})",
                store.prefix,
                file.display()
            );
            return Ok(0);
        }
        for (k, _) in &puts {
            let mark = if current.contains_key(k) { '~' } else { '+' };
            println!("{mark} {k}");
        }
        for k in &deletes {
            println!("- {k}");
        }
        if dry_run {
            println!(
                "dry run: {} to add, {} to change, {} to remove under {} (revision {rev}); nothing written",
                puts.iter().filter(|(k, _)| !current.contains_key(k)).count(),
                puts.iter().filter(|(k, _)| current.contains_key(k)).count(),
                deletes.len(),
                store.prefix
            );
            return Ok(0);
        }
        match store.commit(rev, &puts, &deletes).await? {
            Some(new_rev) => {
                println!(
                    "applied {}: {} put, {} deleted under {} in one transaction (revision {new_rev})",
                    file.display(),
                    puts.len(),
                    deletes.len(),
                    store.prefix
                );
                return Ok(0);
            }
            // Something under the prefix changed since the read: read again.
            None => continue,
        }
    }
    Err(store.conflict())
}

fn target_of(kind: Kind, name: &str) -> DrainTarget {
    match kind {
        Kind::Dc => DrainTarget::Dc(name.to_owned()),
        Kind::Unit => DrainTarget::Unit(name.to_owned()),
    }
}

fn check_exists(topo: &Topology, kind: Kind, name: &str) -> Result<()> {
    let (exists, known): (bool, Vec<&str>) = match kind {
        Kind::Dc => (
            topo.dc_id(name).is_some(),
            topo.dcs.iter().map(|d| d.name.as_str()).collect(),
        ),
        Kind::Unit => (
            topo.unit_id(name).is_some(),
            topo.units.iter().map(|u| u.name.as_str()).collect(),
        ),
    };
    if !exists {
        let what = if kind == Kind::Dc {
            "datacenter"
        } else {
            "unit"
        };
        bail!("unknown {what} {name:?} (known: {})", known.join(", "));
    }
    Ok(())
}

fn whoami() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// What a change did: the exit code, and the revision the gateways are to
/// reach (`None`: nothing was written and nothing is to be waited for).
struct Written {
    code: i32,
    revision: Option<i64>,
}

impl Written {
    fn refused() -> Self {
        Written {
            code: 1,
            revision: None,
        }
    }

    fn at(revision: i64) -> Self {
        Written {
            code: 0,
            revision: Some(revision),
        }
    }
}

/// With `--wait`, wait until every registered gateway applied what was
/// written: 0, or 3 naming those that had not within `--timeout`.
async fn waited(t: &Target, w: Written, wait: Wait) -> Result<i32> {
    let (Some(rev), true, 0) = (w.revision, wait.wait, w.code) else {
        return Ok(w.code);
    };
    let mut store = Store::open(t).await?;
    match gws::wait_applied(&mut store, rev, wait.timeout).await? {
        Waited::All(n) => {
            println!("applied by every registered gateway ({n}) at revision {rev}");
            Ok(0)
        }
        Waited::TimedOut(behind) => {
            eprintln!(
                "unitctl: timed out after {}: not at revision {rev}: {}",
                humantime::format_duration(wait.timeout),
                behind.join(", ")
            );
            Ok(3)
        }
    }
}

async fn drain(
    t: &Target,
    kind: Kind,
    name: &str,
    reason: String,
    ttl: Option<std::time::Duration>,
    force: bool,
) -> Result<Written> {
    let target = target_of(kind, name);
    let key = target.key();
    let mut store = Store::open(t).await?;
    for _ in 0..ATTEMPTS {
        let (rev, kv) = store.list().await?;
        let topo = build(rev, &kv)
            .map_err(|e| anyhow!("the topology in etcd is invalid, fix it first: {e}"))?;
        check_exists(&topo, kind, name)?;
        let now = now();
        let lost = would_strand(&topo, &target, now);
        if !lost.is_empty() {
            if !force {
                eprintln!(
                    "unitctl: refusing to write {key}: it would leave {lost} without a unit (units {}); use --force to write it anyway (gateways then keep the last unit active)",
                    units_of(&topo, &target).iter().map(|&u| topo.unit(u).name.as_str()).collect::<Vec<_>>().join(", ")
                );
                return Ok(Written::refused());
            }
            eprintln!(
                "warning: {key} leaves {lost} without a unit; gateways keep the last unit active"
            );
        }
        let until = ttl
            .map(|d| {
                let at = OffsetDateTime::now_utc() + d;
                at.replace_nanosecond(0).unwrap_or(at).format(&Rfc3339)
            })
            .transpose()?;
        let spec = DrainSpec {
            reason: reason.clone(),
            by: whoami(),
            until: until.clone(),
        };
        let value = serde_json::to_string(&spec)?;
        match store.commit(rev, &[(key.clone(), value)], &[]).await? {
            Some(new_rev) => {
                let names: Vec<&str> = units_of(&topo, &target)
                    .iter()
                    .map(|&u| topo.unit(u).name.as_str())
                    .collect();
                println!(
                    "drained {} {name} (units: {}) at revision {new_rev}{}",
                    if kind == Kind::Dc { "dc" } else { "unit" },
                    names.join(", "),
                    until.map(|u| format!(", until {u}")).unwrap_or_default()
                );
                return Ok(Written::at(new_rev));
            }
            // Something under the prefix changed since the read: read again.
            None => continue,
        }
    }
    Err(store.conflict())
}

async fn undrain(t: &Target, kind: Kind, name: &str) -> Result<Written> {
    let key = target_of(kind, name).key();
    let mut store = Store::open(t).await?;
    for _ in 0..ATTEMPTS {
        let (rev, kv) = store.list().await?;
        if !kv.contains_key(&key) {
            println!("{key} is not set: {name} is not drained");
            // Its delete may not have reached every gateway yet: the
            // newest change known is what to wait for.
            let topology = store.topology_revision().await?;
            let gateways = gws::registered(&mut store).await?;
            return Ok(Written::at(gws::newest(topology, &gateways)));
        }
        match store.commit(rev, &[], std::slice::from_ref(&key)).await? {
            Some(new_rev) => {
                println!("undrained {name}: deleted {key} at revision {new_rev}");
                return Ok(Written::at(new_rev));
            }
            // Something under the prefix changed since the read: read again.
            None => continue,
        }
    }
    Err(store.conflict())
}

/// The cookie and hint a public client gets, as the gateway renders them.
fn print_affinity(out: &mut Report, topo: &Topology, d: &unit_router::Decision, hint_ttl: u64) {
    let Some(a) = d.affinity else {
        out.add(
            "cookie",
            "none (no routing token for this route and listener)",
        );
        return;
    };
    let unit = &topo.unit(a.unit).name;
    let shard = a.shard.map_or("none".to_owned(), |s| s.to_string());
    if a.token_fresh {
        out.add(
            "cookie",
            format!("keep the client's token (shard {shard}, unit {unit})"),
        );
    } else {
        let value = format!("<token shard {shard}, unit {unit}>");
        out.add(
            "cookie",
            unit_router::token::set_cookie(&value, topo.cluster.token_ttl_s).to_string(),
        );
    }
    match d.hint() {
        Some(u) => out.add(
            "hint",
            unit_router::hint_value(topo, u, hint_ttl).to_string(),
        ),
        None => out.add("hint", "none"),
    }
}

/// The client's location from `--ip` and `--geo-db`, printed as found.
fn locate_ip(out: &mut Report, a: &ExplainArgs) -> Result<Option<unitgate_geo::Location>> {
    let Some(ip) = a.ip else { return Ok(None) };
    let path = a.geo_db.as_ref().ok_or_else(|| {
        anyhow!("--ip needs --geo-db PATH (a GeoIP2/GeoLite2 or ip-location-db mmdb file)")
    })?;
    let geo = MmdbGeo::open(path)?;
    let loc = geo.locate(ip);
    match loc.and_then(|l| l.country().map(str::to_owned)) {
        Some(c) => out.add(
            "client",
            format!(
                "{ip}: country {c}{}",
                loc.and_then(|l| l.subdivision().map(|s| format!(", subdivision {s}")))
                    .unwrap_or_default()
            ),
        ),
        None => out.add("client", format!("{ip}: not in {}", path.display())),
    }
    Ok(loc)
}

/// A unit with its dc and region.
fn place(topo: &Topology, u: unit_router::UnitId) -> String {
    let unit = topo.unit(u);
    let dc = &topo.dcs[unit.dc.index()];
    format!(
        "{} (dc {}, region {})",
        unit.name,
        dc.name,
        topo.regions[dc.region.index()].name
    )
}

/// The decision as `explain` prints it.
fn print_decision(
    out: &mut Report,
    topo: &Topology,
    d: &unit_router::Decision,
    a: &ExplainArgs,
    claim_user: Option<&str>,
) {
    let r = topo.routes.get(d.route);
    out.add(
        "route",
        format!(
            "{} (policy {}, service {}, auth {})",
            r.name,
            format!("{:?}", r.policy).to_lowercase(),
            r.service_name,
            format!("{:?}", r.auth).to_lowercase()
        ),
    );
    let key = match (claim_user.or(a.user.as_deref()), d.shard) {
        (Some(u), Some(s)) if claim_user.is_some() => format!("token user {u:?} -> shard {s}"),
        (Some(u), Some(s)) => format!("user {u:?} -> shard {s}"),
        (None, Some(s)) => format!("shard {s}"),
        _ => "no user key".into(),
    };
    out.add("key", key.clone());
    out.add("home", place(topo, d.home).to_string());
    out.add("target", place(topo, d.target).to_string());
    out.add("reason", d.reason.as_str().to_string());
    out.add("hops", d.hops.to_string());
    print_affinity(out, topo, d, a.hint_ttl);
}

async fn explain(t: &Target, a: &ExplainArgs, output: Output) -> Result<i32> {
    let mut report = Report::default();
    let code = explained(&mut report, t, a).await?;
    report.print(output);
    Ok(code)
}

/// What `explain` says, into `out`; the exit code (1: the gateway would
/// refuse the request).
async fn explained(out: &mut Report, t: &Target, a: &ExplainArgs) -> Result<i32> {
    let (rev, kv, from) = read_topology(t).await?;
    let topo = build(rev, &kv)?;
    let listener = match a.listener {
        ListenerArg::Public => Listener::Public,
        ListenerArg::Internal => Listener::Internal,
    };
    if let Some(dc) = &a.dc {
        check_exists(&topo, Kind::Dc, dc)?;
    }
    let located = locate_ip(out, a)?;
    let country = located
        .as_ref()
        .and_then(|l| l.country())
        .or(a.country.as_deref());
    let subdivision = located
        .as_ref()
        .and_then(|l| l.subdivision())
        .or(a.subdivision.as_deref());
    let token = match &a.token {
        Some(t) => {
            let tok = unit_router::RouteToken::decode_unverified(t)
                .map_err(|e| anyhow!("--token: not a routing token ({e})"))?;
            if tok.exp <= now() {
                out.add("token", "expired: ignored, as the gateway ignores it");
                None
            } else {
                Some(tok)
            }
        }
        None => None,
    };
    let claims = a.jwt.as_deref().map(crate::auth::claims_of).transpose()?;
    let route = topo.routes.find(&a.host, &a.path, &a.method, listener);
    let claim_user = match (route, &claims) {
        (Some(r), Some(c)) => crate::auth::claim_user(&topo, topo.routes.get(r), c),
        _ => None,
    };
    let facts = Facts {
        claim_user: claim_user.as_deref(),
        header_user: a.user.as_deref(),
        token: token.as_ref(),
        country,
        subdivision,
        here: Here::resolve(&topo, a.region.as_deref(), a.dc.as_deref()),
        ..Facts::new(listener, &a.host, &a.path, &a.method, now())
    };
    out.add("topology", format!("{from}, epoch {rev}"));
    match decide(&topo, &facts, &AllHealthy) {
        Ok(d) => {
            print_decision(out, &topo, &d, a, claim_user.as_deref());
            crate::auth::print(out, &topo, topo.routes.get(d.route), claims.as_ref(), now());
            Ok(0)
        }
        Err(RouteError::NoRoute) => {
            out.add(
                "refused",
                format!(
                    "no route matches {} {}{} on the {} listener (the gateway answers 404)",
                    a.method,
                    a.host,
                    a.path,
                    format!("{:?}", a.listener).to_lowercase()
                ),
            );
            Ok(1)
        }
        Err(e) => {
            out.add("refused", format!("{e} (the gateway answers 503)"));
            Ok(1)
        }
    }
}
