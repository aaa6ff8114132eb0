//! Every answer the gateway makes itself, rendered in this one place: the
//! error table ([`error`]: status, `error` code, message and gRPC status of
//! each [`GwError`]), the answers built from it or from the request path's
//! own replies (JSON, a gRPC trailers-only status, a redirect) ([`render`]),
//! and how an answer is written: into a proxy session ([`send`]) or as raw
//! HTTP/1.1 bytes by a connection guard that answers before the framework
//! has a session ([`render::wire`]).

pub mod error;
pub mod render;
pub mod send;

pub use error::GwError;
pub use render::{Answer, Form};
