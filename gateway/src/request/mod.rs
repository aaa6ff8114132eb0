//! A request's way through the gateway: its facts gathered once
//! ([`facts`], from the cleaned headers of [`headers`]), the phase hooks
//! ([`proxy`]) that ask the router, the rendering of the decision onto the
//! upstream request and the response ([`render`]), the locate endpoint
//! ([`locate`]) and the gateway's own error answers ([`respond`]).

pub mod ctx;
pub mod deadline;
pub mod facts;
pub mod headers;
pub mod locate;
pub mod proxy;
pub mod redirect;
pub mod render;
pub mod respond;
pub mod token_cache;
