//! unitgate: the edge gateway for unit-based multi-active deployments.
//!
//! A thin shell around `unit-router`: the Pingora proxy ([`proxy`]) gathers
//! request facts, asks the router, and turns the decision into an upstream
//! peer chosen by [`lb`]; [`control`] keeps the topology, endpoint health and
//! geo data current off the request path; [`admin`] serves health, status,
//! metrics and GSLB checks.
#![forbid(unsafe_code)]

pub mod admin;
pub mod budget;
pub mod config;
pub mod control;
pub mod demo;
pub mod facts;
pub mod lb;
pub mod metrics;
pub mod proxy;
pub mod respond;
pub mod secrets;
pub mod server;
pub mod state;
