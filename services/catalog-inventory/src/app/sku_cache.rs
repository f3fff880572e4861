//! The read cache of SKU views (`BatchGetSkus`, quotes): each SKU with its sellable
//! stock and listed channels, kept until the catalog's own event log says it changed.
//!
//! Every change to what a view shows publishes an event naming the SKU (stock,
//! reservations, listings; anything unknown clears everything), so each replica
//! follows the log (see [`super::read_cache`]) and evicts what the events name
//! ([`crate::events::seen`]). A view is therefore at most one log delivery old: a
//! few milliseconds for changes made by this replica, up to `events.poll_ms` for
//! other replicas'. Reservations never read this cache; they decide on the stock
//! rows themselves.
//!
//! A slow load must not put back a view older than a change whose event was already
//! applied: loads note the last applied position before reading, and a view is kept
//! only if no event after that position evicted its SKU (checked after the insert,
//! so an eviction racing the insert is never lost).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use retail_proto::events as ev;

use super::read_cache::FollowsLog;
use crate::events::{self, Seen};
use crate::store::SkuView;

/// Eviction stripes (8 bytes each).
const STRIPES: usize = 1 << 16;

/// No position applied yet: the follower has not started, so nothing may be cached.
const NOT_FOLLOWING: u64 = u64::MAX;

pub(crate) struct SkuCache {
    views: moka::sync::Cache<String, Arc<SkuView>>,
    /// Log position of the last eviction, per stripe of SKU codes (by hash): bounded
    /// memory, and a collision only keeps a fresh view out of the cache, never lets a
    /// stale one in.
    evicted: Box<[AtomicU64]>,
    /// Position of the last event that cleared every view.
    cleared: AtomicU64,
    /// Position of the last event applied; [`NOT_FOLLOWING`] before the follower runs.
    applied: AtomicU64,
    /// Codes of SKUs known to exist (quotes need no more). SKUs are never deleted,
    /// so an entry never goes stale and no event evicts it.
    existing: moka::sync::Cache<String, ()>,
}

impl std::fmt::Debug for SkuCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkuCache")
            .field("entries", &self.views.entry_count())
            .field("applied", &self.applied.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Where a load stands relative to the log: taken before reading the database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadTicket(u64);

impl SkuCache {
    /// `capacity` views at most (0 disables caching), each dropped after `ttl` at the
    /// latest.
    pub(crate) fn new(capacity: u64, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            views: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            evicted: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            cleared: AtomicU64::new(0),
            applied: AtomicU64::new(NOT_FOLLOWING),
            existing: moka::sync::Cache::builder().max_capacity(capacity).build(),
        })
    }

    /// Those of `codes` not known to exist, each once.
    pub(crate) fn not_known_to_exist(&self, codes: &[String]) -> Vec<String> {
        let mut unknown: Vec<String> = Vec::new();
        for code in codes {
            if !self.existing.contains_key(code) && !unknown.contains(code) {
                unknown.push(code.clone());
            }
        }
        unknown
    }

    /// The cached views of `codes` (by code) and the codes to load, each once.
    pub(crate) fn get_many(&self, codes: &[String]) -> (HashMap<String, Arc<SkuView>>, Vec<String>) {
        let mut found = HashMap::with_capacity(codes.len());
        let mut missing = Vec::new();
        for code in codes {
            if found.contains_key(code) || missing.contains(code) {
                continue;
            }
            match self.views.get(code) {
                Some(view) => {
                    found.insert(code.clone(), view);
                }
                None => missing.push(code.clone()),
            }
        }
        (found, missing)
    }

    /// Taken before a load reads the database.
    pub(crate) fn ticket(&self) -> LoadTicket {
        LoadTicket(self.applied.load(Ordering::SeqCst))
    }

    /// Keeps a loaded view unless an event applied after `ticket` touched its SKU.
    /// Either way the SKU is known to exist from then on.
    pub(crate) fn put(&self, ticket: LoadTicket, view: Arc<SkuView>) {
        let code = view.sku.code.clone();
        self.existing.insert(code.clone(), ());
        if ticket.0 == NOT_FOLLOWING {
            return;
        }
        self.views.insert(code.clone(), view);
        let newer = self.stripe(&code).load(Ordering::SeqCst) > ticket.0
            || self.cleared.load(Ordering::SeqCst) > ticket.0
            || self.applied.load(Ordering::SeqCst) == NOT_FOLLOWING;
        if newer {
            self.views.invalidate(&code);
        }
    }

    fn stripe(&self, code: &str) -> &AtomicU64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(code);
        &self.evicted[(hash as usize) % self.evicted.len()]
    }

    fn evict(&self, code: &str, position: u64) {
        self.stripe(code).fetch_max(position, Ordering::SeqCst);
        self.views.invalidate(code);
    }

    fn clear(&self, position: u64) {
        self.cleared.fetch_max(position, Ordering::SeqCst);
        self.views.invalidate_all();
    }
}

impl FollowsLog for SkuCache {
    fn start(&self, position: u64) {
        // Nothing cached, or loaded, before this point survives a restart.
        self.clear(position);
        self.applied.store(position, Ordering::SeqCst);
    }

    /// Evicts the SKUs an event names (everything for an event this build does
    /// not know).
    fn apply(&self, event: &ev::EventEnvelope) {
        let p = event.position;
        match events::seen(event) {
            Seen::Skus(Some(codes)) => codes.iter().for_each(|c| self.evict(c, p)),
            // None of these shows in a SKU view (a SKU's attributes never change; a
            // new SKU was never cached, as misses are not).
            Seen::Price | Seen::Neither => {}
            // Unreadable, or anything this build does not know: start over.
            Seen::Skus(None) | Seen::Unknown => self.clear(p),
        }
        self.applied.store(p, Ordering::SeqCst);
    }

