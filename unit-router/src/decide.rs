//! The routing decision: a pure function of (topology snapshot, request facts,
//! health view). DESIGN.md "Routing" steps 1-6.

use crate::dye::Dye;
use crate::health::HealthView;
use crate::ids::{DcId, RegionId, RouteId, ServiceId, UnitId};
use crate::routes::Listener;
use crate::spec::{Policy, UnitKind};
use crate::token::RouteToken;
use crate::topology::Topology;

/// Where the deciding gateway runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Here {
    pub region: Option<RegionId>,
    pub dc: Option<DcId>,
}

impl Here {
    /// Resolve names against a snapshot (unknown names resolve to `None`).
    pub fn resolve(topo: &Topology, region: Option<&str>, dc: Option<&str>) -> Self {
        let dc = dc.and_then(|d| topo.dc_id(d));
        let region = region
            .and_then(|r| topo.region_id(r))
            .or_else(|| dc.map(|d| topo.dcs[d.index()].region));
        Here { region, dc }
    }
}

/// Everything the router needs to know about one request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub listener: Listener,
    pub host: &'a str,
    /// Path (a query string is tolerated).
    pub path: &'a str,
    pub method: &'a str,
    /// User key from a verified JWT claim.
    pub claim_user: Option<&'a str>,
    /// A verified, unexpired routing token.
    pub token: Option<&'a RouteToken>,
    /// Value of the `cluster.user_header` header.
    pub header_user: Option<&'a str>,
    /// The client's ISO country and subdivision (`CN-BJ`), from GeoIP.
    pub country: Option<&'a str>,
    pub subdivision: Option<&'a str>,
    /// A verified dye (internal listener only).
    pub dye: Option<&'a Dye>,
    /// Units already tried for this request.
    pub exclude: &'a [UnitId],
    pub here: Here,
    /// Unix seconds.
    pub now: i64,
}

impl<'a> Facts<'a> {
    /// Facts with only the request line; everything else empty.
    pub fn new(
        listener: Listener,
        host: &'a str,
        path: &'a str,
        method: &'a str,
        now: i64,
    ) -> Self {
        Facts {
            listener,
            host,
            path,
            method,
            claim_user: None,
            token: None,
            header_user: None,
            country: None,
            subdivision: None,
            dye: None,
            exclude: &[],
            here: Here::default(),
            now,
        }
    }
}

/// Why the request goes to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Shard,
    Region,
    Center,
    Local,
    Failover,
    Drain,
    Return,
}

impl Reason {
    /// The wire name (`ug.reason`, logs, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Shard => "shard",
            Reason::Region => "region",
            Reason::Center => "center",
            Reason::Local => "local",
            Reason::Failover => "failover",
            Reason::Drain => "drain",
            Reason::Return => "return",
        }
    }

    /// Parse a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "shard" => Reason::Shard,
            "region" => Reason::Region,
            "center" => Reason::Center,
            "local" => Reason::Local,
            "failover" => Reason::Failover,
            "drain" => Reason::Drain,
            "return" => Reason::Return,
            _ => return None,
        })
    }

    /// Whether the request left (or is returning to) its home: it carries a dye.
    pub fn is_shuttle(self) -> bool {
        matches!(self, Reason::Failover | Reason::Drain | Reason::Return)
    }
}

/// Where the user key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Claim,
    Token,
    Header,
    Dye,
    None,
}

/// The outcome of routing one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub route: RouteId,
    pub service: ServiceId,
    pub shard: Option<u32>,
    pub key_source: KeySource,
    pub home: UnitId,
    pub target: UnitId,
    pub reason: Reason,
    /// Hops after this decision (0 when the request is served at home).
    pub hops: u8,
}

/// Why no decision could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("no unit can serve the request")]
    NoUnit {
        route: RouteId,
        home: Option<UnitId>,
    },
    #[error("the request reached the hop limit and cannot be served here")]
    HopLimit { route: RouteId, home: UnitId },
}

struct Ctx<'a, H: ?Sized> {
    topo: &'a Topology,
    health: &'a H,
    service: ServiceId,
    facts: &'a Facts<'a>,
}

