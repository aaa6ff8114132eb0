//! Idle connections hold only their socket.
//!
//! Pingora serves an HTTP/1 connection in one task whose request future
//! (the whole proxy state machine: session, context, upstream phases) is
//! allocated when the task starts waiting for a request and lives until
//! the request is done, so an idle keep-alive connection holds a full
//! request's worth of memory while it waits. [`serve`] runs the HTTP/1
//! keep-alive loop itself and parks each connection between requests on a
//! peek of the socket ([`HeadGuard`](super::head::HeadGuard) keeps the
//! peeked bytes for the parser): the request future exists only while a
//! request is in flight.
//!
//! A parked connection waits at most `first` for its first request (the
//! head guard's clock, which runs from accept, then answers 408) and at
//! most `between` for each next one. When the server starts shutting down
//! (a stop, or an upgrade that handed the listeners over), a parked
//! connection waits [`LAST_CALL`] more for a request already on its way,
//! served with `Connection: close`, and is closed if none comes: a client
//! that sent its next request as the shutdown began is answered, not
//! reset.
//! Connections that do not speak plain HTTP/1 (ALPN `h2`) go to Pingora's
//! own dispatch.

use std::sync::Arc;
use std::time::Duration;

use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora_prometheus::prometheus::IntGauge;

use super::admission::GaugeUp;
use super::h2_guard::{FrameCounters, FrameGuard};
use super::head::HeadGuard;
use super::signals::HeadSignals;
use crate::config::H2Limits;

/// How long a parked connection may wait for a request's first byte, and
/// the gauge of connections parked now.
pub struct Parking {
    /// Before the connection's first request.
    pub first: Duration,
    /// Between keep-alive requests.
    pub between: Duration,
    /// The keep-alive timeout handed to the framework's session, which
    /// applies it to every read of a request head: at least the head
    /// timeout, so the head guard's 408 always comes first.
    pub session_keepalive_s: u64,
    /// `unitgate_connections_idle` of the listener.
    pub parked: IntGauge,
}

/// How long a parked connection still waits for a request once the
/// server is shutting down.
pub const LAST_CALL: Duration = Duration::from_secs(1);

/// What ended a park.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The client sent bytes.
    Data,
    /// Nothing came in time.
    Timeout,
    /// The client closed, the read failed, or the server is shutting down.
    Closed,
}

/// Serve every request of one connection with `app`. `h2c`: a plain
/// connection that opens with the HTTP/2 preface is served as HTTP/2
/// under this guard. `heads`: the signals of the connection's head guard.
pub async fn serve<A>(
    app: &Arc<A>,
    mut stream: Stream,
    parking: &Parking,
    shutdown: &ShutdownWatch,
    h2c: Option<&H2c>,
    heads: Option<Arc<HeadSignals>>,
) where
    A: HttpServerApp + Send + Sync + 'static,
{
    let plain_h1 = matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1))
        && app
            .server_options()
            .is_none_or(|o| !o.h2c && !o.force_custom);
    if !plain_h1 {
        return serve_by_framework(app, stream, shutdown).await;
    }
    let mut watch = shutdown.clone();
    // A first head that does not come in time is the head guard's to
    // answer (408): the request is started either way.
    let woke = park(&mut stream, parking, parking.first, &mut watch).await;
    if woke == Wake::Closed {
        return;
    }
    if let (Some(h2c), Wake::Data) = (h2c, woke) {
        // Every HTTP/1 request line is longer than 3 bytes; "PRI" starts
        // only the HTTP/2 preface. A client that stops before 3 bytes is
        // left to the head guard's deadline (408): the peek is bounded by
        // it, and what it read stays in the guard for the parser.
        let mut first = [0u8; 3];
        let peeked = tokio::time::timeout(h2c.timeout, stream.try_peek(&mut first)).await;
        if matches!(peeked, Ok(Err(_))) {
            return;
        }
        if matches!(peeked, Ok(Ok(_))) && &first == b"PRI" {
            let Ok(guard) = stream.into_any().downcast::<HeadGuard>() else {
                return;
            };
            let (inner, peeked) = (*guard).into_parts();
            let s = FrameGuard::wrap(
                inner,
                peeked,
                &h2c.limits,
                h2c.timeout,
                h2c.counters.clone(),
                true,
            );
            return serve_by_framework(app, s, shutdown).await;
        }
    }
    let mut session = ServerSession::new_http1(stream);
    // `None` stops reuse; the proxy sets the same value on every request.
    session.set_keepalive((!*shutdown.borrow()).then_some(parking.session_keepalive_s));
    session.set_keepalive_reuses_remaining(
        app.server_options().and_then(|o| o.keepalive_request_limit),
    );
    let mut done = app.process_new_http(session, shutdown).await;
    while let Some(reused) = done {
        // Pipelining is never enabled, so no bytes of the next request are
        // held in `settings`: the socket has all of them.
        let (mut stream, settings) = reused.consume();
        // The request is over, its unread body drained by the framework:
        // the next bytes are the next request's head.
        if let Some(heads) = &heads {
            heads.rearm();
        }
        if park(&mut stream, parking, parking.between, &mut watch).await != Wake::Data {
            return;
        }
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        }
        done = app.process_new_http(session, shutdown).await;
    }
}

/// The settings of h2c on a plain listener.
pub struct H2c {
    pub limits: H2Limits,
    pub timeout: Duration,
    pub counters: Arc<FrameCounters>,
}

/// Pingora's own dispatch: HTTP/2, or what is not plain HTTP/1.
async fn serve_by_framework<A>(app: &Arc<A>, stream: Stream, shutdown: &ShutdownWatch)
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let mut next = Some(stream);
    while let Some(s) = next {
        next = ServerApp::process_new(app, s, shutdown).await;
    }
}

/// Wait, holding nothing but `stream`, for the client's next bytes.
async fn park(
    stream: &mut Stream,
    parking: &Parking,
    within: Duration,
    shutdown: &mut ShutdownWatch,
) -> Wake {
    let mut first = [0u8; 1];
    let _parked = GaugeUp::up(&parking.parked);
    if !*shutdown.borrow() {
        tokio::select! {
            biased;
            peeked = tokio::time::timeout(within, stream.try_peek(&mut first)) => return match peeked {
                Ok(Ok(_)) => Wake::Data,
                Ok(Err(_)) => Wake::Closed,
                Err(_) => Wake::Timeout,
            },
            () = shutting_down(shutdown) => {}
        }
    }
    // Shutting down: a request on its way is still served (the framework
    // turns keep-alive off for it: `Connection: close`); then the
    // connection closes.
    match tokio::time::timeout(LAST_CALL.min(within), stream.try_peek(&mut first)).await {
        Ok(Ok(_)) => Wake::Data,
        _ => Wake::Closed,
    }
}

/// Ready once the server starts shutting down (never, if it cannot say).
async fn shutting_down(shutdown: &mut ShutdownWatch) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
