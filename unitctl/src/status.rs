//! `status`: the topology in force (regions, datacenters, units, shard
//! ownership, drains) and the registered gateways, as text or JSON.

use anyhow::Result;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use unit_router::spec::UnitKind;
use unit_router::{DrainTarget, Topology};

use crate::cli::{Output, Target};
use crate::commands::{build, now, summary};
use crate::gateways as gws;
use crate::store::{read_topology, Store};

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

/// `status`: the topology in force, its drains and how far every
/// registered gateway is, as text or (`-o json`) one JSON document.
pub async fn status(t: &Target, output: Output) -> Result<i32> {
    let (rev, kv, from) = read_topology(t).await?;
    let topo = build(rev, &kv)?;
    let now = now();
    let gateways = Gateways::read(t, &topo, rev).await?;
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json(&topo, rev, &from, &gateways, now))?
        );
        return Ok(0);
    }
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
    gateways.print(now);
    Ok(0)
}

/// `status -o json`.
fn json(topo: &Topology, rev: i64, from: &str, g: &Gateways, now: i64) -> serde_json::Value {
    let drains: Vec<_> = topo
        .drains
        .iter()
        .map(|d| {
            serde_json::json!({
                "key": d.key,
                "in_force": d.in_force(now),
                "reason": d.reason,
                "by": d.by,
                "until": d.until,
            })
        })
        .collect();
    let gateways: Vec<_> = g
        .list
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if let (Some(o), Ok(serde_json::Value::Object(s))) = (
                v.as_object_mut(),
                serde_json::to_value(gws::standing(r, g.newest, &g.list, now)),
            ) {
                o.extend(s);
            }
            v
        })
        .collect();
    serde_json::json!({
        "topology": from,
        "epoch": rev,
        "newest_change_revision": g.newest,
        "summary": summary(topo),
        "drains": drains,
        "notices": topo.notices,
        "gateways": gateways,
    })
}

/// The registered gateways and the newest change they are judged against.
struct Gateways {
    list: Vec<gws::Registered>,
    newest: i64,
}

impl Gateways {
    /// From etcd (leases included); from a file, what it lists.
    async fn read(t: &Target, topo: &Topology, rev: i64) -> Result<Self> {
        if t.file.is_some() {
            let list: Vec<_> = topo
                .gateways
                .iter()
                .map(|(id, spec)| gws::Registered {
                    id: id.clone(),
                    spec: spec.clone(),
                    lease_ttl_left_s: None,
                })
                .collect();
            let newest = gws::newest(rev, &list);
            return Ok(Gateways { list, newest });
        }
        let mut store = Store::open(t).await?;
        // Registrations bump the revision too: the newest change is the
        // newest revision of a topology key, or a gateway's if newer.
        let topology = store.topology_revision().await?;
        let list = gws::registered(&mut store).await?;
        let newest = gws::newest(topology, &list);
        Ok(Gateways { list, newest })
    }

    fn print(&self, now: i64) {
        if self.list.is_empty() {
            println!("gateways  none registered");
            return;
        }
        println!("gateways  (newest change: revision {})", self.newest);
        for g in &self.list {
            let s = &g.spec;
            println!(
                "  {}  region {} dc {}  applied epoch {} {}  version {}  since {}",
                g.id,
                s.region,
                s.dc,
                s.applied_epoch,
                gws::standing(g, self.newest, &self.list, now).text(),
                s.version,
                s.started_at
            );
        }
    }
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
