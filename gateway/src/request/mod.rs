//! A request's way through the gateway: the phase hooks ([`proxy`]) hand
//! it to the admission pipeline ([`pipeline`]: input rules of [`headers`],
//! its facts gathered once ([`facts`]), route, auth, quotas, the routing
//! decision, the limits of [`deadline`]; its reads and
//! sends bounded in time by [`bounds`]), then to the next attempt's peer
//! ([`upstream`]); its failure is one value ([`failure`]) in its context
//! ([`ctx`]); the decision is rendered onto the upstream request and the
//! response ([`render`]); the gateway's own answers go out through
//! [`reply`]; the locate endpoint ([`locate`]) and the HTTPS redirect
//! ([`redirect`]) answer by themselves; [`log`] ends each request, with its
//! access-log line ([`access_line`]).

pub mod access_line;
pub mod bounds;
pub mod ctx;
pub mod deadline;
pub mod facts;
pub mod failure;
pub mod headers;
pub mod locate;
pub mod log;
pub mod pipeline;
pub mod proxy;
pub mod redirect;
pub mod render;
pub mod reply;
pub mod token_cache;
pub mod upstream;
