//! A downstream for orders that fails chosen calls on demand: before the call
//! reaches the service (it is unavailable), after the service has done it (the
//! answer lost), or by hanging after it (a process stopped right there).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use retail_orders::downstream::{Downstream, Held, Units};
use std::sync::Arc;
use tonic::Status;

/// When an injected failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// The call fails without reaching catalog.
    Before,
    /// Catalog does the call; its answer is lost.
    After,
    /// Catalog does the call; the caller then hangs, as a process that stopped there.
    Stall,
}

/// Which calls fail, and how. Every call is counted.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<(&'static str, Strike)>>,
    pub struck: AtomicU64,
}

impl Faults {
    /// Makes every later `call` (e.g. "release", "return_stock", "commit") fail.
    pub fn fail(&self, call: &'static str, strike: Strike) {
        self.rules.lock().unwrap().push((call, strike));
    }

    pub fn heal(&self) {
        self.rules.lock().unwrap().clear();
    }

    fn strike(&self, call: &str) -> Option<Strike> {
        let rules = self.rules.lock().unwrap();
        rules.iter().find(|(c, _)| *c == call).map(|(_, s)| *s)
    }

    async fn around<T>(&self, call: &'static str, inner: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        match self.strike(call) {
            None => inner.await,
            Some(Strike::Before) => {
                self.struck.fetch_add(1, Ordering::SeqCst);
                Err(Status::unavailable(format!("injected: {call} did not reach catalog")))
            }
            Some(Strike::After) => {
                let _ = inner.await;
                self.struck.fetch_add(1, Ordering::SeqCst);
                Err(Status::unavailable(format!("injected: the answer to {call} was lost")))
            }
            Some(Strike::Stall) => {
                let _ = inner.await;
                self.struck.fetch_add(1, Ordering::SeqCst);
                std::future::pending().await
            }
        }
    }
}

#[derive(Debug)]
pub struct Flaky {
    pub inner: Arc<dyn Downstream>,
    pub faults: Arc<Faults>,
}

#[async_trait::async_trait]
impl Downstream for Flaky {
    async fn member_tier(&self, member_id: &str) -> Result<String, Status> {
        self.faults
            .around("member_tier", self.inner.member_tier(member_id))
            .await
    }

    async fn quote(&self, currency: &str, tier: &str, lines: &[Units]) -> Result<Vec<i64>, Status> {
        self.faults
            .around("quote", self.inner.quote(currency, tier, lines))
            .await
    }

    async fn reserve(&self, order_id: &str, lines: &[Units], ttl: Duration) -> Result<(), Status> {
        self.faults
            .around("reserve", self.inner.reserve(order_id, lines, ttl))
            .await
    }

    async fn commit(&self, order_id: &str) -> Result<(), Status> {
        self.faults.around("commit", self.inner.commit(order_id)).await
    }

    async fn held(&self, order_id: &str) -> Result<Held, Status> {
        self.faults.around("held", self.inner.held(order_id)).await
    }

    async fn release(&self, order_id: &str) -> Result<(), Status> {
        self.faults.around("release", self.inner.release(order_id)).await
    }

    async fn return_stock(
        &self,
        order_id: &str,
        lines: &[Units],
        damaged: bool,
        request_id: &str,
    ) -> Result<(), Status> {
        self.faults
            .around(
                "return_stock",
                self.inner.return_stock(order_id, lines, damaged, request_id),
            )
            .await
    }
}
