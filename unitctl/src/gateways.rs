//! The registered gateways and how far each is: up to date, behind (since
//! when), or gone (its lease missed its heartbeats), judged against the
//! newest topology change; and waiting until every live gateway applied
//! a given revision (`drain --wait`, `undrain --wait`).

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use unit_router::spec::GatewaySpec;

use crate::store::Store;

/// A gateway's lease (`gateway/src/control/register.rs`): granted for 10 s
/// and renewed every 3 s, so a live gateway's lease never has less than
/// about 7 s left. Less than this means at least one renewal was missed.
const LIVE_TTL_LEFT_S: i64 = 5;

/// One registration, as read.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    pub id: String,
    #[serde(flatten)]
    pub spec: GatewaySpec,
    /// Seconds its lease has left (`None`: not under a lease or unknown).
    pub lease_ttl_left_s: Option<i64>,
}

/// How far a gateway is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Standing {
    UpToDate,
    /// Behind the newest change; `for_s`: since the first gateway applied
    /// it (about when it was made), when known.
    Behind {
        for_s: Option<i64>,
    },
    /// Its lease missed its renewals: stopped, paused or cut off; its key
    /// goes when the lease expires.
    Gone,
}

impl Standing {
    pub fn text(self) -> String {
        match self {
            Standing::UpToDate => "up to date".into(),
            Standing::Behind { for_s: Some(s) } => format!("behind (for {s}s)"),
            Standing::Behind { for_s: None } => "behind".into(),
            Standing::Gone => "gone (lease not renewed)".into(),
        }
    }
}

/// The gateways registered under the prefix, with their leases' time left.
pub async fn registered(store: &mut Store) -> Result<Vec<Registered>> {
    let mut out = Vec::new();
    for (id, spec, lease) in store.registrations().await? {
        let lease_ttl_left_s = match lease {
            0 => None,
            l => store.lease_ttl_left(l).await?,
        };
        out.push(Registered {
            id,
            spec,
            lease_ttl_left_s,
        });
    }
    Ok(out)
}

/// The newest topology change known: the newest revision of a topology
/// key, or the newest change a gateway applied if newer (a change that
/// only deleted keys leaves no key behind, but the gateways that applied
/// it say its revision). Never a gateway's epoch: one taken by a list is
/// etcd's revision then, which registrations move too.
pub fn newest(topology_rev: i64, gateways: &[Registered]) -> i64 {
    gateways
        .iter()
        .map(|g| g.spec.change_revision)
        .fold(topology_rev, i64::max)
}

/// How far `g` is against the newest change `newest`, at `now` (Unix s).
pub fn standing(g: &Registered, newest: i64, gateways: &[Registered], now: i64) -> Standing {
    if g.lease_ttl_left_s.is_some_and(|t| t < LIVE_TTL_LEFT_S) {
        return Standing::Gone;
    }
    if g.spec.applied_epoch >= newest {
        return Standing::UpToDate;
    }
    let first = gateways
        .iter()
        .filter(|o| o.spec.applied_epoch >= newest)
        .filter_map(|o| unix(&o.spec.applied_at))
        .min();
    Standing::Behind {
        for_s: first.map(|t| (now - t).max(0)),
    }
}

fn unix(rfc3339: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

/// The end of a wait.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// Every registered gateway applied the revision (`n` of them).
    All(usize),
    /// The time ran out: these had not.
    TimedOut(Vec<String>),
}

/// Wait until every registered gateway applied `revision`, at most
/// `timeout`, saying the progress on stderr when it changes. A gateway
/// whose registration goes (its lease expired, or it stopped) is no longer
/// waited for; one that only missed its renewals still is.
pub async fn wait_applied(store: &mut Store, revision: i64, timeout: Duration) -> Result<Waited> {
    let until = Instant::now() + timeout;
    let mut said = None;
    loop {
        let gateways = store.registrations().await?;
        let behind: Vec<String> = gateways
            .iter()
            .filter(|(_, g, _)| g.applied_epoch < revision)
            .map(|(id, g, _)| format!("{id} (applied {})", g.applied_epoch))
            .collect();
        let progress = (gateways.len() - behind.len(), gateways.len());
        if said != Some(progress) {
            eprintln!(
                "waiting: {}/{} gateways applied revision {revision}",
                progress.0, progress.1
            );
            said = Some(progress);
        }
        if behind.is_empty() {
            return Ok(Waited::All(gateways.len()));
        }
        if Instant::now() >= until {
            return Ok(Waited::TimedOut(behind));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(id: &str, applied: i64, at: &str, ttl: Option<i64>) -> Registered {
        Registered {
            id: id.into(),
            spec: GatewaySpec {
                applied_epoch: applied,
                change_revision: applied,
                applied_at: at.into(),
                ..GatewaySpec::default()
            },
            lease_ttl_left_s: ttl,
        }
    }

    #[test]
    fn a_delete_only_change_is_seen_through_the_gateways_that_applied_it() {
        // Topology keys last changed at 10; an undrain (a delete) at 12,
        // applied by one gateway only.
        let gws = [
            gw("a", 12, "2026-12-07T10:00:00Z", Some(9)),
            gw("b", 10, "2026-12-07T09:00:00Z", Some(8)),
            gw("c", 12, "2026-12-07T10:00:05Z", Some(3)),
        ];
        let newest = newest(10, &gws);
        assert_eq!(newest, 12);
        let now = unix("2026-12-07T10:00:30Z").unwrap();
        assert_eq!(standing(&gws[0], newest, &gws, now), Standing::UpToDate);
        assert_eq!(
            standing(&gws[1], newest, &gws, now),
            Standing::Behind { for_s: Some(30) }
        );
        assert_eq!(standing(&gws[2], newest, &gws, now), Standing::Gone);
        assert_eq!(
            Standing::Behind { for_s: Some(30) }.text(),
            "behind (for 30s)"
        );
        // A gateway that listed at revision 20 (registrations moved it)
        // after the change at 12: up to date, and no one is behind it.
        let mut listed = gw("d", 20, "2026-12-07T10:00:20Z", Some(9));
        listed.spec.change_revision = 12;
        let gws = [gws[0].clone(), listed];
        let newest = super::newest(10, &gws);
        assert_eq!(newest, 12);
        assert!(gws
            .iter()
            .all(|g| standing(g, newest, &gws, now) == Standing::UpToDate));
    }
}
