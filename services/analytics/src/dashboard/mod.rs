//! The KPI dashboard: server-rendered HTML pages for staff over HTTP, on a port of
//! its own (`http.port`), calling the same use cases as the gRPC adapter.
//!
//! - [`session`]: login through identity's password login, the session cookies,
//!   refresh, logout, CSRF and the roles that may see which page.
//! - [`pages`]: one handler per page; each builds a [`view::Page`] of sections
//!   (a chart and the table under it), rendered as HTML or, with `?format=csv`,
//!   as the CSV of one table.
//! - [`campaigns`]: membership's campaigns and reports, read with the user's own
//!   access token for the campaigns page.
//! - [`view`]: the layout, the SVG charts and the tables (maud escapes every
//!   value it splices in); [`query`]: the period and filters held in the URL.
//!
//! Every asset (CSS, the refresh script) is compiled into the binary.

pub mod campaigns;
pub mod pages;
pub mod query;
pub mod session;
pub mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use retail_kit::auth::Verifier;
use tokio::net::TcpListener;

pub use campaigns::Campaigns;
pub use session::{Sessions, Tokens};

use crate::app::App;

/// What every handler reaches.
#[derive(Clone)]
pub struct State {
    pub app: Arc<App>,
    pub verifier: Arc<Verifier>,
    pub sessions: Arc<dyn Sessions>,
    /// Membership's campaigns; `None` without `sources.membership_url`.
    pub campaigns: Option<Arc<dyn Campaigns>>,
    /// Seconds since the epoch (tests hand in a fixed clock).
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

impl State {
    pub fn now(&self) -> i64 {
        (self.clock)()
    }
}

/// The dashboard's bound listener: its address is known before serving starts.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    pub async fn bind(host: &str, port: u16) -> anyhow::Result<Self> {
        let host = if host == "localhost" { "127.0.0.1" } else { host };
        let listener = TcpListener::bind((host, port))
            .await
            .with_context(|| format!("failed to bind the dashboard port {host}:{port} (`http.port`)"))?;
        let addr = listener.local_addr().context("failed to read the dashboard address")?;
        Ok(Self { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/sales", get(pages::sales))
        .route("/pyramid", get(pages::pyramid))
        .route("/rfm", get(pages::rfm))
        .route("/rfm/{segment}", get(pages::rfm_members))
        .route("/lifecycle", get(pages::lifecycle))
        .route("/cohorts", get(pages::cohorts))
        .route("/stores", get(pages::stores))
        .route("/staff", get(pages::staff))
        .route("/products", get(pages::products))
        .route("/partners", get(pages::partners))
        .route("/campaigns", get(pages::campaigns))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/app.css", get(view::css))
        .route("/assets/app.js", get(view::js))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: Listener,
    state: State,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(address = %listener.addr, "dashboard at http://{}/", listener.addr);
    axum::serve(listener.listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("the dashboard server failed")
}
