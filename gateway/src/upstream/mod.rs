//! Where a request goes inside a unit, and how attempts are counted: endpoint
//! pools with p2c-EWMA load balancing and passive ejection ([`pool`]), active
//! health probes ([`health`]), the breaker and concurrency limit of each
//! (unit, service) ([`guard`], [`breaker`], [`limiter`]), the retry budget
//! ([`budget`]), one request's attempts ([`attempt`]), retry and failover
//! across endpoints and units ([`failover`]) and the Pingora peer
//! ([`peer`]).

pub mod attempt;
pub mod breaker;
pub mod budget;
pub mod failover;
pub mod guard;
pub mod health;
pub mod limiter;
pub mod peer;
pub mod pool;
