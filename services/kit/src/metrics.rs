//! Metrics in the Prometheus text format, on a port of their own (`server.metrics_port`,
//! `GET /metrics`), for a Prometheus scrape or a `ServiceMonitor`:
//!
//! - `retail_rpc_server_requests_total{grpc_service, grpc_method, grpc_code}`: rate
//!   and errors of every RPC served;
//! - `retail_rpc_server_duration_seconds{grpc_service, grpc_method, grpc_code}`:
//!   a histogram of the time to the response headers;
//! - `retail_event_log_head_position{log}`: the newest position a replica gave an
//!   event of its service's log (the appender's replica);
//! - `retail_event_consumer_position{consumer, source, partition}`: how far a
//!   consumer's partition has read the source's log, and
//!   `retail_event_consumer_lag_seconds{...}`: how old the newest event it took
//!   was when it took it; `retail_event_consumer_connected{...}`: 1 while its
//!   subscription is open.
//!
//! The registry is the process's: a process running one service (`serve`) shows
//! that service's metrics; inside `retail-suite up` every service's.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogLabels {
    log: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: &'static str,
    source: &'static str,
    partition: String,
}

type HistogramFamily = Family<RpcLabels, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    requests: Family<RpcLabels, Counter>,
    duration: HistogramFamily,
    head: Family<LogLabels, Gauge>,
    position: Family<ConsumerLabels, Gauge>,
    lag: Family<ConsumerLabels, Gauge<f64, AtomicU64>>,
    connected: Family<ConsumerLabels, Gauge>,
}

/// Seconds, from 1 ms to about 16 s.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "retail_rpc_server_requests",
            "RPCs served, by method and gRPC status",
            requests.clone(),
        );
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "retail_rpc_server_duration_seconds",
            "Time to the response headers, by method and gRPC status",
            duration.clone(),
        );
        let head = Family::<LogLabels, Gauge>::default();
        registry.register(
            "retail_event_log_head_position",
            "The newest position this replica gave an event of the log",
            head.clone(),
        );
        let position = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "retail_event_consumer_position",
            "How far the consumer's partition has read the source's log",
            position.clone(),
        );
        let lag = Family::<ConsumerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "retail_event_consumer_lag_seconds",
            "Age of the newest event the consumer's partition took, when it took it",
            lag.clone(),
        );
        let connected = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "retail_event_consumer_connected",
            "1 while the consumer's partition is subscribed to the source's log",
            connected.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            head,
            position,
            lag,
            connected,
        }
    })
}

/// The gRPC name of a status code, as in `grpc-status` documentation (`NOT_FOUND`).
fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Records one served RPC.
pub(crate) fn rpc_served(service: &str, method: &str, code: i32, elapsed: Duration) {
    let labels = RpcLabels {
        grpc_service: service.to_owned(),
        grpc_method: method.to_owned(),
        grpc_code: code_name(code),
    };
    let m = metrics();
    m.requests.get_or_create(&labels).inc();
    m.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
}

/// Records the newest position given to an event of `log`.
pub(crate) fn log_head(log: &'static str, position: u64) {
    let position = i64::try_from(position).unwrap_or(i64::MAX);
    metrics().head.get_or_create(&LogLabels { log }).set(position);
}

/// A consumer partition's metrics.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerMetrics(ConsumerLabels);

impl ConsumerMetrics {
    pub(crate) fn new(consumer: &'static str, source: &'static str, partition: u32) -> Self {
        Self(ConsumerLabels {
            consumer,
            source,
            partition: partition.to_string(),
        })
    }

    pub(crate) fn connected(&self, connected: bool) {
        metrics().connected.get_or_create(&self.0).set(i64::from(connected));
    }

    /// The partition has read up to `position`; the newest event it took committed
    /// at `newest` (when it took one).
    pub(crate) fn read(&self, position: u64, newest: Option<std::time::SystemTime>) {
        let m = metrics();
        m.position
            .get_or_create(&self.0)
            .set(i64::try_from(position).unwrap_or(i64::MAX));
        if let Some(newest) = newest {
            let lag = std::time::SystemTime::now()
                .duration_since(newest)
                .unwrap_or_default()
                .as_secs_f64();
            m.lag.get_or_create(&self.0).set(lag);
        }
    }
}

/// Everything recorded so far, in the Prometheus text format.
pub fn render() -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &metrics().registry);
    text
}

/// Binds the metrics endpoint on `host:port` and serves it until the task is
/// aborted: `GET /metrics` answers the text format, anything else 404.
pub async fn serve_endpoint(
    host: &str,
    port: u16,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind((host, port))
        .await
        .with_context(|| format!("failed to bind the metrics port {host}:{port} (`server.metrics_port`)"))?;
    let addr = listener.local_addr().context("failed to read the metrics address")?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // A scrape that does not finish in time is dropped.
                let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream)).await;
            });
        }
    });
    Ok((addr, task))
}

/// Answers one HTTP/1 request and closes the connection.
async fn answer(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, body) = if (method == b"GET" || method == b"HEAD") && path == b"/metrics" {
        ("200 OK", render())
    } else {
        (
            "404 Not Found",
            "not found: the metrics are at GET /metrics\n".to_owned(),
        )
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != b"HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_named_as_grpc_names_them() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
        assert_eq!(code_name(-1), "UNKNOWN");
    }

    #[tokio::test]
    async fn the_endpoint_serves_rpc_and_consumer_metrics_as_prometheus_text() {
        rpc_served("retail.test.v1.TestService", "Ping", 5, Duration::from_millis(3));
        let consumer = ConsumerMetrics::new("test-consumer", "test-source", 2);
        consumer.connected(true);
        consumer.read(41, Some(std::time::SystemTime::now() - Duration::from_secs(3)));
        log_head("test-log", 77);

        let (addr, task) = serve_endpoint("127.0.0.1", 0).await.unwrap();
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).await.unwrap();
            text
        };
        let text = get("/metrics").await;
        task.abort();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(
            text.contains(
                r#"retail_rpc_server_requests_total{grpc_service="retail.test.v1.TestService",grpc_method="Ping",grpc_code="NOT_FOUND"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("retail_rpc_server_duration_seconds_bucket{"), "{text}");
        assert!(
            text.contains(
                r#"retail_event_consumer_position{consumer="test-consumer",source="test-source",partition="2"} 41"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"retail_event_consumer_connected{consumer="test-consumer""#),
            "{text}"
        );
        assert!(
            text.contains(r#"retail_event_log_head_position{log="test-log"} 77"#),
            "{text}"
        );
        let lag_line = text
            .lines()
            .find(|l| l.starts_with("retail_event_consumer_lag_seconds{consumer=\"test-consumer\""))
            .unwrap();
        let lag: f64 = lag_line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((3.0..60.0).contains(&lag), "{lag_line}");
    }

    #[tokio::test]
    async fn other_paths_are_not_found() {
        let (addr, task) = serve_endpoint("127.0.0.1", 0).await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        task.abort();
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    }
}