impl<H: HealthView + ?Sized> Ctx<'_, H> {
    fn can_serve(&self, u: UnitId) -> bool {
        self.topo.unit(u).runs(self.service)
            && !self.facts.exclude.contains(&u)
            && !self.topo.is_drained(u, self.facts.now)
            && self.health.healthy(u, self.service)
    }

    /// First unit that can serve, starting at `home` and then its fallback order.
    fn target_for(&self, home: UnitId) -> Option<UnitId> {
        if self.can_serve(home) {
            return Some(home);
        }
        self.topo
            .unit(home)
            .fallback
            .iter()
            .copied()
            .find(|&u| self.can_serve(u))
    }

    /// A unit of `region` (shard kind, running the service, not drained when
    /// avoidable), chosen by `spread` for a stable spread.
    fn region_unit(&self, region: RegionId, spread: u32) -> Option<UnitId> {
        let topo = self.topo;
        let runs = |u: &&crate::topology::Unit| {
            u.region == region && u.kind == UnitKind::Shard && u.runs(self.service)
        };
        let count = topo.units.iter().filter(runs).count();
        if count == 0 {
            return None;
        }
        let pick = spread as usize % count;
        topo.units
            .iter()
            .enumerate()
            .filter(|(_, u)| runs(u))
            .nth(pick)
            .map(|(i, _)| UnitId(i as u16))
    }

    fn local_unit(&self) -> Option<UnitId> {
        let here = self.facts.here;
        let dc = here.dc?;
        (0..self.topo.units.len())
            .map(|i| UnitId(i as u16))
            .find(|&u| self.topo.unit(u).dc == dc && self.topo.unit(u).runs(self.service))
    }

    fn any_unit(&self) -> Option<UnitId> {
        (0..self.topo.units.len())
            .map(|i| UnitId(i as u16))
            .find(|&u| self.topo.unit(u).runs(self.service))
    }

    fn region_home(&self, shard: Option<u32>) -> Option<UnitId> {
        let f = self.facts;
        if let Some(t) = f.token {
            if let Some(u) = self.topo.unit_id(&t.unit) {
                if self.topo.unit(u).runs(self.service) {
                    return Some(u);
                }
            }
        }
        let spread = shard.unwrap_or(0);
        self.topo
            .region_for(f.country, f.subdivision)
            .and_then(|r| self.region_unit(r, spread))
            .or_else(|| f.here.region.and_then(|r| self.region_unit(r, spread)))
            .or_else(|| self.any_unit())
    }

    fn center_home(&self) -> Option<UnitId> {
        let centers = self.topo.centers();
        centers
            .iter()
            .copied()
            .find(|&c| {
                !self.topo.is_drained(c, self.facts.now) && self.topo.unit(c).runs(self.service)
            })
            .or_else(|| {
                centers
                    .iter()
                    .copied()
                    .find(|&c| self.topo.unit(c).runs(self.service))
            })
            .or_else(|| centers.first().copied())
    }
}

