//! What tells requests apart after the fact: their ids and trace context
//! ([`ids`]), and the access log, one JSON line per request the gateway
//! serves or refuses, on every listener and protocol ([`entry::Entry`],
//! with its [`flags::Flags`]), written off the request path by one writer
//! thread behind a bounded queue ([`sink::AccessLog`]); the spans of
//! sampled requests, exported over OTLP ([`spans::Spans`]).

pub mod entry;
pub mod flags;
pub mod ids;
pub mod sink;
pub mod spans;

pub use entry::Entry;
pub use flags::Flags;
pub use sink::{AccessLog, Target};
