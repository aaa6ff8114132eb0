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
//! most `between` for each next one; once the server is shutting down no
//! connection is parked again. Connections that do not speak plain HTTP/1 (ALPN `h2`) go
//! to Pingora's own dispatch.

use std::sync::Arc;
use std::time::Duration;

use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora_prometheus::prometheus::IntGauge;

use super::limits::GaugeUp;

/// How long a parked connection may wait for a request's first byte, and
/// the gauge of connections parked now.
pub struct Parking {
    /// Before the connection's first request.
    pub first: Duration,
    /// Between keep-alive requests.
    pub between: Duration,
    /// `unitgate_connections_idle` of the listener.
    pub parked: IntGauge,
}

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

/// Serve every request of one connection with `app`.
pub async fn serve<A>(app: &Arc<A>, mut stream: Stream, parking: &Parking, shutdown: &ShutdownWatch)
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let plain_h1 = matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1))
        && app
            .server_options()
            .is_none_or(|o| !o.h2c && !o.force_custom);
    if !plain_h1 {
        let mut next = Some(stream);
        while let Some(s) = next {
            next = ServerApp::process_new(app, s, shutdown).await;
        }
        return;
    }
    // A first head that does not come in time is the head guard's to
    // answer (408): the request is started either way.
    if park(&mut stream, parking, parking.first, shutdown).await == Wake::Closed {
        return;
    }
    let mut session = ServerSession::new_http1(stream);
    // The proxy sets its own idle limit on the session; `None` stops reuse.
    session.set_keepalive((!*shutdown.borrow()).then_some(parking.between.as_secs()));
    session.set_keepalive_reuses_remaining(
        app.server_options().and_then(|o| o.keepalive_request_limit),
    );
    let mut done = app.process_new_http(session, shutdown).await;
    while let Some(reused) = done {
        // Pipelining is never enabled, so no bytes of the next request are
        // held in `settings`: the socket has all of them.
        let (mut stream, settings) = reused.consume();
        if park(&mut stream, parking, parking.between, shutdown).await != Wake::Data {
            return;
        }
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        }
        done = app.process_new_http(session, shutdown).await;
    }
}

/// Wait, holding nothing but `stream`, for the client's next bytes.
async fn park(
    stream: &mut Stream,
    parking: &Parking,
    within: Duration,
    shutdown: &ShutdownWatch,
) -> Wake {
    // Shutting down: no more requests on this connection. A connection
    // parked when the shutdown starts is dropped with the runtime after
    // the grace period.
    if *shutdown.borrow() {
        return Wake::Closed;
    }
    let _parked = GaugeUp::up(&parking.parked);
    let mut first = [0u8; 1];
    match tokio::time::timeout(within, stream.try_peek(&mut first)).await {
        Ok(Ok(_)) => Wake::Data,
        Ok(Err(_)) => Wake::Closed,
        Err(_) => Wake::Timeout,
    }
}
