//! The access log's `flags`: what happened to a request beyond its status,
//! as short codes in the manner of Envoy's response flags, comma-separated
//! in a fixed order (`""` when nothing did). `docs/operations.md` lists
//! them.

use crate::answer::GwError;

/// A set of flags.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flags(u16);

/// Each flag: its bit and its code.
const CODES: [(u16, &str); 14] = [
    (Flags::UPSTREAM_CONNECT.0, "UF"),
    (Flags::UPSTREAM_TIMEOUT.0, "UT"),
    (Flags::UPSTREAM_ERROR.0, "UE"),
    (Flags::NO_HEALTHY_UNIT.0, "UH"),
    (Flags::FAILOVER.0, "FO"),
    (Flags::DRAIN.0, "DR"),
    (Flags::SHED.0, "SH"),
    (Flags::RATE_LIMITED.0, "RL"),
    (Flags::AUTH_REFUSED.0, "UA"),
    (Flags::DEADLINE.0, "DT"),
    (Flags::CLIENT_GONE.0, "DC"),
    (Flags::NO_ROUTE.0, "NR"),
    (Flags::BAD_REQUEST.0, "BR"),
    (Flags::SEND_TIMEOUT.0, "ST"),
];

impl Flags {
    /// An upstream connection could not be made (an attempt's, not only
    /// the last one's).
    pub const UPSTREAM_CONNECT: Flags = Flags(1);
    /// An upstream did not answer in time.
    pub const UPSTREAM_TIMEOUT: Flags = Flags(1 << 1);
    /// An upstream broke the exchange (reset, malformed answer).
    pub const UPSTREAM_ERROR: Flags = Flags(1 << 2);
    /// No unit could serve the request.
    pub const NO_HEALTHY_UNIT: Flags = Flags(1 << 3);
    /// Served away from the home unit because it failed.
    pub const FAILOVER: Flags = Flags(1 << 4);
    /// Served away from the home unit because its datacenter is drained.
    pub const DRAIN: Flags = Flags(1 << 5);
    /// Shed: the gateway or the unit's concurrency limit was full.
    pub const SHED: Flags = Flags(1 << 6);
    /// Refused by a quota (429).
    pub const RATE_LIMITED: Flags = Flags(1 << 7);
    /// Refused by the route's auth (401, 403).
    pub const AUTH_REFUSED: Flags = Flags(1 << 8);
    /// The request's deadline passed (504).
    pub const DEADLINE: Flags = Flags(1 << 9);
    /// The client went away before the answer was complete.
    pub const CLIENT_GONE: Flags = Flags(1 << 10);
    /// No route matched (404, 405).
    pub const NO_ROUTE: Flags = Flags(1 << 11);
    /// The request was refused as malformed or too large (400, 408, 413, 431).
    pub const BAD_REQUEST: Flags = Flags(1 << 12);
    /// The answer was ended because the client took nothing for
    /// `send_timeout_ms`.
    pub const SEND_TIMEOUT: Flags = Flags(1 << 13);

    pub fn set(&mut self, f: Flags) {
        self.0 |= f.0;
    }

    pub fn has(self, f: Flags) -> bool {
        self.0 & f.0 == f.0
    }

    /// The flag an error of the gateway's stands for.
    pub fn of_error(err: &GwError) -> Flags {
        match err {
            GwError::UpstreamUnavailable => Flags::UPSTREAM_CONNECT,
            GwError::UpstreamTimeout => Flags::UPSTREAM_TIMEOUT,
            GwError::UpstreamError => Flags::UPSTREAM_ERROR,
            GwError::NoUnit => Flags::NO_HEALTHY_UNIT,
            GwError::Overloaded => Flags::SHED,
            GwError::TooManyRequests(_) => Flags::RATE_LIMITED,
            GwError::TokenMissing
            | GwError::TokenInvalid(_)
            | GwError::CredentialMalformed
            | GwError::Forbidden => Flags::AUTH_REFUSED,
            GwError::Deadline => Flags::DEADLINE,
            GwError::ClientClosed => Flags::CLIENT_GONE,
            GwError::NoRoute | GwError::MethodNotAllowed(_) => Flags::NO_ROUTE,
            GwError::BadRequest(_)
            | GwError::MalformedHead
            | GwError::ConnectUnsupported
            | GwError::HopLimit
            | GwError::HeadersTooLarge
            | GwError::PayloadTooLarge
            | GwError::RequestTimeout
            | GwError::HeadTimeout => Flags::BAD_REQUEST,
            GwError::Internal | GwError::NotReady => Flags::default(),
        }
    }

    /// The codes, comma-separated.
    pub fn codes(self) -> String {
        let mut out = String::new();
        for (bit, code) in CODES {
            if self.0 & bit != 0 {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(code);
            }
        }
        out
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// Written as its codes, comma-separated (`""` when none).
impl serde::Serialize for Flags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.codes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_in_order() {
        let mut all = Flags::default();
        for (bit, _) in CODES {
            assert_eq!(all.0 & bit, 0, "bit {bit} used twice");
            all.set(Flags(bit));
        }
        assert_eq!(all.codes(), "UF,UT,UE,UH,FO,DR,SH,RL,UA,DT,DC,NR,BR,ST");
        assert_eq!(Flags::default().codes(), "");
        let f = Flags::FAILOVER | Flags::UPSTREAM_CONNECT;
        assert_eq!(f.codes(), "UF,FO");
        assert!(f.has(Flags::FAILOVER) && !f.has(Flags::DRAIN));
    }
}
