//! Connection limits of a listener: at most `per_listener` connections at
//! once, and at most `per_ip` from one client address. A connection over a
//! limit is closed as soon as it is accepted, before a byte is read, so a
//! refused connection costs almost nothing. A connection counts until it
//! closes, idle keep-alive time included.
//!
//! Per-address counts live in a fixed table of atomic counters indexed by a
//! keyed hash of the address: memory is bounded whatever the number of
//! clients, nothing locks, and two addresses that share a slot share its
//! limit (stricter, never looser).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use pingora_prometheus::prometheus::IntGauge;

/// Slots of the per-address table (65,536 x 4 bytes).
const SLOTS: usize = 1 << 16;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub per_listener: u32,
    /// `None`: no per-address limit (e.g. behind a load balancer whose
    /// address every connection shares).
    pub per_ip: Option<u32>,
}

/// Counters for one listener.
pub struct ConnCounts {
    limits: ConnLimits,
    open: AtomicU32,
    per_ip: Box<[AtomicU32]>,
    hasher: RandomState,
}

/// One counted connection; uncounted on drop.
pub struct Admitted<'a> {
    counts: &'a ConnCounts,
    slot: Option<usize>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(s) = self.slot {
            self.counts.per_ip[s].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A gauge, one up for as long as this lives.
pub struct GaugeUp<'a>(&'a IntGauge);

impl<'a> GaugeUp<'a> {
    pub fn up(g: &'a IntGauge) -> Self {
        g.inc();
        GaugeUp(g)
    }
}

impl Drop for GaugeUp<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why a connection was refused (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Listener,
    Ip,
}

/// Take one from `counter` unless it is at `limit`.
fn take(counter: &AtomicU32, limit: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

impl ConnCounts {
    pub fn new(limits: ConnLimits) -> Self {
        let slots = if limits.per_ip.is_some() { SLOTS } else { 0 };
        ConnCounts {
            limits,
            open: AtomicU32::new(0),
            per_ip: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Count a new connection from `ip`, or say which limit refuses it.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<Admitted<'_>, Refused> {
        if !take(&self.open, self.limits.per_listener) {
            return Err(Refused::Listener);
        }
        let mut admitted = Admitted {
            counts: self,
            slot: None,
        };
        if let (Some(limit), Some(ip)) = (self.limits.per_ip, ip) {
            let slot = (self.hasher.hash_one(ip) as usize) % self.per_ip.len();
            if !take(&self.per_ip[slot], limit) {
                return Err(Refused::Ip); // `admitted` drops: the listener count is returned
            }
            admitted.slot = Some(slot);
        }
        Ok(admitted)
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_and_uncount() {
        let c = ConnCounts::new(ConnLimits {
            per_listener: 3,
            per_ip: Some(2),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = c.admit(Some(a)).unwrap();
        let a2 = c.admit(Some(a)).unwrap();
        assert_eq!(c.admit(Some(a)).err(), Some(Refused::Ip));
        assert_eq!(c.open(), 2, "a refused connection is not counted");
        let b1 = c.admit(Some(b));
        // b shares a's slot only by a 1-in-65536 chance: then Ip, else ok.
        if let Ok(b1) = b1 {
            assert_eq!(c.admit(None).err(), Some(Refused::Listener));
            drop(b1);
        }
        drop(a1);
        let _a3 = c.admit(Some(a)).unwrap();
        drop(a2);
        assert_eq!(c.open(), 1);
    }

    #[test]
    fn no_per_ip_limit_needs_no_table() {
        let c = ConnCounts::new(ConnLimits {
            per_listener: 1,
            per_ip: None,
        });
        assert!(c.per_ip.is_empty());
        let _one = c.admit(Some("192.0.2.1".parse().unwrap())).unwrap();
        assert_eq!(c.admit(None).err(), Some(Refused::Listener));
    }
}
