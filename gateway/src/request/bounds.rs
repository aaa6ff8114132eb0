//! How long a request may keep the gateway waiting on its client: each
//! read of its body ([`body_reads`]: `body_read_timeout_ms`, never past the
//! deadline), each wait to send its answer ([`sends`]: `send_timeout_ms`),
//! and an upgraded connection's quiet time ([`upgraded`]).

use std::time::Duration;

use pingora::proxy::Session;
use pingora::Result;

use crate::answer::GwError;
use crate::config::Config;
use crate::request::ctx::Ctx;
use crate::request::failure::fail;

/// Each read of the body waits at most `body_read_timeout_ms`, and never
/// past the deadline: a body trickled in byte by byte ends at the
/// route's total time (408).
pub fn body_reads(cfg: &Config, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let idle = Duration::from_millis(cfg.body_read_timeout_ms);
    let left = ctx.time_left().unwrap_or(idle);
    if left.is_zero() {
        let why = "request body not received within the route's time";
        return Err(fail(&mut ctx.failure, GwError::RequestTimeout, why));
    }
    session.set_read_timeout(Some(idle.min(left)));
    Ok(())
}

/// A response that makes no progress toward the client for
/// `send_timeout_ms` is ended. HTTP/1.1: the connection's write watch does
/// it, exactly (`listen/send_watch.rs`: no byte taken for that long).
/// HTTP/2: the framework times each chunk of the answer (up to 64 KiB)
/// while it waits for the client's window, and the stream is reset.
pub fn sends(cfg: &Config, session: &mut Session) {
    if session.as_downstream().is_http2() {
        session.set_write_timeout(Some(Duration::from_millis(cfg.send_timeout_ms)));
    }
}

/// An upgraded (WebSocket) connection may stay quiet as long as an idle
/// keep-alive connection may, not just a body's read timeout.
pub fn upgraded(cfg: &Config, session: &mut Session) {
    let idle = Duration::from_secs(cfg.keepalive_idle_s);
    session.set_read_timeout(Some(idle));
}
