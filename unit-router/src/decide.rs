//! The routing decision: a pure function of (topology snapshot, request facts,
//! health view). DESIGN.md "Routing" steps 1-6.

use crate::dye::Dye;
use crate::health::{AllHealthy, HealthView};
use crate::ids::{DcId, RegionId, RouteId, ServiceId, UnitId};
use crate::reason::Reason;
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

/// Where the user key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Claim,
    Token,
    Header,
    Dye,
    None,
}

/// What a public client keeps between requests: the routing token and the
/// GSLB hint, both read off the decision (never recomputed).
///
/// Present for shard- and region-routed requests on the public listener.
/// The token is the same whichever of those routes mints it, so a user
/// never moves because another route wrote the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Affinity {
    /// The user's shard, when a user key is known (shard routes find the
    /// home unit from it and the current shard map).
    pub shard: Option<u32>,
    /// The user's region unit, the one region routing sticks to: the unit
    /// the client's token names if it is still a shard unit, else the one
    /// the region rules pick (GeoIP region, else this gateway's, spread by
    /// shard). Neither a drain nor a failover for health changes it: the
    /// request goes elsewhere while it cannot serve, and back after.
    pub unit: UnitId,
    /// The client's token already records this shard and unit and is in the
    /// first half of its life: keep it (no new cookie).
    pub token_fresh: bool,
    /// The unit the client should enter for (`x-unit-hint`): where this
    /// route's home traffic is served now (home, or its drain target), when
    /// that is in another region than this gateway and can serve. None while
    /// home is down for health.
    pub hint: Option<UnitId>,
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
    /// The token and hint for a public client (`None`: neither).
    pub affinity: Option<Affinity>,
}

impl Decision {
    /// The token to issue: `Some` when the client's token is missing, stale
    /// or records another place.
    pub fn token_to_issue(&self) -> Option<Affinity> {
        self.affinity.filter(|a| !a.token_fresh)
    }

    /// The unit a GSLB hint names, if one is due.
    pub fn hint(&self) -> Option<UnitId> {
        self.affinity.and_then(|a| a.hint)
    }

    /// The dye the upstream request carries: set when the request leaves its
    /// home (failover, drain), kept while it is held at the hop limit, and
    /// dropped once it is back home. `exp` is a new dye's expiry; a dye that
    /// came with the request is never extended (re-signing a replayed dye
    /// does not renew it).
    pub fn dye(&self, topo: &Topology, incoming: Option<&Dye>, exp: i64) -> Option<Dye> {
        let via = || topo.unit(self.target).name.clone();
        let exp = incoming.map_or(exp, |d| d.exp.min(exp));
        match (self.reason, incoming) {
            (Reason::Failover | Reason::Drain, _) => Some(Dye {
                shard: self.shard,
                home: topo.unit(self.home).name.clone(),
                via: via(),
                reason: self.reason,
                hops: self.hops,
                exp,
            }),
            (Reason::Local, Some(din)) => Some(Dye {
                via: via(),
                exp,
                ..din.clone()
            }),
            _ => None,
        }
    }
}

/// How long a client may trust a GSLB hint, unless the gateway says otherwise.
pub const DEFAULT_HINT_TTL_S: u64 = 300;

/// The GSLB hint value for `unit`: `unit=<u>; region=<r>; entry=<host>; ttl=<s>`.
pub fn hint_value(topo: &Topology, unit: UnitId, ttl_s: u64) -> String {
    let u = topo.unit(unit);
    let region = &topo.regions[u.region.index()];
    let entry = region.entries.first().map(String::as_str).unwrap_or("");
    format!(
        "unit={}; region={}; entry={entry}; ttl={ttl_s}",
        u.name, region.name
    )
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

/// One decision's inputs. `service: None` asks about the user's place
/// independent of any route ([`locate`]).
struct Ask<'a, H: ?Sized> {
    topo: &'a Topology,
    health: &'a H,
    service: Option<ServiceId>,
    facts: &'a Facts<'a>,
}

impl<H: ?Sized> Clone for Ask<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<H: ?Sized> Copy for Ask<'_, H> {}

