//! Where a request goes inside a unit, and how attempts are counted: endpoint
//! pools with p2c-EWMA load balancing and passive ejection ([`pool`]), active
//! health probes ([`health`]), the breaker and concurrency limit of each
//! (unit, service) ([`guard`], [`breaker`], [`limiter`]), the retry budget
//! ([`budget`]), one request's attempts ([`attempt`]), retry and failover
//! across endpoints and units ([`failover`]), the Pingora peer ([`peer`])
//! and the connection to an HTTP/1.1 endpoint, read no faster than the
//! client takes the answer ([`connect`], [`flow`]).

pub mod attempt;
pub mod breaker;
pub mod budget;
pub mod connect;
pub mod failover;
pub mod flow;
pub mod guard;
pub mod health;
pub mod limiter;
pub mod peer;
pub mod pool;
