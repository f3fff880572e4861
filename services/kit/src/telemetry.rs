//! Logs, traces and RED metrics.
//!
//! - [`init`] installs `tracing` with pretty or JSON logs and, when an OTLP endpoint is
//!   configured, exports traces and metrics over OTLP/gRPC. Without an endpoint the
//!   OpenTelemetry parts are no-ops.
//! - W3C trace context travels in gRPC metadata: [`RpcLayer`] extracts it from every
//!   incoming request, [`inject_context`] adds it to every outgoing one.
//! - [`RpcLayer`] also gives each RPC a span and records rate, errors and duration,
//!   over OTLP and on the Prometheus endpoint ([`crate::metrics`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetrySettings};

/// Flushes exporters when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer_providers: Vec<opentelemetry_sdk::trace::SdkTracerProvider>,
    meter_providers: Vec<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        for p in self.tracer_providers.drain(..) {
            if let Err(err) = p.shutdown() {
                eprintln!("failed to flush traces: {err}");
            }
        }
        for p in self.meter_providers.drain(..) {
            if let Err(err) = p.shutdown() {
                eprintln!("failed to flush metrics: {err}");
            }
        }
    }
}

tokio::task_local! {
    /// The service whose work the current task does, inside a process running
    /// several (`retail-suite up`): its spans and metrics carry its name.
    static SERVICE: &'static str;
}

/// Runs `future` as the work of `service` (see [`init_services`]).
pub async fn scoped<F: std::future::Future>(service: &'static str, future: F) -> F::Output {
    SERVICE.scope(service, future).await
}

/// The service whose work the current task does, if it was [`scoped`].
pub fn current_service() -> Option<&'static str> {
    SERVICE.try_with(|s| *s).ok()
}

/// Carried in the OpenTelemetry context of a service's RPC spans, and so of every
/// span below them: which service's tracer exports them.
#[derive(Debug, Clone, Copy)]
struct ServiceOfSpan(&'static str);

/// A tracer per service: a span goes to the tracer of the service in its
/// context ([`ServiceOfSpan`]), else to the process's.
#[derive(Debug, Clone)]
struct ServiceTracers {
    process: opentelemetry_sdk::trace::SdkTracer,
    services: Arc<HashMap<&'static str, opentelemetry_sdk::trace::SdkTracer>>,
}

impl opentelemetry::trace::Tracer for ServiceTracers {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(
        &self,
        builder: opentelemetry::trace::SpanBuilder,
        parent_cx: &opentelemetry::Context,
    ) -> Self::Span {
        let tracer = parent_cx
            .get::<ServiceOfSpan>()
            .and_then(|s| self.services.get(s.0))
            .unwrap_or(&self.process);
        tracer.build_with_context(builder, parent_cx)
    }
}

/// The RPC metrics of each service of the process, by name; the process's own
/// (the global meter) serve the others.
static SERVICE_METRICS: OnceLock<HashMap<&'static str, RpcMetrics>> = OnceLock::new();

/// The OTLP exporters of one `service.name`.
fn otlp_providers(
    service: &str,
    endpoint: &str,
    key: &str,
) -> anyhow::Result<(
    opentelemetry_sdk::trace::SdkTracerProvider,
    opentelemetry_sdk::metrics::SdkMeterProvider,
)> {
    use anyhow::Context as _;
    use opentelemetry_otlp::WithExportConfig;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_owned())
        .build()
        .with_context(|| format!("invalid configuration: `{key}`"))?;
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_owned())
        .build()
        .with_context(|| format!("invalid configuration: `{key}`"))?;
    let meter_provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource)
        .build();
    Ok((tracer_provider, meter_provider))
}

/// Installs the global subscriber for `service`. Call once per process.
pub fn init(service: &str, settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    init_services(service, settings, &[])
}

