//! Server bootstrap shared by every service: bind first (port 0 works; the bound
//! address is reported), then serve the service's routes with health, reflection and
//! the standard tower stack until shutdown, then drain.
//!
//! Request size: every generated service server (the services' own, health,
//! reflection) decodes messages of at most tonic's default 4 MiB, which is
//! [`crate::limits::MAX_REQUEST_BYTES`]; a larger message is refused with
//! OUT_OF_RANGE (tonic's code for it) before a handler runs. Generated servers take
//! the limit only one by one, so the services leave tonic's default in place and the
//! kit's test pins it. Within it, each repeated field has its
//! own limit (see [`crate::limits`]). Responses are not limited on the sending side;
//! clients of large lists page through them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;

use crate::auth::AuthLayer;
use crate::config::ServerSettings;
use crate::telemetry::RpcLayer;

/// A bound listener: the address is known before serving starts.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds the configured host and port (0 = any free port).
pub async fn bind(settings: &ServerSettings) -> anyhow::Result<Bound> {
    let host = if settings.host == "localhost" {
        "127.0.0.1"
    } else {
        &settings.host
    };
    let listener = TcpListener::bind((host, settings.port))
        .await
        .with_context(|| format!("failed to bind {host}:{}", settings.port))?;
    let addr = listener.local_addr().context("failed to read the bound address")?;
    Ok(Bound { listener, addr })
}

/// What a service hands to [`serve`].
#[derive(Debug)]
pub struct ServiceRoutes {
    pub routes: Routes,
    /// Fully qualified names of the gRPC services, reported by health.
    pub names: Vec<&'static str>,
    /// Verifies tokens; `None` serves without authentication (the echo baseline).
    pub auth: Option<AuthLayer>,
}

/// Maps the load shedder's error to a gRPC status the caller can act on.
fn overloaded_to_status(err: tower::BoxError) -> tower::BoxError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        Box::new(tonic::Status::unavailable("server is overloaded, retry with backoff"))
    } else {
        err
    }
}

