//! unitgate's config center.
//!
//! Sources ([`file::FileSource`], [`etcd::EtcdSource`]) read the key -> JSON
//! pairs under the prefix and hand each change, as one batch, to the
//! [`ConfigCenter`], which validates the whole candidate with
//! [`unit_router::Topology::build`], and either publishes it atomically
//! (arc-swap) with its epoch, persists it as the last-known-good snapshot and
//! notifies subscribers, or rejects it and keeps the last good snapshot.
#![forbid(unsafe_code)]

pub mod center;
pub mod clock;
pub mod etcd;
pub mod etcd_access;
pub mod etcd_check;
pub mod file;
pub mod kv;
pub mod lkg;
pub mod status;

pub use center::{ApplyError, ConfigCenter, Snapshot};
pub use clock::{Clock, ManualClock, SystemClock};
pub use kv::Kv;
pub use status::Status;