/// Route one request. No IO, no allocation on the common path.
pub fn decide<H: HealthView + ?Sized>(
    topo: &Topology,
    facts: &Facts<'_>,
    health: &H,
) -> Result<Decision, RouteError> {
    let route_id = topo
        .routes
        .find(facts.host, facts.path, facts.method, facts.listener)
        .ok_or(RouteError::NoRoute)?;
    let route = topo.routes.get(route_id);
    let cx = Ctx {
        topo,
        health,
        service: route.service,
        facts,
    };
    let shards = topo.cluster.shards;

    // Step 2: the user key.
    let (shard, key_source) =
        if let Some(d) = facts.dye.filter(|d| d.shard.is_some_and(|s| s < shards)) {
            (d.shard, KeySource::Dye)
        } else if let Some(k) = facts.claim_user {
            (Some(topo.shard_of(k)), KeySource::Claim)
        } else if let Some(s) = facts.token.and_then(|t| t.shard).filter(|&s| s < shards) {
            (Some(s), KeySource::Token)
        } else if let Some(k) = facts.header_user.filter(|k| !k.is_empty()) {
            (Some(topo.shard_of(k)), KeySource::Header)
        } else {
            (None, KeySource::None)
        };

    // Step 3: the home unit by policy.
    let (home, home_reason) = match route.policy {
        Policy::Shard => match shard.and_then(|s| topo.shard_owner(s)) {
            Some(u) => (Some(u), Reason::Shard),
            None => (cx.region_home(shard), Reason::Region),
        },
        Policy::Region => (cx.region_home(shard), Reason::Region),
        Policy::Center => (cx.center_home(), Reason::Center),
        Policy::Local => match cx.local_unit() {
            Some(u) => (Some(u), Reason::Local),
            None => (cx.region_home(shard), Reason::Region),
        },
    };
    // A dye without a shard (region/center traffic) names its home directly.
    let home = match (facts.dye, key_source) {
        (Some(d), k) if k != KeySource::Dye => topo.unit_id(&d.home).or(home),
        _ => home,
    };
    let Some(home) = home else {
        return Err(RouteError::NoUnit {
            route: route_id,
            home: None,
        });
    };

    // Steps 4-5: the target.
    let hops_in = facts.dye.map_or(0, |d| d.hops);
    let Some(target) = cx.target_for(home) else {
        return Err(RouteError::NoUnit {
            route: route_id,
            home: Some(home),
        });
    };
    let reason = if target != home {
        if topo.is_drained(home, facts.now) {
            Reason::Drain
        } else {
            Reason::Failover
        }
    } else if facts.dye.is_some() {
        Reason::Return
    } else {
        home_reason
    };
    let decision = |target, reason, hops| Decision {
        route: route_id,
        service: route.service,
        shard,
        key_source,
        home,
        target,
        reason,
        hops,
    };
    if !reason.is_shuttle() {
        return Ok(decision(target, reason, 0));
    }
    // A shuttled request whose home cannot serve stays where it is, if it can.
    let local = facts
        .dye
        .and_then(|_| cx.local_unit())
        .filter(|&u| cx.can_serve(u));
    if reason != Reason::Return {
        if let Some(local) = local {
            return Ok(decision(local, reason, hops_in));
        }
    }
    if hops_in >= topo.cluster.max_hops {
        // No further move: serve in this gateway's own unit, or give up.
        return match local.or_else(|| cx.local_unit().filter(|&u| cx.can_serve(u))) {
            Some(local) => Ok(decision(local, Reason::Local, hops_in)),
            None => Err(RouteError::HopLimit {
                route: route_id,
                home,
            }),
        };
    }
    Ok(decision(target, reason, hops_in + 1))
}

/// Where a user's traffic lives, independent of any route and service:
/// what `/_unitgate/locate` reports and what a routing token records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub shard: Option<u32>,
    /// The user's home unit.
    pub home: UnitId,
    /// The unit now serving the home's traffic (differs while home is drained).
    pub serving: UnitId,
}

/// Locate the user of `facts` (route, method, dye and health are ignored).
pub fn locate(topo: &Topology, facts: &Facts<'_>) -> Option<Located> {
    let shards = topo.cluster.shards;
    let shard = if let Some(k) = facts.claim_user {
        Some(topo.shard_of(k))
    } else if let Some(s) = facts.token.and_then(|t| t.shard).filter(|&s| s < shards) {
        Some(s)
    } else {
        facts
            .header_user
            .filter(|k| !k.is_empty())
            .map(|k| topo.shard_of(k))
    };
    let in_region = |r: RegionId| {
        topo.units
            .iter()
            .position(|u| u.region == r && u.kind == UnitKind::Shard)
            .map(|i| UnitId(i as u16))
    };
    let home = shard
        .and_then(|s| topo.shard_owner(s))
        .or_else(|| facts.token.and_then(|t| topo.unit_id(&t.unit)))
        .or_else(|| {
            topo.region_for(facts.country, facts.subdivision)
                .and_then(in_region)
        })
        .or_else(|| facts.here.region.and_then(in_region))
        .or_else(|| topo.shard_owner(0))?;
    let serving = if topo.is_drained(home, facts.now) {
        topo.unit(home)
            .fallback
            .iter()
            .copied()
            .find(|&u| !topo.is_drained(u, facts.now))
            .unwrap_or(home)
    } else {
        home
    };
    Some(Located {
        shard,
        home,
        serving,
    })
}
