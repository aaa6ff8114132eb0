//! Spans of sampled requests, exported over OTLP/HTTP (protobuf) to
//! `otlp_endpoint`: one server span per request and one client span per
//! upstream attempt, named and attributed after the OpenTelemetry HTTP
//! semantic conventions, plus `unitgate.*`. They are built when a request
//! ends, from what its context recorded, with the ids already on the wire
//! (the server span is the trace's `traceparent` child; each attempt's span
//! is the parent the unit saw). They are finished spans, so they go as
//! `SpanData` straight to the SDK's batch processor, with no tracer in
//! between (no sampler, no live span, no context per span: the sampling
//! was decided when the request arrived). The processor queues them
//! (2,048 at most; more are dropped) and exports from a thread of its own,
//! so a collector that is down or slow costs requests nothing.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;

use super::ids::Trace;

/// Spans waiting for export at most.
pub const QUEUE: usize = 2048;

/// One upstream attempt of a sampled request.
#[derive(Debug, Clone)]
pub struct AttemptSpan {
    /// The span id the attempt's `traceparent` named.
    pub span: [u8; 8],
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    pub unit: String,
    pub peer: std::net::SocketAddr,
    /// 1 for the first attempt.
    pub attempt: u8,
    pub status: Option<u16>,
    /// How it ended (`ok`, `error`, ...), once it did.
    pub outcome: Option<&'static str>,
}

/// A sampled request, as its server span says it.
#[derive(Debug)]
pub struct RequestSpan<'a> {
    pub trace: &'a Trace,
    pub method: &'a str,
    pub route: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub client: Option<String>,
    pub protocol: &'static str,
    pub status: u16,
    pub start: SystemTime,
    pub duration: Duration,
    pub shard: Option<u32>,
    pub home: Option<&'a str>,
    pub unit: Option<&'a str>,
    pub reason: Option<&'static str>,
    pub attempts: &'a [AttemptSpan],
}

/// The exporter's handle.
#[derive(Debug)]
pub struct Spans {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl Spans {
    /// Export what is queued (at most the exporter's 5 s timeout), then
    /// stop: the gateway calls it once its listeners have closed.
    pub fn shutdown(&self) {
        let _ = self.processor.shutdown();
    }
}

impl Spans {
    /// Export to the collector at `base` (its `/v1/traces`), as service
    /// `unitgate`, instance `id`.
    pub fn start(base: &str, id: &str) -> Result<Spans, String> {
        let endpoint = format!("{}/v1/traces", base.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("otlp_endpoint {endpoint}: {e}"))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_scheduled_delay(Duration::from_millis(500))
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = Resource::builder()
            .with_service_name("unitgate")
            .with_attribute(KeyValue::new("service.instance.id", id.to_owned()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        processor.set_resource(&resource);
        Ok(Spans {
            processor,
            scope: InstrumentationScope::builder("unitgate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    /// A finished span of the trace `trace_id`, queued for export.
    fn finish(&self, s: Finished) {
        self.processor.on_end(SpanData {
            span_context: SpanContext::new(
                s.trace_id,
                SpanId::from_bytes(s.span),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: s.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: s.parent_remote,
            span_kind: s.kind,
            name: s.name,
            start_time: s.start,
            end_time: s.end,
            attributes: s.attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: s.status,
            instrumentation_scope: self.scope.clone(),
        });
    }

    /// Queue the spans of `r` (a sampled request).
    pub fn record(&self, mut r: RequestSpan<'_>) {
        let trace_id = TraceId::from_bytes(r.trace.trace_id);
        let name = match r.route {
            "" => method_name(r.method),
            route => Cow::Owned(format!("{} {route}", r.method)),
        };
        let mut attrs = Vec::with_capacity(11);
        attrs.extend([
            KeyValue::new("http.request.method", method_name(r.method)),
            KeyValue::new("url.path", r.path.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(r.status)),
            KeyValue::new("server.address", r.host.to_owned()),
            KeyValue::new("network.protocol.version", r.protocol),
        ]);
        if !r.route.is_empty() {
            attrs.push(KeyValue::new("http.route", r.route.to_owned()));
        }
        attrs.extend(r.client.take().map(|c| KeyValue::new("client.address", c)));
        attrs.extend(
            r.shard
                .map(|s| KeyValue::new("unitgate.shard", i64::from(s))),
        );
        attrs.extend(r.home.map(|h| KeyValue::new("unitgate.home", h.to_owned())));
        attrs.extend(r.unit.map(|u| KeyValue::new("unitgate.unit", u.to_owned())));
        attrs.extend(r.reason.map(|x| KeyValue::new("unitgate.reason", x)));
        self.finish(Finished {
            trace_id,
            span: r.trace.span,
            parent: r.trace.parent,
            parent_remote: r.trace.parent.is_some(),
            kind: SpanKind::Server,
            name,
            start: r.start,
            end: r.start + r.duration,
            attributes: attrs,
            status: if r.status >= 500 {
                Status::error("")
            } else {
                Status::Unset
            },
        });
        for a in r.attempts {
            self.attempt(&r, a, trace_id);
        }
    }

    fn attempt(&self, r: &RequestSpan<'_>, a: &AttemptSpan, trace_id: TraceId) {
        let mut attrs = Vec::with_capacity(7);
        attrs.extend([
            KeyValue::new("http.request.method", method_name(r.method)),
            KeyValue::new("server.address", a.peer.ip().to_string()),
            KeyValue::new("server.port", i64::from(a.peer.port())),
            KeyValue::new("unitgate.unit", a.unit.clone()),
            KeyValue::new("unitgate.attempt", i64::from(a.attempt)),
        ]);
        attrs.extend(
            a.status
                .map(|s| KeyValue::new("http.response.status_code", i64::from(s))),
        );
        attrs.extend(r.reason.map(|x| KeyValue::new("unitgate.reason", x)));
        let failed = a.outcome.is_some_and(|o| o != "ok") || a.status.is_some_and(|s| s >= 500);
        self.finish(Finished {
            trace_id,
            span: a.span,
            parent: Some(r.trace.span),
            parent_remote: false,
            kind: SpanKind::Client,
            name: method_name(r.method),
            start: a.start,
            end: a.end.unwrap_or_else(SystemTime::now),
            attributes: attrs,
            status: if failed {
                Status::error(a.outcome.unwrap_or(""))
            } else {
                Status::Unset
            },
        });
    }
}

/// A method's name, borrowed for the standard methods (most requests)
/// so that naming a span or an attribute by it costs no allocation.
fn method_name(method: &str) -> Cow<'static, str> {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().find(|m| **m == method) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(method.to_owned()),
    }
}

/// A span as the request recorded it, finished.
struct Finished {
    trace_id: TraceId,
    span: [u8; 8],
    parent: Option<[u8; 8]>,
    /// The parent is the client's span (not one of the gateway's own).
    parent_remote: bool,
    kind: SpanKind,
    name: Cow<'static, str>,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    status: Status,
}
