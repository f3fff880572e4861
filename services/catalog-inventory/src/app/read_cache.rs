//! Read caches kept current by the catalog's own event log: each replica follows the
//! log from its end and hands every event to its caches ([`FollowsLog`]), which drop
//! what the event changed.

use std::sync::Arc;
use std::time::Duration;

use retail_kit::events::EventLog;
use retail_proto::events::EventEnvelope;

/// A cache that the catalog's log keeps current.
pub(crate) trait FollowsLog: Send + Sync {
    /// Following starts after `position`: nothing cached or loaded before may stay.
    fn start(&self, position: u64);
    /// One event of the log, in order.
    fn apply(&self, event: &EventEnvelope);
    /// Following stopped: nothing may be cached until it starts again.
    fn stop(&self);
}

/// Follows `log` from its current end and applies every event to `caches`, until the
/// log closes. After a read error everything cached is dropped and following resumes.
pub(crate) fn spawn_follower(log: Arc<EventLog>, caches: Vec<Arc<dyn FollowsLog>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let start = match log.max_position().await {
                Ok(p) => p,
                Err(err) => {
                    tracing::warn!(error = %err, "read caches: reading the event log failed; not caching");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            caches.iter().for_each(|c| c.start(start));
            let mut batches = log.follow(start, 1_000);
            let mut failed = false;
            while let Some(batch) = batches.recv().await {
                match batch {
                    Ok(events) => {
                        for event in &events {
                            caches.iter().for_each(|c| c.apply(event));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "read caches: following the event log failed; starting over");
                        failed = true;
                    }
                }
            }
            caches.iter().for_each(|c| c.stop());
            if !failed {
                // The log closed: the service is stopping.
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}