impl<H: HealthView + ?Sized> Ask<'_, H> {
    fn runs(&self, u: UnitId) -> bool {
        self.service.is_none_or(|s| self.topo.unit(u).runs(s))
    }

    fn can_serve(&self, u: UnitId) -> bool {
        self.runs(u)
            && !self.facts.exclude.contains(&u)
            && !self.topo.is_drained(u, self.facts.now)
            && self.service.is_none_or(|s| self.health.healthy(u, s))
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

    /// The user key, in order: dye, claim, token, header (DESIGN step 2).
    fn user_shard(&self) -> (Option<u32>, KeySource) {
        let (f, topo) = (self.facts, self.topo);
        let shards = topo.cluster.shards;
        if let Some(d) = f.dye.filter(|d| d.shard.is_some_and(|s| s < shards)) {
            (d.shard, KeySource::Dye)
        } else if let Some(k) = f.claim_user {
            (Some(topo.shard_of(k)), KeySource::Claim)
        } else if let Some(s) = f.token.and_then(|t| t.shard).filter(|&s| s < shards) {
            (Some(s), KeySource::Token)
        } else if let Some(k) = f.header_user.filter(|k| !k.is_empty()) {
            (Some(topo.shard_of(k)), KeySource::Header)
        } else {
            (None, KeySource::None)
        }
    }

    /// The home unit by policy (DESIGN step 3).
    fn home(&self, policy: Policy, shard: Option<u32>) -> (Option<UnitId>, Reason) {
        match policy {
            Policy::Shard => match shard.and_then(|s| self.topo.shard_owner(s)) {
                Some(u) => (Some(u), Reason::Shard),
                None => (self.region_home(shard), Reason::Region),
            },
            Policy::Region => (self.region_home(shard), Reason::Region),
            Policy::Center => (self.center_home(), Reason::Center),
            Policy::Local => match self.local_unit() {
                Some(u) => (Some(u), Reason::Local),
                None => (self.region_home(shard), Reason::Region),
            },
        }
    }

    /// A unit of `region` (shard kind, running the service), chosen by
    /// `spread` for a stable spread.
    fn region_unit(&self, region: RegionId, spread: u32) -> Option<UnitId> {
        let topo = self.topo;
        let fits = |u: UnitId| {
            let unit = topo.unit(u);
            unit.region == region && unit.kind == UnitKind::Shard && self.runs(u)
        };
        let count = self.unit_ids().filter(|&u| fits(u)).count();
        if count == 0 {
            return None;
        }
        self.unit_ids()
            .filter(|&u| fits(u))
            .nth(spread as usize % count)
    }

    fn unit_ids(&self) -> impl Iterator<Item = UnitId> {
        (0..self.topo.units.len()).map(|i| UnitId(i as u16))
    }

    fn local_unit(&self) -> Option<UnitId> {
        let dc = self.facts.here.dc?;
        self.unit_ids()
            .find(|&u| self.topo.unit(u).dc == dc && self.runs(u))
    }

    /// A unit region traffic may stick to: one running the service, or,
    /// asked independent of any service, a shard unit.
    fn region_eligible(&self, u: UnitId) -> bool {
        match self.service {
            Some(s) => self.topo.unit(u).runs(s),
            None => self.topo.unit(u).kind == UnitKind::Shard,
        }
    }

    fn region_home(&self, shard: Option<u32>) -> Option<UnitId> {
        let f = self.facts;
        if let Some(u) = f.token.and_then(|t| self.topo.unit_id(&t.unit)) {
            if self.region_eligible(u) {
                return Some(u);
            }
        }
        let spread = shard.unwrap_or(0);
        self.topo
            .region_for(f.country, f.subdivision)
            .and_then(|r| self.region_unit(r, spread))
            .or_else(|| f.here.region.and_then(|r| self.region_unit(r, spread)))
            .or_else(|| self.unit_ids().find(|&u| self.region_eligible(u)))
    }

    fn center_home(&self) -> Option<UnitId> {
        let centers = self.topo.centers();
        let now = self.facts.now;
        centers
            .iter()
            .copied()
            .find(|&c| !self.topo.is_drained(c, now) && self.runs(c))
            .or_else(|| centers.iter().copied().find(|&c| self.runs(c)))
            .or_else(|| centers.first().copied())
    }

    /// The user's region unit (see [`Affinity::unit`]): independent of any
    /// service, so every route records the same one.
    fn region_unit_of_user(&self, shard: Option<u32>) -> Option<UnitId> {
        Ask {
            service: None,
            ..*self
        }
        .region_home(shard)
    }

    /// The client's token and hint. `by_region`: home was chosen by the
    /// region rules (it is then the region unit itself).
    fn affinity(
        &self,
        shard: Option<u32>,
        home: UnitId,
        target: UnitId,
        by_region: bool,
    ) -> Affinity {
        let (topo, f) = (self.topo, self.facts);
        let unit = if by_region {
            Some(home)
        } else {
            self.region_unit_of_user(shard)
        }
        .unwrap_or(home);
        let name = topo.unit(unit).name.as_str();
        let half_life = (topo.cluster.token_ttl_s / 2) as i64;
        let token_fresh = f
            .token
            .is_some_and(|t| t.unit == name && t.shard == shard && t.exp - f.now > half_life);
        // Where home traffic is served now: a drain moves it, a failover
        // for health does not (and then no hint points anywhere).
        let place = if topo.is_drained(home, f.now) {
            target
        } else {
            home
        };
        let serves_now = place == target || self.can_serve(place);
        let hint = (serves_now && f.here.region.is_some_and(|r| r != topo.unit(place).region))
            .then_some(place);
        Affinity {
            shard,
            unit,
            token_fresh,
            hint,
        }
    }
}

