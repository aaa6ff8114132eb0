//! Authentication at the edge: JWTs verified against the issuers of the
//! topology (`auth/issuers/<name>`). [`jwt`] verifies one token against one
//! issuer, [`cache`] remembers the tokens verified on a worker thread,
//! [`index`] holds the issuers of the snapshot in force, [`fetch`] keeps the
//! key sets of issuers that publish them at a `jwks_uri`, and [`gate`] is
//! the check a routed request goes through.

pub mod cache;
pub mod fetch;
pub mod gate;
pub mod index;
pub mod jwt;
