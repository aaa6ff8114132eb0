//! unitgate: the edge gateway for unit-based multi-active deployments.
//!
//! A thin shell around `unit-router`, laid out along a request's way:
//! [`listen`] binds the listeners; [`request`] gathers the request's facts
//! once, asks the router and renders the decision; [`upstream`] picks the
//! endpoint (p2c-EWMA, health, retry budget); [`auth`] verifies JWTs and
//! [`quota`] counts requests against the routes' quotas; [`control`] keeps the
//! topology, endpoint health and geo data current off the request path;
//! [`admin`] serves health, status, metrics and GSLB checks; [`tls`]
//! terminates TLS with certificates chosen by SNI. [`state`] is what they
//! share.
// Two functions are allowed `unsafe`, each with its reason: the unit
// connection's sized read (`upstream::connect`) and the client socket's
// option (`listen::send_queue`).
#![deny(unsafe_code)]

pub mod access;
pub mod admin;
pub mod answer;
pub mod auth;
pub mod config;
pub mod control;
pub mod demo;
pub mod listen;
pub mod metrics;
pub mod quota;
pub mod request;
pub mod secrets;
pub mod server;
pub mod state;
pub mod stop;
pub mod tls;
pub mod upstream;
pub mod verified;
