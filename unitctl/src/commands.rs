//! The commands. Each returns the process exit code.

use anyhow::{anyhow, bail, Result};
use config_center::kv::Kv;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use unit_router::drain::{units_of, would_strand};
use unit_router::spec::{DrainSpec, UnitKind};
use unit_router::{decide, AllHealthy, DrainTarget, Facts, Here, Listener, RouteError, Topology};
use unitgate_geo::{GeoLookup, MmdbGeo};

use crate::cli::{Cli, Command, ExplainArgs, Kind, ListenerArg, Target};
use crate::store::{read_file, read_topology, Store};

/// Keys written at run time, never touched by `apply --prune`.
const RUNTIME: [&str; 3] = ["drain/", "gateways/", "instances/"];
/// Attempts of a read-check-write when etcd changed in between.
const ATTEMPTS: usize = 3;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub async fn run(cli: Cli) -> Result<i32> {
    let t = &cli.target;
    match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Apply { file, prune } => apply(t, &file, prune).await,
        Command::Drain {
            kind,
            name,
            reason,
            ttl,
            force,
        } => drain(t, kind, &name, reason, ttl, force).await,
        Command::Undrain { kind, name } => undrain(t, kind, &name).await,
        Command::Status => status(t).await,
        Command::Explain(a) => explain(t, &a).await,
        Command::Token(a) => crate::auth::token(&a, now()),
    }
}

fn build(epoch: i64, kv: &Kv) -> Result<Topology> {
    Topology::build(epoch, kv, now()).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
        anyhow!(
            "{} problem(s) in the topology:\n{}",
            errs.0.len(),
            lines.join("\n")
        )
    })
}

fn summary(t: &Topology) -> String {
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

async fn apply(t: &Target, file: &std::path::Path, prune: bool) -> Result<i32> {
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

async fn drain(
    t: &Target,
    kind: Kind,
    name: &str,
    reason: String,
    ttl: Option<std::time::Duration>,
    force: bool,
) -> Result<i32> {
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
                return Ok(1);
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
                return Ok(0);
            }
            // Something under the prefix changed since the read: read again.
            None => continue,
        }
    }
    Err(store.conflict())
}

async fn undrain(t: &Target, kind: Kind, name: &str) -> Result<i32> {
    let key = target_of(kind, name).key();
    let mut store = Store::open(t).await?;
    for _ in 0..ATTEMPTS {
        let (rev, kv) = store.list().await?;
        if !kv.contains_key(&key) {
            println!("{key} is not set: {name} is not drained");
            return Ok(0);
        }
        match store.commit(rev, &[], std::slice::from_ref(&key)).await? {
            Some(new_rev) => {
                println!("undrained {name}: deleted {key} at revision {new_rev}");
                return Ok(0);
            }
            // Something under the prefix changed since the read: read again.
            None => continue,
        }
    }
    Err(store.conflict())
}

