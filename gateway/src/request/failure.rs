//! How one request is failing, as one value ([`Failure`]), and the one way a
//! failure is built ([`fail`]): the Pingora error and the client's answer
//! come from the same [`GwError`], so the status the framework sees and the
//! answer the client gets can never disagree. Pingora's own errors are read
//! as the gateway's answer here too ([`from_proxy_error`]).

use std::time::Duration;

use pingora::http::ResponseHeader;
use pingora::{Error, ErrorSource, ErrorType};
use unit_router::Decision;

use crate::answer::GwError;

/// An upstream's real answer not passed on because the request was tried
/// again: the answer if every later attempt fails without one (a real
/// answer beats a gateway error), rendered for the decision it came by.
#[derive(Debug)]
pub struct Held {
    pub answer: Box<ResponseHeader>,
    pub decision: Decision,
}

/// The failure state of one request.
#[derive(Debug, Default)]
pub enum Failure {
    /// Nothing failed.
    #[default]
    None,
    /// The current attempt's answer has a status the route retries and
    /// another attempt is cleared: the answer is held, not passed on.
    RetryPending(Held),
    /// An attempt failed and another may follow. `last`: how it failed
    /// (`None` after a retried status); `held`: an earlier real answer.
    Attempt {
        last: Option<GwError>,
        held: Option<Held>,
    },
    /// The request ends with the gateway's answer `error` (or with the held
    /// answer, when `error` is a failure to get one from upstreams).
    Answer { error: GwError, held: Option<Held> },
}

impl Failure {
    /// The gateway's own answer, once decided.
    pub fn answer(&self) -> Option<&GwError> {
        match self {
            Failure::Answer { error, .. } => Some(error),
            _ => None,
        }
    }

    /// How the last attempt failed, if it failed on the way (not by a
    /// retried status).
    pub fn last(&self) -> Option<&GwError> {
        match self {
            Failure::Attempt { last, .. } => last.as_ref(),
            _ => None,
        }
    }

    /// Whether the current attempt's answer was turned into a retry.
    pub fn retry_pending(&self) -> bool {
        matches!(self, Failure::RetryPending(_))
    }

    fn take_held(&mut self) -> Option<Held> {
        match std::mem::take(self) {
            Failure::None => None,
            Failure::RetryPending(h) => Some(h),
            Failure::Attempt { held, .. } | Failure::Answer { held, .. } => held,
        }
    }

    /// Hold the current attempt's answer: a retry is pending.
    pub fn hold(&mut self, held: Held) {
        *self = Failure::RetryPending(held);
    }

    /// The attempt failed (`how`: `None` for a retried status); what is
    /// held stays held.
    pub fn attempt_failed(&mut self, how: Option<GwError>) {
        let held = self.take_held();
        *self = Failure::Attempt { last: how, held };
    }

    /// The request ends with `error`; what is held stays held.
    pub fn answer_with(&mut self, error: GwError) {
        let held = self.take_held();
        *self = Failure::Answer { error, held };
    }

    /// The held answer, when the final answer is an upstream failure that
    /// it beats.
    pub fn take_held_for(&mut self, error: &GwError) -> Option<Held> {
        if !error.is_upstream_failure() {
            return None;
        }
        match self {
            Failure::Attempt { held, .. } | Failure::Answer { held, .. } => held.take(),
            Failure::RetryPending(_) => self.take_held(),
            Failure::None => None,
        }
    }
}

/// Build the failure `err`: recorded as the request's answer, and returned
/// as the Pingora error carrying the same status. `why` is for the log.
pub fn fail(failure: &mut Failure, err: GwError, why: &'static str) -> Box<Error> {
    let status = err.status();
    failure.answer_with(err);
    Error::explain(ErrorType::HTTPStatus(status), why)
}

/// The gateway's answer for a Pingora error that has none recorded yet.
pub fn from_proxy_error(e: &Error) -> GwError {
    if *e.esource() == ErrorSource::Downstream {
        // The client's side: its own fault, never a 5xx.
        return match e.etype() {
            ErrorType::ReadTimedout => GwError::RequestTimeout,
            ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::InvalidH2 => {
                GwError::BadRequest(unit_router::InputError::BadBody)
            }
            // A chunk size or chunk framing that does not parse.
            ErrorType::Custom("InvalidChunk") => {
                GwError::BadRequest(unit_router::InputError::BadBody)
            }
            _ => GwError::ClientClosed,
        };
    }
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            GwError::UpstreamTimeout
        }
        ErrorType::ConnectRefused | ErrorType::ConnectError | ErrorType::ConnectNoRoute => {
            GwError::UpstreamUnavailable
        }
        _ if *e.esource() == ErrorSource::Upstream => GwError::UpstreamError,
        _ => GwError::Internal,
    }
}

/// A timeout that fired because the request's deadline ran out (each
/// attempt's timeouts are cut to the time left): the route's answer is 504
/// `deadline_exceeded`, and the upstream is not blamed for it.
pub fn deadline_hit(time_left: Option<Duration>, e: &Error) -> bool {
    let timeout = matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    timeout && time_left.is_some_and(|t| t < Duration::from_millis(5))
}

/// Whether a failed request is the client's doing (gone, garbage, over a
/// limit): not the upstream's fault, logged at debug.
pub fn client_fault(failure: &Failure, e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        || failure.answer().is_some_and(GwError::is_client_fault)
}

/// Whether `e` says the client is gone (nobody left to answer).
pub fn downstream_dead(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
        )
}