/// Serves until `shutdown` resolves, then reports NOT_SERVING, keeps accepting for
/// the drain grace, stops accepting and lets in-flight RPCs finish within the drain
/// timeout. With `metrics_port` set, serves the Prometheus endpoint meanwhile.
pub async fn serve(
    bound: Bound,
    settings: &ServerSettings,
    service: ServiceRoutes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in &service.names {
        health.set_service_status(name, ServingStatus::Serving).await;
    }
    // Both reflection versions: grpcurl before 1.8.8 and many tools speak only v1alpha.
    // Each lists what this port serves, and only that: its own services, health and
    // reflection (the descriptor sets hold every contract, for resolving types).
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(retail_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        advertised(&service.names)
            .into_iter()
            .fold(builder, |builder, name| builder.with_service_name(name))
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("failed to build the reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("failed to build the reflection service")?;
    let routes = service
        .routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    // Outermost first: the in-flight count sees every RPC, so the drain knows when
    // the last one has finished; every RPC gets its span and metrics, including shed ones;
    // shedding happens before any token is verified, so overload costs little;
    // authentication is innermost, next to the handlers.
    let in_flight = InFlight::default();
    let stack = ServiceBuilder::new()
        .layer(in_flight.clone())
        .layer(RpcLayer::for_service(crate::telemetry::current_service()))
        .layer(tower::util::MapErrLayer::new(overloaded_to_status))
        .layer(tower::load_shed::LoadShedLayer::new())
        .layer(tower::limit::ConcurrencyLimitLayer::new(settings.concurrency_limit))
        .option_layer(service.auth)
        .into_inner();

    let mut background = Background::new();
    if let Some(port) = settings.metrics_port {
        let host = if settings.host == "localhost" {
            "127.0.0.1"
        } else {
            &settings.host
        };
        let (addr, task) = crate::metrics::serve_endpoint(host, port).await?;
        tracing::info!(address = %addr, "metrics at GET /metrics");
        background.add(task);
    }

    let draining = Arc::new(tokio::sync::Notify::new());
    let grace = settings.drain_grace();
    let signal = {
        let health = health.clone();
        let names = service.names.clone();
        let draining = draining.clone();
        async move {
            shutdown.await;
            report_not_serving(&health, &names).await;
            // Health says NOT_SERVING while the listener still accepts, so a
            // readiness probe or load balancer sees the replica leave before its
            // connections are refused.
            if !grace.is_zero() {
                tracing::info!(
                    drain_grace_ms = grace.as_millis() as u64,
                    "shutting down: not serving, still accepting"
                );
                tokio::time::sleep(grace).await;
            }
            tracing::info!("shutting down: draining in-flight requests");
            draining.notify_one();
        }
    };

    let server = tonic::transport::Server::builder()
        .timeout(settings.request_timeout())
        .layer(stack)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(bound.listener), signal);
    tokio::pin!(server);
    let drain_timeout = settings.drain_timeout();
    // The server stops by itself once every connection has closed; idle client
    // connections may stay open, so stop as soon as no RPC is in flight any more.
    tokio::select! {
        result = &mut server => result.context("the gRPC server failed")?,
        () = async { draining.notified().await; in_flight.wait_idle(drain_timeout).await } => {}
    }
    drop(background);
    Ok(())
}

/// Counts RPCs between their arrival and their response.
#[derive(Clone, Debug, Default)]
struct InFlight(Arc<AtomicUsize>);

struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InFlight {
    /// Resolves when no RPC has been in flight for a moment (streams that were
    /// already on their way get to arrive), or when `timeout` has passed.
    async fn wait_idle(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let settle = std::time::Duration::from_millis(100);
        let mut idle_since = None;
        loop {
            let now = tokio::time::Instant::now();
            if self.0.load(Ordering::SeqCst) == 0 {
                let since = *idle_since.get_or_insert(now);
                if now - since >= settle {
                    tracing::info!("in-flight requests drained");
                    return;
                }
            } else {
                idle_since = None;
            }
            if now >= deadline {
                tracing::warn!(
                    in_flight = self.0.load(Ordering::SeqCst),
                    drain_timeout_ms = timeout.as_millis() as u64,
                    "drain timeout passed; closing remaining requests"
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl<S> tower::Layer<S> for InFlight {
    type Service = InFlightService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightService {
            inner,
            count: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
struct InFlightService<S> {
    inner: S,
    count: Arc<AtomicUsize>,
}

impl<S, R> tower::Service<R> for InFlightService<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.count.fetch_add(1, Ordering::SeqCst);
        let guard = InFlightGuard(self.count.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let _guard = guard;
            future.await
        })
    }
}

/// Accepted connections with Nagle off: a unary response is written in several small
/// frames, and Nagle plus the peer's delayed ACK would stall each reply by ~40 ms.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)))
}

/// The services a port's reflection lists: `names`, health and reflection.
fn advertised(names: &[&'static str]) -> Vec<&'static str> {
    let mut all = names.to_vec();
    all.extend([
        tonic_health::pb::health_server::SERVICE_NAME,
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
        tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
    ]);
    all
}

async fn report_not_serving(health: &HealthReporter, names: &[&'static str]) {
    health.set_service_status("", ServingStatus::NotServing).await;
    for name in names {
        health.set_service_status(name, ServingStatus::NotServing).await;
    }
}

/// The background tasks of a running service (appender, jobs, consumers). They end
/// with it however it ends: when serving returns, and also when the future running
/// the service is dropped, so that nothing of a stopped service goes on writing.
#[derive(Debug, Default)]
pub struct Background(Vec<tokio::task::AbortHandle>);

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task and hands it back (to be awaited, if its end matters).
    pub fn add<T>(&mut self, task: tokio::task::JoinHandle<T>) -> tokio::task::JoinHandle<T> {
        self.0.push(task.abort_handle());
        task
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "failed to listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shed_requests_are_unavailable_and_other_errors_pass_through() {
        let shed = overloaded_to_status(Box::new(tower::load_shed::error::Overloaded::new()));
        let status = shed.downcast::<tonic::Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let other = overloaded_to_status("boom".into());
        assert!(other.downcast::<tonic::Status>().is_err());
    }

    #[tokio::test]
    async fn reflection_lists_only_what_the_port_serves() {
        // Regression: every port listed every contract (catalog, orders, the bench
        // echo...), and a user following `grpcurl list` got UNIMPLEMENTED.
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

        let bound = bind(&ServerSettings::default()).await.unwrap();
        let addr = bound.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let names = vec![retail_proto::events::event_log_service_server::SERVICE_NAME];
        let server = tokio::spawn(async move {
            let service = ServiceRoutes {
                routes: Routes::default(),
                names,
                auth: None,
            };
            serve(bound, &ServerSettings::default(), service, async {
                let _ = stopped.await;
            })
            .await
        });
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a list: {answer:?}");
        };
        let mut listed: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        listed.sort();
        assert_eq!(
            listed,
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "retail.events.v1.EventLogService",
            ]
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    /// Serves no routes of its own with `settings` until the sender is used.
    async fn spawn_server(
        settings: ServerSettings,
        names: Vec<&'static str>,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let bound = bind(&settings).await.unwrap();
        let addr = bound.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let service = ServiceRoutes {
                routes: Routes::default(),
                names,
                auth: None,
            };
            serve(bound, &settings, service, async {
                let _ = stopped.await;
            })
            .await
        });
        (addr, stop, server)
    }

    /// The serving status of `addr` through a new connection.
    async fn check_on_a_new_connection(addr: SocketAddr) -> Result<i32, String> {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map_err(|e| e.to_string())?;
        Ok(answer.into_inner().status)
    }

    #[tokio::test]
    async fn during_the_drain_grace_new_connections_are_accepted_and_told_not_serving() {
        // Regression: the listener closed the moment health turned NOT_SERVING, so a
        // readiness probe (a Check on a new connection) never saw NOT_SERVING.
        use tonic_health::pb::health_check_response::ServingStatus as Status;
        let settings = ServerSettings {
            drain_grace_ms: 3_000,
            ..ServerSettings::default()
        };
        let (addr, stop, server) = spawn_server(settings, vec![]).await;
        assert_eq!(check_on_a_new_connection(addr).await, Ok(Status::Serving as i32));
        let signalled = tokio::time::Instant::now();
        let _ = stop.send(());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(check_on_a_new_connection(addr).await, Ok(Status::NotServing as i32));
        server.await.unwrap().unwrap();
        assert!(
            signalled.elapsed() >= std::time::Duration::from_millis(3_000),
            "served the whole grace"
        );
        assert!(check_on_a_new_connection(addr).await.is_err(), "closed after the grace");
    }

    #[tokio::test]
    async fn a_request_larger_than_the_request_limit_is_refused_before_any_handler() {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;

        let (addr, stop, server) = spawn_server(ServerSettings::default(), vec![]).await;
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel).max_encoding_message_size(usize::MAX);
        let check = |bytes: usize| HealthCheckRequest {
            service: "x".repeat(bytes),
        };
        let within = client
            .check(check(crate::limits::MAX_REQUEST_BYTES - 64))
            .await
            .unwrap_err();
        assert_eq!(within.code(), tonic::Code::NotFound, "{within:?}");
        let over = client
            .check(check(crate::limits::MAX_REQUEST_BYTES + 1))
            .await
            .unwrap_err();
        assert_eq!(over.code(), tonic::Code::OutOfRange, "{over:?}");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn binding_port_zero_reports_the_real_port() {
        let bound = bind(&ServerSettings::default()).await.unwrap();
        assert_ne!(bound.local_addr().port(), 0);
    }
}