fn ranges_text(r: &[(u32, u32)]) -> String {
    r.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

async fn status(t: &Target) -> Result<i32> {
    let (rev, kv, from) = read_topology(t).await?;
    let topo = build(rev, &kv)?;
    let now = now();
    println!("topology  {from}");
    println!("epoch     {rev}");
    println!("summary   {}", summary(&topo));
    let ranges = topo.shard_ranges();
    for (ri, region) in topo.regions.iter().enumerate() {
        println!(
            "region {}  entries: {}",
            region.name,
            region.entries.join(", ")
        );
        for (di, dc) in topo.dcs.iter().enumerate() {
            if dc.region.index() == ri {
                print_dc(&topo, di, &ranges, now);
            }
        }
    }
    println!("shards");
    for (a, b, u) in &ranges {
        println!("  {a:>5}-{b:<5} {}", topo.unit(*u).name);
    }
    if !topo.drains.is_empty() {
        println!("drains");
        for d in &topo.drains {
            let state = if d.in_force(now) {
                "in force"
            } else {
                "expired"
            };
            println!("  {}  {state}{}", d.key, drain_note(d));
        }
    }
    for n in &topo.notices {
        println!("notice  {n}");
    }
    print_gateways(t, &topo, rev).await?;
    Ok(0)
}

/// One datacenter of `status`: its drain state and its units.
fn print_dc(topo: &Topology, di: usize, ranges: &[(u32, u32, unit_router::UnitId)], now: i64) {
    let dc = &topo.dcs[di];
    let dc_id = unit_router::DcId(di as u16);
    let dc_drain = topo
        .drains
        .iter()
        .find(|d| d.target == DrainTarget::Dc(dc.name.clone()));
    let state = match dc_drain {
        Some(d) if d.in_force(now) && topo.is_dc_drained(dc_id, now) => {
            format!("DRAINED{}", drain_note(d))
        }
        Some(d) if d.in_force(now) => format!("DRAIN PARTLY APPLIED{}", drain_note(d)),
        Some(_) => "active (drain expired)".into(),
        None => "active".into(),
    };
    println!("  dc {}  {state}", dc.name);
    for (ui, u) in topo.units.iter().enumerate() {
        if u.dc.index() == di {
            print_unit(topo, unit_router::UnitId(ui as u16), ranges, now);
        }
    }
}

/// One unit of `status`: kind, shards, services and drain state.
fn print_unit(
    topo: &Topology,
    id: unit_router::UnitId,
    ranges: &[(u32, u32, unit_router::UnitId)],
    now: i64,
) {
    let u = topo.unit(id);
    let owned: Vec<(u32, u32)> = ranges
        .iter()
        .filter(|r| r.2 == id)
        .map(|r| (r.0, r.1))
        .collect();
    let count: u32 = owned.iter().map(|(a, b)| b - a + 1).sum();
    let kind = match u.kind {
        UnitKind::Shard if owned.is_empty() => format!("shard  shards - ({count})"),
        UnitKind::Shard => format!("shard  shards {} ({count})", ranges_text(&owned)),
        UnitKind::Center => "center".into(),
    };
    let state = match &u.drain {
        Some(d) if d.in_force(now) => format!("DRAINED by {}", d.key),
        _ => "active".into(),
    };
    let services: Vec<&str> = topo
        .services
        .iter()
        .enumerate()
        .filter(|(s, _)| u.runs(unit_router::ServiceId(*s as u16)))
        .map(|(_, n)| n.as_str())
        .collect();
    println!(
        "    unit {:<8} {kind}  services {}  {state}",
        u.name,
        services.join(",")
    );
}

/// The gateways of `status`, each judged against the newest topology change.
async fn print_gateways(t: &Target, topo: &Topology, rev: i64) -> Result<()> {
    if topo.gateways.is_empty() {
        println!("gateways  none registered");
        return Ok(());
    }
    println!("gateways");
    // Registrations bump the revision too: compare with the newest
    // revision that changed a topology key.
    let topo_rev = if t.file.is_none() {
        Store::open(t).await?.topology_revision().await?
    } else {
        rev
    };
    for (id, g) in &topo.gateways {
        let lag = if g.applied_epoch >= topo_rev {
            "up to date".to_owned()
        } else {
            format!("behind (topology changed at {topo_rev})")
        };
        println!(
            "  {id}  region {} dc {}  applied epoch {} {lag}  version {}  since {}",
            g.region, g.dc, g.applied_epoch, g.version, g.started_at
        );
    }
    Ok(())
}

fn drain_note(d: &unit_router::Drain) -> String {
    let mut parts = Vec::new();
    if !d.reason.is_empty() {
        parts.push(format!("reason {:?}", d.reason));
    }
    if !d.by.is_empty() {
        parts.push(format!("by {}", d.by));
    }
    if let Some(u) = d.until {
        let at = OffsetDateTime::from_unix_timestamp(u)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        parts.push(format!("until {at}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// The cookie and hint a public client gets, as the gateway renders them.
fn print_affinity(topo: &Topology, d: &unit_router::Decision, hint_ttl: u64) {
    let Some(a) = d.affinity else {
        println!("cookie    none (no routing token for this route and listener)");
        return;
    };
    let unit = &topo.unit(a.unit).name;
    let shard = a.shard.map_or("none".to_owned(), |s| s.to_string());
    if a.token_fresh {
        println!("cookie    keep the client's token (shard {shard}, unit {unit})");
    } else {
        let value = format!("<token shard {shard}, unit {unit}>");
        println!(
            "cookie    {}",
            unit_router::token::set_cookie(&value, topo.cluster.token_ttl_s)
        );
    }
    match d.hint() {
        Some(u) => println!("hint      {}", unit_router::hint_value(topo, u, hint_ttl)),
        None => println!("hint      none"),
    }
}

/// The client's location from `--ip` and `--geo-db`, printed as found.
fn locate_ip(a: &ExplainArgs) -> Result<Option<unitgate_geo::Location>> {
    let Some(ip) = a.ip else { return Ok(None) };
    let path = a.geo_db.as_ref().ok_or_else(|| {
        anyhow!("--ip needs --geo-db PATH (a GeoIP2/GeoLite2 or ip-location-db mmdb file)")
    })?;
    let geo = MmdbGeo::open(path)?;
    let loc = geo.locate(ip);
    match loc.and_then(|l| l.country().map(str::to_owned)) {
        Some(c) => println!(
            "client    {ip}: country {c}{}",
            loc.and_then(|l| l.subdivision().map(|s| format!(", subdivision {s}")))
                .unwrap_or_default()
        ),
        None => println!("client    {ip}: not in {}", path.display()),
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
    topo: &Topology,
    d: &unit_router::Decision,
    a: &ExplainArgs,
    claim_user: Option<&str>,
) {
    let r = topo.routes.get(d.route);
    println!(
        "route     {} (policy {}, service {}, auth {})",
        r.name,
        format!("{:?}", r.policy).to_lowercase(),
        r.service_name,
        format!("{:?}", r.auth).to_lowercase()
    );
    let key = match (claim_user.or(a.user.as_deref()), d.shard) {
        (Some(u), Some(s)) if claim_user.is_some() => format!("token user {u:?} -> shard {s}"),
        (Some(u), Some(s)) => format!("user {u:?} -> shard {s}"),
        (None, Some(s)) => format!("shard {s}"),
        _ => "no user key".into(),
    };
    println!("key       {key}");
    println!("home      {}", place(topo, d.home));
    println!("target    {}", place(topo, d.target));
    println!("reason    {}", d.reason.as_str());
    println!("hops      {}", d.hops);
    print_affinity(topo, d, a.hint_ttl);
}

async fn explain(t: &Target, a: &ExplainArgs) -> Result<i32> {
    let (rev, kv, from) = read_topology(t).await?;
    let topo = build(rev, &kv)?;
    let listener = match a.listener {
        ListenerArg::Public => Listener::Public,
        ListenerArg::Internal => Listener::Internal,
    };
    if let Some(dc) = &a.dc {
        check_exists(&topo, Kind::Dc, dc)?;
    }
    let located = locate_ip(a)?;
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
                println!("token     expired: ignored, as the gateway ignores it");
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
    println!("topology  {from}, epoch {rev}");
    match decide(&topo, &facts, &AllHealthy) {
        Ok(d) => {
            print_decision(&topo, &d, a, claim_user.as_deref());
            crate::auth::print(&topo, topo.routes.get(d.route), claims.as_ref(), now());
            Ok(0)
        }
        Err(RouteError::NoRoute) => {
            println!(
                "no route matches {} {}{} on the {} listener (the gateway answers 404)",
                a.method,
                a.host,
                a.path,
                format!("{:?}", a.listener).to_lowercase()
            );
            Ok(2)
        }
        Err(e) => {
            println!("{e} (the gateway answers 503)");
            Ok(3)
        }
    }
}
