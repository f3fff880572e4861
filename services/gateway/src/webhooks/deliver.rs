//! The delivery worker: claims due deliveries, POSTs each once, signed, and
//! records the attempt; a 2xx answer delivers it, anything else (another status,
//! a timeout, a refused or failed connection) schedules the next attempt after
//! the backoff, and the last attempt of a round dead-letters it.
//!
//! Claims are conditional updates on the delivery's version that move its next
//! attempt past the attempt's deadline, so replicas never send a delivery at once,
//! and one whose sender died is taken up again after that.
//!
//! The HTTP client refuses what a partner must not make the gateway reach: other
//! schemes, redirects (not followed: a 3xx is a failed attempt), and, unless
//! `webhooks.allow_private_addresses`, hosts that are or resolve to loopback,
//! private, link-local and other non-public addresses (checked on the addresses
//! actually connected to, so a name that resolves differently later is caught).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::Utc;
use futures::StreamExt;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use retail_kit::error::ServiceResult;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::Webhooks;
use super::domain;
use super::store::{DEAD, DELIVERED, PENDING, attempt, delivery, subscription};

/// Resolves host names to the addresses webhooks may connect to.
#[derive(Debug, Clone)]
struct GuardedResolver {
    allow_private: bool,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || domain::is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the host resolves to no public address",
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// The outbound HTTP client of webhooks.
#[derive(Clone)]
pub struct Sender {
    client: HttpsClient,
    timeout: Duration,
    allow_private: bool,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: why.
    Failed(String),
}

impl Outcome {
    pub fn accepted(&self) -> bool {
        matches!(self, Self::Status(s) if (200..300).contains(s))
    }
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(https);
        Ok(Self {
            client,
            timeout,
            allow_private,
        })
    }

    /// POSTs `body` to `url` with the webhook headers, within the timeout.
    pub async fn send(&self, url: &str, id: &str, secret: &str, body: &str) -> Outcome {
        let uri = match domain::check_url(url, self.allow_private) {
            Ok(uri) => uri,
            Err(domain::BadUrl(why)) => return Outcome::Failed(format!("the URL {why}")),
        };
        let timestamp = Utc::now().timestamp();
        let request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "retail-suite-webhooks/1")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                domain::signature(secret, id, timestamp, body.as_bytes()),
            )
            .body(Full::new(Bytes::from(body.to_owned())));
        let request = match request {
            Ok(request) => request,
            Err(_) => return Outcome::Failed("the request could not be built".into()),
        };
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Outcome::Failed("timed out".into()),
            Ok(Err(err)) => Outcome::Failed(connect_error(&err)),
            // The body is not read: only the status counts.
            Ok(Ok(response)) => Outcome::Status(response.status().as_u16()),
        }
    }
}

/// A connection error without the URL or anything the receiver sent.
fn connect_error(err: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::PermissionDenied => "refused: the host resolves to no public address".into(),
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "connect timed out".into(),
                _ => "connection failed".into(),
            };
        }
        source = inner.source();
    }
    if err.is_connect() {
        "connection failed".into()
    } else {
        "the request failed".into()
    }
}

/// A delivery claimed for one attempt.
struct Claimed {
    delivery: delivery::Model,
    version: i64,
}

