//! Property tests of the request policies: retries, criticality, the quota
//! key and 404 versus 405.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use unit_router::policy::*;
use unit_router::resilience::Criticality;
use unit_router::routes::{Route, RouteTable};
use unit_router::shard::shard_of;
use unit_router::spec::{AuthMode, ListenerScope, Policy, ShardHash, UpstreamProtocol};
use unit_router::{Listener, Reason, ServiceId};

const METHODS: [&str; 5] = ["DELETE", "GET", "HEAD", "POST", "PUT"];
const HOSTS: [&str; 3] = ["a.example.com", "b.example.com", "example.com"];
const PATHS: [&str; 5] = ["/", "/a", "/a/b", "/ab", "/b/c"];

/// A route on `hosts` and `prefix` taking `methods` (`None`: any).
fn route(
    hosts: Vec<String>,
    prefix: &str,
    methods: Option<Vec<String>>,
    listener: ListenerScope,
) -> Route {
    Route {
        name: format!("{hosts:?}{prefix}{methods:?}{listener:?}"),
        hosts,
        path_prefix: prefix.into(),
        methods,
        service: ServiceId(0),
        service_name: "s".into(),
        policy: Policy::Shard,
        auth: AuthMode::None,
        issuers: Vec::new(),
        require_claims: Vec::new(),
        quotas: Vec::new(),
        listener,
        max_body_bytes: None,
        timeout_ms: None,
        retry_on: vec![502, 503, 504],
        retry_with_idempotency_key: false,
        criticality: Criticality::Default,
        upstream_protocol: UpstreamProtocol::Http1,
        upstream_sni: String::new(),
        hsts: None,
    }
}

fn plain() -> Route {
    route(Vec::new(), "/", None, ListenerScope::Public)
}

fn criticality_level() -> impl Strategy<Value = Criticality> {
    select(vec![
        Criticality::Sheddable,
        Criticality::Default,
        Criticality::Critical,
    ])
}

fn reason() -> impl Strategy<Value = Reason> {
    select(vec![
        Reason::Shard,
        Reason::Region,
        Reason::Center,
        Reason::Local,
        Reason::Failover,
        Reason::Drain,
        Reason::Return,
    ])
}

fn resend() -> impl Strategy<Value = Resend> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(m, k, b)| Resend {
        idempotent_method: m,
        idempotency_key: k,
        body_buffered: b,
    })
}

fn listener() -> impl Strategy<Value = Listener> {
    select(vec![Listener::Public, Listener::Internal])
}