/// Installs the global subscriber of a process running several services
/// (`retail-suite up`): logs as `process` says, and traces and metrics exported
/// under each service's own `service.name`, to its own `otlp_endpoint` or else to
/// the process's. A service's work is told apart by [`scoped`]. A service's log
/// settings cannot apply to a shared log, and are reported when they differ from
/// the process's. Call once per process.
pub fn init_services(
    process: &str,
    settings: &TelemetrySettings,
    services: &[(&'static str, &TelemetrySettings)],
) -> anyhow::Result<TelemetryGuard> {
    use anyhow::Context as _;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_filter))
        .context("invalid configuration: `telemetry.log_filter` is not a tracing filter")?;
    let mut guard = TelemetryGuard::default();

    let process_tracer = match &settings.otlp_endpoint {
        Some(endpoint) => {
            let (tracer_provider, meter_provider) = otlp_providers(process, endpoint, "telemetry.otlp_endpoint")?;
            opentelemetry::global::set_meter_provider(meter_provider.clone());
            opentelemetry::global::set_tracer_provider(tracer_provider.clone());
            let tracer = tracer_provider.tracer(process.to_owned());
            guard.tracer_providers.push(tracer_provider);
            guard.meter_providers.push(meter_provider);
            Some(tracer)
        }
        None => None,
    };
    let mut tracers = HashMap::new();
    let mut meters = HashMap::new();
    for (service, own) in services {
        let Some(endpoint) = own.otlp_endpoint.as_ref().or(settings.otlp_endpoint.as_ref()) else {
            continue;
        };
        let key = format!("{service}.telemetry.otlp_endpoint");
        let (tracer_provider, meter_provider) = otlp_providers(service, endpoint, &key)?;
        tracers.insert(*service, tracer_provider.tracer(*service));
        meters.insert(
            *service,
            RpcMetrics::of(&opentelemetry::metrics::MeterProvider::meter(&meter_provider, "retail")),
        );
        guard.tracer_providers.push(tracer_provider);
        guard.meter_providers.push(meter_provider);
    }
    let _ = SERVICE_METRICS.set(meters);
    let otel_layer = if process_tracer.is_none() && tracers.is_empty() {
        None
    } else {
        // Spans of no service go to the process's exporter, or nowhere.
        let process_tracer = process_tracer.unwrap_or_else(|| {
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
            let tracer = provider.tracer(process.to_owned());
            guard.tracer_providers.push(provider);
            tracer
        });
        Some(tracing_opentelemetry::layer().with_tracer(ServiceTracers {
            process: process_tracer,
            services: Arc::new(tracers),
        }))
    };

    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    match settings.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init()?,
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer().compact()).try_init()?,
    }
    for (service, own) in services {
        if own.log_filter != settings.log_filter || own.log_format != settings.log_format {
            tracing::warn!(
                service,
                "`{service}.telemetry.log_filter` and `log_format` do not apply here: every service of this \
                 process logs through one log, set by `telemetry.log_filter` and `telemetry.log_format`"
            );
        }
    }
    Ok(guard)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Adds the current span's trace context (`traceparent`, `tracestate`) to outgoing
/// metadata.
pub fn inject_context(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
}

/// The trace context of an incoming request.
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct RpcMetrics {
    requests: Counter<u64>,
    duration: Histogram<f64>,
}

impl RpcMetrics {
    fn of(meter: &opentelemetry::metrics::Meter) -> Self {
        RpcMetrics {
            requests: meter
                .u64_counter("rpc.server.requests")
                .with_description("RPCs served, by method and gRPC status")
                .build(),
            duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("ms")
                .with_description("Time to the response headers, by method and gRPC status")
                .build(),
        }
    }
}