/// Route one request. No IO, no allocation.
pub fn decide<H: HealthView + ?Sized>(
    topo: &Topology,
    facts: &Facts<'_>,
    health: &H,
) -> Result<Decision, RouteError> {
    let route_id = topo
        .routes
        .find(facts.host, facts.path, facts.method, facts.listener)
        .ok_or(RouteError::NoRoute)?;
    decide_route(topo, route_id, facts, health)
}

/// The decision for a request already matched to `route_id` (the gateway
/// matches once, checks the route's auth, then asks with the verified user).
pub fn decide_route<H: HealthView + ?Sized>(
    topo: &Topology,
    route_id: RouteId,
    facts: &Facts<'_>,
    health: &H,
) -> Result<Decision, RouteError> {
    let route = topo.routes.get(route_id);
    let ask = Ask {
        topo,
        health,
        service: Some(route.service),
        facts,
    };
    let (shard, key_source) = ask.user_shard();
    let (home, home_reason) = ask.home(route.policy, shard);
    // A dye without a shard (region/center traffic) names its home directly.
    let home = match (facts.dye, key_source) {
        (Some(d), k) if k != KeySource::Dye => topo.unit_id(&d.home).or(home),
        _ => home,
    };
    let no_unit = |home| RouteError::NoUnit {
        route: route_id,
        home,
    };
    let home = home.ok_or(no_unit(None))?;
    let target = ask.target_for(home).ok_or(no_unit(Some(home)))?;
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
        affinity: None,
    };
    let mut d = if reason.is_shuttle() {
        shuttle(&ask, decision, target, reason).ok_or(RouteError::HopLimit {
            route: route_id,
            home,
        })?
    } else {
        decision(target, reason, 0)
    };
    let keeps_place = matches!(route.policy, Policy::Shard | Policy::Region);
    if keeps_place && facts.listener == Listener::Public {
        d.affinity = Some(ask.affinity(shard, home, d.target, home_reason == Reason::Region));
    }
    Ok(d)
}

/// The target of a request that leaves or returns home (DESIGN steps 4-5):
/// a shuttled request whose home cannot serve stays in this gateway's unit
/// if it can; the hop limit stops ping-pong.
fn shuttle<H: HealthView + ?Sized>(
    ask: &Ask<'_, H>,
    decision: impl Fn(UnitId, Reason, u8) -> Decision,
    target: UnitId,
    reason: Reason,
) -> Option<Decision> {
    let facts = ask.facts;
    let hops_in = facts.dye.map_or(0, |d| d.hops);
    let local = || ask.local_unit().filter(|&u| ask.can_serve(u));
    let dyed_local = facts.dye.and_then(|_| local());
    if reason != Reason::Return {
        if let Some(local) = dyed_local {
            return Some(decision(local, reason, hops_in));
        }
    }
    if hops_in >= ask.topo.cluster.max_hops {
        // No further move: serve in this gateway's own unit, or give up.
        return dyed_local
            .or_else(local)
            .map(|local| decision(local, Reason::Local, hops_in));
    }
    Some(decision(target, reason, hops_in + 1))
}

/// Where a user's traffic lives, independent of any route and service:
/// what `/_unitgate/locate` reports and what its routing token records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub shard: Option<u32>,
    /// The user's home unit (the shard owner; without a key, the region unit).
    pub home: UnitId,
    /// The unit now serving the home's traffic (differs while home is drained).
    pub serving: UnitId,
    /// The token a shard or region route would keep or mint for this user.
    pub affinity: Affinity,
}

/// Locate the user of `facts` by the rules of a shard-policy route (user
/// key, else region), ignoring route, method, dye and endpoint health: the
/// same home, and the same token, that [`decide`] gives such a route.
pub fn locate(topo: &Topology, facts: &Facts<'_>) -> Option<Located> {
    let ask = Ask {
        topo,
        health: &AllHealthy,
        service: None,
        facts,
    };
    let (shard, _) = ask.user_shard();
    let (home, reason) = ask.home(Policy::Shard, shard);
    let home = home?;
    let serving = ask.target_for(home).unwrap_or(home);
    Some(Located {
        shard,
        home,
        serving,
        affinity: ask.affinity(shard, home, serving, reason == Reason::Region),
    })
}