/// A route of a small random table: one of a few hosts (exact, wildcard
/// or none), prefixes and listeners, any method or a few.
fn table_route() -> impl Strategy<Value = Route> {
    (
        select(vec![
            vec![],
            vec!["a.example.com"],
            vec!["*.example.com"],
            vec!["b.example.com", "example.com"],
        ]),
        select(PATHS.to_vec()),
        proptest::option::weighted(0.8, subsequence(METHODS.to_vec(), 1..=3)),
        select(vec![
            ListenerScope::Public,
            ListenerScope::Internal,
            ListenerScope::Both,
        ]),
    )
        .prop_map(|(hosts, prefix, methods, l)| {
            let own = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
            route(own(hosts), prefix, methods.map(own), l)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_unbuffered_body_is_never_sent_again(r in resend(), opt_in in any::<bool>()) {
        let route = Route { retry_with_idempotency_key: opt_in, ..plain() };
        let r = Resend { body_buffered: false, ..r };
        prop_assert!(!may_send_again(&route, r));
    }

    #[test]
    fn an_idempotent_method_with_its_body_is_sent_again_whatever_the_key(
        key in any::<bool>(), opt_in in any::<bool>()
    ) {
        let route = Route { retry_with_idempotency_key: opt_in, ..plain() };
        let r = Resend { idempotent_method: true, idempotency_key: key, body_buffered: true };
        prop_assert!(may_send_again(&route, r));
    }

    #[test]
    fn a_key_counts_only_on_routes_that_opt_in(key in any::<bool>(), opt_in in any::<bool>()) {
        let route = Route { retry_with_idempotency_key: opt_in, ..plain() };
        let r = Resend { idempotent_method: false, idempotency_key: key, body_buffered: true };
        prop_assert_eq!(may_send_again(&route, r), key && opt_in);
    }

    #[test]
    fn retryable_statuses_are_the_routes_retry_on(
        retry_on in proptest::collection::btree_set(400u16..600, 0..8),
        status in prop_oneof![400u16..600, any::<u16>()],
    ) {
        let retry_on: Vec<u16> = retry_on.into_iter().collect();
        let route = Route { retry_on: retry_on.clone(), ..plain() };
        prop_assert_eq!(retryable_status(&route, status), retry_on.contains(&status));
        for &s in &retry_on {
            prop_assert!(retryable_status(&route, s));
        }
    }

    #[test]
    fn criticality_is_the_base_raised_exactly_when_shuttled(
        own in criticality_level(),
        caller in proptest::option::of(criticality_level()),
        dyed in any::<bool>(),
        reason in reason(),
    ) {
        let route = Route { criticality: own, ..plain() };
        let base = caller.unwrap_or(own);
        let c = criticality(&route, caller, dyed, reason);
        prop_assert!(c >= base);
        if dyed || reason.is_shuttle() {
            prop_assert_eq!(c, base.raised());
        } else {
            prop_assert_eq!(c, base);
        }
    }

    #[test]
    fn a_callers_criticality_overrides_the_routes(
        own in criticality_level(), caller in criticality_level(), reason in reason()
    ) {
        let route = Route { criticality: own, ..plain() };
        prop_assert_eq!(
            criticality(&route, Some(caller), false, reason),
            criticality(&Route { criticality: caller, ..plain() }, None, false, reason)
        );
        if !reason.is_shuttle() {
            prop_assert_eq!(criticality(&route, Some(caller), false, reason), caller);
        }
    }

    #[test]
    fn a_verified_user_always_wins(user in "[a-z0-9]{1,12}", header in proptest::option::of(".{0,8}")) {
        let key = user_key(header.as_deref());
        prop_assert_eq!(quota_subject(Some(&user), key), QuotaSubject::User(&user));
    }

    #[test]
    fn a_tokens_shard_never_decides_the_subject(a in 0..u64::MAX / 2, k in 1u64..1_000_000) {
        // Two users of one shard (`mod`, 100 shards), as their routing
        // tokens would say: each is counted under their own key.
        let (x, y) = (a.to_string(), (a + 100 * k).to_string());
        prop_assert_eq!(shard_of(ShardHash::Mod, &x, 100), shard_of(ShardHash::Mod, &y, 100));
        let (sx, sy) = (quota_subject(None, user_key(Some(&x))), quota_subject(None, user_key(Some(&y))));
        prop_assert_eq!(sx, QuotaSubject::Unverified(UserKey(&x)));
        prop_assert_ne!(sx, sy);
        // With the token alone (no header, no verified user): the address.
        prop_assert_eq!(quota_subject(None, user_key(None)), QuotaSubject::Address);
    }

    #[test]
    fn a_header_is_a_key_only_when_not_empty(header in proptest::option::of(".{0,8}")) {
        let key = user_key(header.as_deref());
        match header.as_deref() {
            Some(h) if !h.is_empty() => {
                prop_assert_eq!(key, Some(UserKey(h)));
                prop_assert_eq!(quota_subject(None, key), QuotaSubject::Unverified(UserKey(h)));
            }
            _ => {
                prop_assert_eq!(key, None);
                prop_assert_eq!(quota_subject(None, key), QuotaSubject::Address);
            }
        }
    }

    #[test]
    fn an_unrouted_request_gets_405_exactly_when_other_methods_take_its_path(
        routes in proptest::collection::vec(table_route(), 0..6),
        host in select(HOSTS.to_vec()),
        path in select(PATHS.to_vec()),
        method in select(METHODS.to_vec()),
        l in listener(),
    ) {
        let t = RouteTable::new(routes);
        prop_assume!(t.find(host, path, method, l).is_none());
        let allowed = t.allowed_methods(host, path, l);
        match unrouted(&t, host, path, l) {
            Unrouted::NoRoute => prop_assert!(allowed.is_empty()),
            Unrouted::MethodNotAllowed(allow) => {
                prop_assert!(!allowed.is_empty());
                let listed: Vec<&str> = allow.split(", ").collect();
                prop_assert_eq!(&listed, &allowed);
                prop_assert!(!listed.contains(&method), "{method} in Allow: {allow}");
                // Every method the answer allows is routed.
                for m in listed {
                    prop_assert!(t.find(host, path, m, l).is_some(), "{m} in Allow: {allow}");
                }
            }
        }
    }
}

#[test]
fn allow_lists_the_paths_methods_in_order() {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let t = RouteTable::new(vec![
        route(
            own(&["a.example.com"]),
            "/a",
            Some(own(&["POST", "GET"])),
            ListenerScope::Public,
        ),
        route(
            own(&["*.example.com"]),
            "/a",
            Some(own(&["GET", "DELETE"])),
            ListenerScope::Both,
        ),
        route(
            Vec::new(),
            "/a",
            Some(own(&["PUT"])),
            ListenerScope::Internal,
        ),
    ]);
    let p = Listener::Public;
    assert_eq!(
        unrouted(&t, "a.example.com", "/a/1", p),
        Unrouted::MethodNotAllowed("DELETE, GET, POST".into())
    );
    assert_eq!(unrouted(&t, "a.example.com", "/b", p), Unrouted::NoRoute);
    assert_eq!(
        unrouted(&t, "other.org", "/a", Listener::Internal),
        Unrouted::MethodNotAllowed("PUT".into())
    );
}
