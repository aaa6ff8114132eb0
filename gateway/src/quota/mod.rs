//! Rate quotas (`quotas/<name>`): a keyed GCRA limiter per quota
//! ([`limiter`], on `governor`), the quotas of the snapshot in force with
//! their per-gateway share ([`index`]), and the check a routed request goes
//! through with the headers it answers ([`gate`]).

pub mod gate;
pub mod index;
pub mod limiter;
