//! Spans of sampled requests, exported over OTLP/HTTP (protobuf) to
//! `otlp_endpoint`: one server span per request and one client span per
//! upstream attempt, named and attributed after the OpenTelemetry HTTP
//! semantic conventions, plus `unitgate.*`. They are built when a request
//! ends, from what its context recorded, with the ids already on the wire
//! (the server span is the trace's `traceparent` child; each attempt's span
//! is the parent the unit saw). The SDK's batch processor queues them
//! (2,048 at most; more are dropped) and exports from a thread of its own,
//! so a collector that is down or slow costs requests nothing.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
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
    pub protocol: &'a str,
    pub status: u16,
    pub start: SystemTime,
    pub duration: Duration,
    pub shard: Option<u32>,
    pub home: Option<&'a str>,
    pub unit: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub attempts: &'a [AttemptSpan],
}

/// The exporter's handle.
#[derive(Debug)]
pub struct Spans {
    tracer: SdkTracer,
    /// Kept so its batch processor lives as long as the gateway.
    _provider: SdkTracerProvider,
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
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = Resource::builder()
            .with_service_name("unitgate")
            .with_attribute(KeyValue::new("service.instance.id", id.to_owned()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource)
            .build();
        Ok(Spans {
            tracer: provider.tracer("unitgate"),
            _provider: provider,
        })
    }

    /// Queue the spans of `r` (a sampled request).
    pub fn record(&self, r: &RequestSpan<'_>) {
        let trace_id = TraceId::from_bytes(r.trace.trace_id);
        let parent = match r.trace.parent {
            Some(p) => remote(trace_id, p),
            None => Context::new(),
        };
        let name = match r.route {
            "" => r.method.to_owned(),
            route => format!("{} {route}", r.method),
        };
        let mut attrs = vec![
            KeyValue::new("http.request.method", r.method.to_owned()),
            KeyValue::new("url.path", r.path.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(r.status)),
            KeyValue::new("server.address", r.host.to_owned()),
            KeyValue::new("network.protocol.version", r.protocol.to_owned()),
        ];
        if !r.route.is_empty() {
            attrs.push(KeyValue::new("http.route", r.route.to_owned()));
        }
        attrs.extend(r.client.clone().map(|c| KeyValue::new("client.address", c)));
        attrs.extend(
            r.shard
                .map(|s| KeyValue::new("unitgate.shard", i64::from(s))),
        );
        attrs.extend(r.home.map(|h| KeyValue::new("unitgate.home", h.to_owned())));
        attrs.extend(r.unit.map(|u| KeyValue::new("unitgate.unit", u.to_owned())));
        attrs.extend(
            r.reason
                .map(|x| KeyValue::new("unitgate.reason", x.to_owned())),
        );
        let mut span = self
            .tracer
            .span_builder(name.clone())
            .with_kind(SpanKind::Server)
            .with_trace_id(trace_id)
            .with_span_id(SpanId::from_bytes(r.trace.span))
            .with_start_time(r.start)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        if r.status >= 500 {
            opentelemetry::trace::Span::set_status(&mut span, Status::error(""));
        }
        opentelemetry::trace::Span::end_with_timestamp(&mut span, r.start + r.duration);
        let server = remote(trace_id, r.trace.span);
        for a in r.attempts {
            self.attempt(&server, r, a, trace_id);
        }
    }

    fn attempt(&self, server: &Context, r: &RequestSpan<'_>, a: &AttemptSpan, trace_id: TraceId) {
        let mut attrs = vec![
            KeyValue::new("http.request.method", r.method.to_owned()),
            KeyValue::new("server.address", a.peer.ip().to_string()),
            KeyValue::new("server.port", i64::from(a.peer.port())),
            KeyValue::new("unitgate.unit", a.unit.clone()),
            KeyValue::new("unitgate.attempt", i64::from(a.attempt)),
        ];
        attrs.extend(
            a.status
                .map(|s| KeyValue::new("http.response.status_code", i64::from(s))),
        );
        attrs.extend(
            r.reason
                .map(|x| KeyValue::new("unitgate.reason", x.to_owned())),
        );
        let mut span = self
            .tracer
            .span_builder(r.method.to_owned())
            .with_kind(SpanKind::Client)
            .with_trace_id(trace_id)
            .with_span_id(SpanId::from_bytes(a.span))
            .with_start_time(a.start)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, server);
        if a.outcome.is_some_and(|o| o != "ok") || a.status.is_some_and(|s| s >= 500) {
            opentelemetry::trace::Span::set_status(
                &mut span,
                Status::error(a.outcome.unwrap_or("")),
            );
        }
        let end = a.end.unwrap_or_else(SystemTime::now);
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
    }
}

/// A context whose parent is the sampled span `span` of `trace_id`.
fn remote(trace_id: TraceId, span: [u8; 8]) -> Context {
    let sc = SpanContext::new(
        trace_id,
        SpanId::from_bytes(span),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(sc)
}
