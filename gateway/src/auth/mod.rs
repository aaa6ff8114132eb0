//! Authentication at the edge: JWTs verified against the issuers of the
//! topology (`auth/issuers/<name>`). [`jwt`] verifies one token against one
//! issuer; routes do not use it yet (the topology still refuses
//! `auth: required|optional` as not enforced).

pub mod jwt;
