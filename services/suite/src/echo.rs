//! The bare echo service: the benchmark baseline. It runs behind the same server
//! stack as every service (tracing, metrics, load shedding) but does no work, so a
//! service's figures divided by the echo's show what the service itself costs.

use pb::echo_service_server::{EchoService, EchoServiceServer, SERVICE_NAME};
use pb::{EchoRequest, EchoResponse};
use retail_kit::config::ServerSettings;
use retail_kit::server::{self, Bound, ServiceRoutes};

/// The echo contract (`retail.bench.v1`), a benchmark's, not a production service's.
pub mod pb {
    #![allow(clippy::doc_lazy_continuation)]
    tonic::include_proto!("retail.bench.v1");
}
use tonic::{Request, Response, Status};

#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            payload: request.into_inner().payload,
        }))
    }
}

/// Serves the echo service on `bound` until `shutdown` resolves.
pub async fn serve(
    bound: Bound,
    settings: ServerSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let routes = ServiceRoutes {
        routes: tonic::service::Routes::new(EchoServiceServer::new(Echo)),
        names: vec![SERVICE_NAME],
        auth: None,
    };
    server::serve(bound, &settings, routes, shutdown).await
}