    fn stop(&self) {
        self.applied.store(NOT_FOLLOWING, Ordering::SeqCst);
        self.views.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use retail_kit::events::Outgoing;

    use super::*;
    use crate::events::envelope;
    use crate::store::sku;

    fn view(code: &str, sellable: i64) -> Arc<SkuView> {
        Arc::new(SkuView {
            sku: sku::Model {
                code: code.into(),
                product_id: "p".into(),
                attributes_json: "{}".into(),
                created_at: chrono::Utc::now(),
            },
            sellable,
            listed_channels: Vec::new(),
        })
    }

    fn event<M: prost::Message + prost::Name>(position: u64, payload: M) -> ev::EventEnvelope {
        envelope(position, &Outgoing::of(&payload))
    }

    /// An event of a type this build does not know.
    fn something_new(position: u64) -> ev::EventEnvelope {
        let mut e = event(position, ev::PriceChanged::default());
        e.r#type = "SomethingNew".into();
        e
    }

    fn stock_changed(position: u64, code: &str) -> ev::EventEnvelope {
        event(
            position,
            ev::StockChanged {
                sku_code: code.into(),
                ..Default::default()
            },
        )
    }

    fn following(cache: &SkuCache, at: u64) {
        cache.clear(at);
        cache.applied.store(at, Ordering::SeqCst);
    }

    fn cached(cache: &SkuCache, code: &str) -> Option<i64> {
        cache.views.get(code).map(|v| v.sellable)
    }

    #[test]
    fn nothing_is_cached_before_the_log_is_followed() {
        let cache = SkuCache::new(100, Duration::from_secs(60));
        cache.put(cache.ticket(), view("A", 1));
        assert_eq!(cached(&cache, "A"), None);
        following(&cache, 7);
        cache.put(cache.ticket(), view("A", 1));
        assert_eq!(cached(&cache, "A"), Some(1));
    }

    #[test]
    fn a_loaded_sku_stays_known_to_exist_through_evictions() {
        let cache = SkuCache::new(100, Duration::from_secs(60));
        let codes = ["A".to_owned(), "B".to_owned(), "A".to_owned()];
        assert_eq!(cache.not_known_to_exist(&codes), ["A", "B"]);
        // Loaded before the log is followed: the view is not kept, its existence is.
        cache.put(cache.ticket(), view("A", 1));
        following(&cache, 10);
        cache.apply(&stock_changed(11, "A"));
        cache.apply(&something_new(12));
        assert_eq!(cached(&cache, "A"), None);
        assert_eq!(cache.not_known_to_exist(&codes), ["B"]);
    }

    #[test]
    fn a_load_older_than_an_applied_event_for_its_sku_is_not_kept() {
        let cache = SkuCache::new(100, Duration::from_secs(60));
        following(&cache, 10);
        let slow = cache.ticket();
        // The change to A commits and its event is applied while the load runs.
        cache.apply(&stock_changed(11, "A"));
        cache.put(slow, view("A", 5));
        assert_eq!(cached(&cache, "A"), None, "the stale view must not be kept");
        // A load for another SKU from the same moment is still good.
        cache.put(slow, view("B", 3));
        assert_eq!(cached(&cache, "B"), Some(3));
        // A load started after the event is kept.
        cache.put(cache.ticket(), view("A", 4));
        assert_eq!(cached(&cache, "A"), Some(4));
    }

    #[test]
    fn every_event_that_changes_a_view_evicts_the_skus_it_names() {
        let cache = SkuCache::new(100, Duration::from_secs(60));
        following(&cache, 0);
        let units = |codes: &[&str]| -> Vec<ev::ReservedUnits> {
            codes
                .iter()
                .map(|c| ev::ReservedUnits {
                    sku_code: (*c).into(),
                    warehouse_code: "W1".into(),
                    quantity: 1,
                })
                .collect()
        };
        let events = [
            stock_changed(1, "A"),
            event(
                2,
                ev::ListingChanged {
                    sku_code: "A".into(),
                    channel: "online".into(),
                    listed: true,
                },
            ),
            event(
                3,
                ev::ReservationCreated {
                    units: units(&["A", "B"]),
                    ..Default::default()
                },
            ),
            event(
                4,
                ev::ReservationCommitted {
                    units: units(&["A", "B"]),
                    ..Default::default()
                },
            ),
            event(
                5,
                ev::ReservationReleased {
                    units: units(&["A", "B"]),
                    ..Default::default()
                },
            ),
            event(
                6,
                ev::ReservationExpired {
                    units: units(&["A", "B"]),
                    ..Default::default()
                },
            ),
        ];
        for e in &events {
            for code in ["A", "B", "C"] {
                cache.put(cache.ticket(), view(code, 1));
            }
            cache.apply(e);
            assert_eq!(cached(&cache, "A"), None, "{} must evict A", e.r#type);
            assert_eq!(cached(&cache, "C"), Some(1), "{} must keep C", e.r#type);
            if e.r#type.contains(".Reservation") {
                assert_eq!(cached(&cache, "B"), None, "{} must evict B", e.r#type);
            }
        }
        // Events that change no view keep everything; unknown ones clear everything.
        cache.put(cache.ticket(), view("A", 1));
        cache.apply(&event(7, ev::PriceChanged::default()));
        assert_eq!(cached(&cache, "A"), Some(1));
        let before = cache.ticket();
        cache.apply(&something_new(8));
        assert_eq!(cached(&cache, "A"), None);
        assert_eq!(cached(&cache, "C"), None);
        cache.put(before, view("C", 1));
        assert_eq!(cached(&cache, "C"), None, "a load from before a clear is not kept");
    }
}