impl Webhooks {
    /// Runs the worker until `shutdown`: due deliveries are sent, then it waits for
    /// a wake-up or `webhooks.poll_ms`.
    pub async fn run_worker(self: Arc<Self>, sender: Sender, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            // Attempts cut short by the shutdown are tried again once their claim
            // runs out (at least once, never lost).
            let delivered = tokio::select! {
                () = &mut shutdown => return,
                delivered = self.deliver_due(&sender) => delivered,
            };
            let busy = match delivered {
                Ok(n) => n > 0,
                Err(err) => {
                    tracing::warn!(error = %err, "webhook deliveries could not be read");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll()) => {}
            }
        }
    }

    /// Sends the deliveries due now (at most a batch); returns how many were tried.
    pub async fn deliver_due(&self, sender: &Sender) -> ServiceResult<usize> {
        let now = Utc::now();
        let due = delivery::Entity::find()
            .filter(delivery::Column::State.eq(PENDING))
            .filter(delivery::Column::NextAttemptAt.lte(now))
            .order_by_asc(delivery::Column::NextAttemptAt)
            .limit((self.settings.concurrency * 4) as u64)
            .all(&self.db)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let tried = futures::stream::iter(due)
            .map(|d| async move {
                match self.claim(d).await {
                    Ok(Some(claimed)) => {
                        if let Err(err) = self.attempt(sender, claimed).await {
                            tracing::warn!(error = %err, "a webhook attempt could not be recorded");
                        }
                        1
                    }
                    Ok(None) => 0,
                    Err(err) => {
                        tracing::warn!(error = %err, "a webhook delivery could not be claimed");
                        0
                    }
                }
            })
            .buffer_unordered(self.settings.concurrency)
            .fold(0usize, |n, tried| async move { n + tried })
            .await;
        Ok(tried)
    }

    /// Takes a delivery for one attempt: its next attempt moves past the attempt's
    /// deadline, on condition that nobody changed it since it was read.
    async fn claim(&self, d: delivery::Model) -> ServiceResult<Option<Claimed>> {
        let lease = chrono::Duration::from_std(self.settings.timeout() + Duration::from_secs(30))
            .unwrap_or_else(|_| chrono::Duration::minutes(1));
        let version = d.version + 1;
        let claimed = delivery::Entity::update_many()
            .col_expr(delivery::Column::NextAttemptAt, Expr::value(Utc::now() + lease))
            .col_expr(delivery::Column::Version, Expr::value(version))
            .filter(delivery::Column::Id.eq(d.id.as_str()))
            .filter(delivery::Column::Version.eq(d.version))
            .filter(delivery::Column::State.eq(PENDING))
            .exec(&self.db)
            .await?;
        Ok((claimed.rows_affected == 1).then_some(Claimed { delivery: d, version }))
    }

    /// Sends a claimed delivery once and records the attempt and what follows.
    async fn attempt(&self, sender: &Sender, claimed: Claimed) -> ServiceResult<()> {
        let d = &claimed.delivery;
        let Some(sub) = subscription::Entity::find_by_id(d.subscription_id.clone())
            .one(&self.db)
            .await?
        else {
            // Deleted meanwhile, with its deliveries.
            return Ok(());
        };
        let started = Instant::now();
        let attempted_at = Utc::now();
        let outcome = sender.send(&sub.url, &d.event_id, &sub.secret, &d.body).await;
        let duration_ms = started.elapsed().as_millis().min(i64::MAX as u128) as i64;
        let number = d.attempt_count + 1;
        let in_round = u32::try_from(number - d.round_start).unwrap_or(u32::MAX);
        let now = Utc::now();
        let (state, next) = if outcome.accepted() {
            (DELIVERED, now)
        } else if in_round >= self.settings.max_attempts {
            (DEAD, now)
        } else {
            let wait = domain::backoff(self.settings.backoff_base(), self.settings.backoff_max(), in_round);
            (
                PENDING,
                now + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::hours(1)),
            )
        };
        let (status, error) = match &outcome {
            Outcome::Status(s) => (Some(i32::from(*s)), None),
            Outcome::Failed(why) => (None, Some(why.chars().take(500).collect::<String>())),
        };
        match &outcome {
            Outcome::Status(s) => {
                tracing::info!(delivery_id = %d.id, subscription_id = %d.subscription_id, attempt = number, status = s, state, "webhook attempt")
            }
            Outcome::Failed(why) => {
                tracing::info!(delivery_id = %d.id, subscription_id = %d.subscription_id, attempt = number, error = %why, state, "webhook attempt")
            }
        }
        let txn = retail_kit::db::begin_write(&self.db).await?;
        let updated = delivery::Entity::update_many()
            .col_expr(delivery::Column::State, Expr::value(state))
            .col_expr(delivery::Column::AttemptCount, Expr::value(number))
            .col_expr(delivery::Column::NextAttemptAt, Expr::value(next))
            .col_expr(delivery::Column::Version, Expr::value(claimed.version + 1))
            .col_expr(delivery::Column::LastStatus, Expr::value(status))
            .col_expr(delivery::Column::LastError, Expr::value(error.clone()))
            .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
            .col_expr(
                delivery::Column::DeliveredAt,
                Expr::value((state == DELIVERED).then_some(now).or(d.delivered_at)),
            )
            .filter(delivery::Column::Id.eq(d.id.as_str()))
            .filter(delivery::Column::Version.eq(claimed.version))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            // Deleted or taken over meanwhile: this attempt is not recorded.
            return Ok(());
        }
        attempt::Entity::insert(attempt::ActiveModel {
            delivery_id: Set(d.id.clone()),
            number: Set(number),
            attempted_at: Set(attempted_at),
            status_code: Set(status),
            error: Set(error),
            duration_ms: Set(duration_ms),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }
}