/// The RPC metrics of `service` when it has its own exporter, else the process's.
fn metrics(service: Option<&'static str>) -> &'static RpcMetrics {
    static METRICS: OnceLock<RpcMetrics> = OnceLock::new();
    service
        .and_then(|s| SERVICE_METRICS.get().and_then(|m| m.get(s)))
        .unwrap_or_else(|| METRICS.get_or_init(|| RpcMetrics::of(&opentelemetry::global::meter("retail"))))
}

/// Tower layer: a span per RPC (child of the caller's trace), and RED metrics.
#[derive(Clone, Debug, Default)]
pub struct RpcLayer {
    service: Option<&'static str>,
}

impl RpcLayer {
    /// The RPCs of `service` inside a process running several (see [`scoped`]);
    /// `None` in a process of its own.
    pub fn for_service(service: Option<&'static str>) -> Self {
        Self { service }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            service: self.service,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    service: Option<&'static str>,
}

/// gRPC status of a response: from the headers of a trailers-only (error) response,
/// else OK (a streaming response may still fail later; its trailers are not read).
fn grpc_status<B>(response: &http::Response<B>) -> i32 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .map(|(s, m)| (s.to_owned(), m.to_owned()))
            .unwrap_or_else(|| (path.clone(), String::new()));
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let mut parent = extract_context(request.headers());
        if let Some(service) = self.service {
            parent = parent.with_value(ServiceOfSpan(service));
        }
        let _ = span.set_parent(parent);
        let service_name = self.service;
        Box::pin(
            async move {
                let started = Instant::now();
                let result = inner.call(request).await;
                let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                let code = match &result {
                    Ok(response) => grpc_status(response),
                    Err(_) => tonic::Code::Unknown as i32,
                };
                tracing::Span::current().record("rpc.grpc.status_code", code);
                crate::metrics::rpc_served(&service, &method, code, started.elapsed());
                let attributes = [
                    KeyValue::new("rpc.service", service),
                    KeyValue::new("rpc.method", method),
                    KeyValue::new("rpc.grpc.status_code", code as i64),
                ];
                let m = metrics(service_name);
                m.requests.add(1, &attributes);
                m.duration.record(elapsed_ms, &attributes);
                let server_fault = matches!(
                    tonic::Code::from_i32(code),
                    tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss | tonic::Code::Unavailable
                );
                if server_fault {
                    tracing::warn!(grpc_status = code, elapsed_ms, "rpc failed");
                } else {
                    tracing::debug!(grpc_status = code, elapsed_ms, "rpc finished");
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_round_trips_through_metadata() {
        // A remote parent in the W3C format survives extract -> inject unchanged.
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().unwrap());
        let cx = extract_context(&headers);
        let mut metadata = tonic::metadata::MetadataMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(&mut metadata));
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some(traceparent)
        );
    }

    /// Records the `service.name` of its provider's resource with each span's name.
    #[derive(Debug)]
    struct CapturingExporter {
        captured: Arc<std::sync::Mutex<Vec<(String, String)>>>,
        service: String,
    }

    impl opentelemetry_sdk::trace::SpanExporter for CapturingExporter {
        fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
            let mut captured = self.captured.lock().unwrap();
            for span in batch {
                captured.push((self.service.clone(), span.name.to_string()));
            }
            std::future::ready(Ok(()))
        }

        fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
            self.service = resource
                .get(&opentelemetry::Key::new("service.name"))
                .map(|v| v.to_string())
                .unwrap_or_default();
        }
    }

    #[tokio::test]
    async fn inside_one_process_each_service_exports_under_its_own_service_name() {
        // Regression: inside `retail-suite up` every span said service.name =
        // retail-suite, so a tracing backend could not tell the services apart.
        let captured = Arc::new(std::sync::Mutex::new(Vec::new()));
        let provider = |name: &str| {
            opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_simple_exporter(CapturingExporter {
                    captured: captured.clone(),
                    service: String::new(),
                })
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(name.to_owned())
                        .build(),
                )
                .build()
        };
        let (process, identity, orders) = (provider("retail-suite"), provider("identity"), provider("orders"));
        let tracers = ServiceTracers {
            process: process.tracer("retail-suite"),
            services: Arc::new(HashMap::from([
                ("identity", identity.tracer("identity")),
                ("orders", orders.tracer("orders")),
            ])),
        };
        let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracers));
        let _default = tracing::subscriber::set_default(subscriber);
        for service in [Some("identity"), Some("orders"), None] {
            let handler = tower::service_fn(|_request: http::Request<()>| async {
                tracing::info_span!("handler").in_scope(|| ());
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            });
            let mut rpc = tower::Layer::layer(&RpcLayer::for_service(service), handler);
            let request = http::Request::builder()
                .uri("/retail.test.v1.TestService/Ping")
                .body(())
                .unwrap();
            tower::Service::call(&mut rpc, request).await.unwrap();
        }
        let mut spans = captured.lock().unwrap().clone();
        spans.sort();
        let expected: Vec<(String, String)> = [
            ("identity", "/retail.test.v1.TestService/Ping"),
            ("identity", "handler"),
            ("orders", "/retail.test.v1.TestService/Ping"),
            ("orders", "handler"),
            ("retail-suite", "/retail.test.v1.TestService/Ping"),
            ("retail-suite", "handler"),
        ]
        .iter()
        .map(|(s, n)| ((*s).to_owned(), (*n).to_owned()))
        .collect();
        assert_eq!(spans, expected);
    }

    #[test]
    fn grpc_status_is_read_from_trailers_only_responses() {
        let ok = http::Response::new(());
        assert_eq!(grpc_status(&ok), 0);
        let (parts, _) = tonic::Status::not_found("x").into_http::<()>().into_parts();
        let err = http::Response::from_parts(parts, ());
        assert_eq!(grpc_status(&err), tonic::Code::NotFound as i32);
    }
}
