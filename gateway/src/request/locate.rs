//! `GET /_unitgate/locate` (public): where the user lives, for apps at
//! start-up: home, the unit serving it now, its region and entry hosts, and
//! a fresh routing token (also set as the cookie).

use pingora::proxy::Session;
use pingora::Result;
use unit_router::{locate, token};

use crate::answer::{render as answers, send, GwError};
use crate::request::ctx::Ctx;
use crate::request::render;
use crate::state::Shared;

/// The path of the endpoint.
pub const PATH: &str = "/_unitgate/locate";

/// Answer the locate request in `session`.
pub async fn answer(shared: &Shared, session: &mut Session, ctx: &Ctx) -> Result<()> {
    let Some(plane) = ctx.plane.as_deref() else {
        return send::error(session, &GwError::NotReady, &ctx.ids.request_id).await;
    };
    let topo = &plane.snap.topology;
    let located = {
        let f = ctx
            .facts
            .for_router(ctx.listener, session.req_header(), plane, &[]);
        locate(topo, &f)
    };
    let Some(loc) = located else {
        return send::error(session, &GwError::NoUnit, &ctx.ids.request_id).await;
    };
    let home = topo.unit(loc.home);
    let serving = topo.unit(loc.serving);
    let region = &topo.regions[serving.region.index()];
    let (encoded, exp) = render::mint(shared, topo, &loc.affinity, ctx.facts.now);
    let body = serde_json::json!({
        "home": home.name,
        "unit": serving.name,
        "shard": loc.shard,
        "region": region.name,
        "entries": region.entries,
        "ttl": shared.cfg.hint_ttl_s,
        "token": encoded,
        "token_exp": exp,
        "epoch": topo.epoch,
    });
    let cookie = token::set_cookie(&encoded, topo.cluster.token_ttl_s);
    let answer = answers::json(200, &body, &[("set-cookie", cookie)])?;
    send::send(session, answer, &ctx.ids.request_id).await
}
