//! The criticality a request is shed by: the caller's or the route's, one
//! level up when the request is shuttled between units.

use crate::reason::Reason;
use crate::resilience::Criticality;
use crate::routes::Route;

/// How much a request matters if its service must shed: a trusted internal
/// caller's criticality, else the route's; one level up
/// ([`Criticality::raised`]) when the request is shuttled (it came dyed, or
/// the decision's reason is a shuttle: [`Reason::is_shuttle`]).
pub fn criticality(
    route: &Route,
    caller: Option<Criticality>,
    dyed: bool,
    reason: Reason,
) -> Criticality {
    let base = caller.unwrap_or(route.criticality);
    if dyed || reason.is_shuttle() {
        base.raised()
    } else {
        base
    }
}
