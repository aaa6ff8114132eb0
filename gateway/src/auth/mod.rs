//! Authentication at the edge: JWTs verified against the issuers of the
//! topology (`auth/issuers/<name>`). [`jwt`] verifies one token against one
//! issuer, [`cache`] remembers the tokens verified on a worker thread;
//! routes do not use them yet (the topology still refuses
//! `auth: required|optional` as not enforced).

pub mod cache;
pub mod jwt;
