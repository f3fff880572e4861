//! `retail-suite up`'s shutdown order: callers stop before the services they call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::net::SocketAddr;
use std::time::Duration;

use futures::FutureExt;
use retail_suite::settings::SuiteSettings;
use tonic_health::pb::health_check_response::ServingStatus;

/// The serving status of `addr` through a new connection, or why there is none.
async fn status(addr: SocketAddr) -> Result<ServingStatus, String> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .map_err(|e| e.to_string())?;
    ServingStatus::try_from(answer.into_inner().status).map_err(|e| e.to_string())
}

#[tokio::test]
async fn on_shutdown_orders_stops_while_the_services_it_calls_still_serve() {
    // Regression: every service got the signal at once, so catalog and membership
    // closed while orders was still finishing its sagas, which then failed with
    // UNAVAILABLE and left their reservations held.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = SuiteSettings {
        data_dir: dir.path().to_path_buf(),
        ..SuiteSettings::default()
    };
    settings.relocate_data();
    // Every port is the system's choice: a fixed one may be held by another test.
    settings.use_free_ports();
    for server in [
        &mut settings.identity.server,
        &mut settings.membership.server,
        &mut settings.catalog.server,
        &mut settings.orders.server,
        &mut settings.partner.server,
        &mut settings.analytics.server,
        &mut settings.gateway.server,
    ] {
        // Long enough that the checks below fall inside each grace on a busy machine.
        server.drain_grace_ms = 3_000;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    }
    .boxed()
    .shared();
    let launched = retail_suite::up::launch(&mut settings, shutdown).await.unwrap();
    let (identity, membership, catalog, orders) = (
        launched.identity,
        launched.membership,
        launched.catalog,
        launched.orders,
    );
    for addr in [identity, membership, catalog, orders] {
        assert_eq!(status(addr).await, Ok(ServingStatus::Serving));
    }

    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(orders).await,
        Ok(ServingStatus::NotServing),
        "orders leaves first"
    );
    for (name, addr) in [("catalog", catalog), ("membership", membership), ("identity", identity)] {
        assert_eq!(
            status(addr).await,
            Ok(ServingStatus::Serving),
            "{name} still serves orders"
        );
    }

    // Orders gone, its callees leave while identity still serves them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while status(orders).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "orders did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(catalog).await, Ok(ServingStatus::NotServing));
    assert_eq!(
        status(identity).await,
        Ok(ServingStatus::Serving),
        "identity outlives its callers"
    );
    tokio::time::timeout(Duration::from_secs(30), launched.wait())
        .await
        .expect("every service stopped")
        .unwrap();
}
