//! The read cache behind quotes: list prices by SKU and currency, and the rules every
//! consumer quote applies (tier discounts, and the promotions not yet ended), kept
//! until a price changes.
//!
//! Every price change publishes `PriceChanged` on the catalog's own log. Each replica
//! follows the log (see [`super::read_cache`]) and drops everything cached when it
//! applies one; the replica that made the change also drops it right after its
//! commit, so it quotes its own change at once. Other replicas quote it within one
//! log delivery: a few milliseconds, up to `events.poll_ms`.
//!
//! A slow load must not put back prices read before a change that was already
//! dropped: loads note the count of changes before reading, every entry carries the
//! count it was read at, and an entry from before the latest change is a miss (so a
//! load that races a change may insert, but is never served).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use retail_proto::events as ev;

use super::read_cache::FollowsLog;
use crate::domain::pricing::PriceRules;
use crate::events::{self, Seen};

/// Where a load stands: the count of changes before it read the database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadTicket(u64);

pub struct PriceCache {
    /// List price by (currency, SKU code) with the count of changes it was read at;
    /// `None` when the SKU has none.
    list: moka::sync::Cache<(String, String), (u64, Option<i64>)>,
    /// The rules, when they were loaded, and the count of changes they were read at.
    rules: std::sync::Mutex<Option<(Instant, u64, Arc<PriceRules>)>>,
    /// Price changes seen (events applied, and this replica's own commits).
    changes: AtomicU64,
    /// Whether the log is being followed: nothing is kept otherwise.
    following: AtomicBool,
    ttl: Duration,
    enabled: bool,
}

impl std::fmt::Debug for PriceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriceCache")
            .field("list_prices", &self.list.entry_count())
            .field("changes", &self.changes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PriceCache {
    /// `capacity` list prices at most (0 turns the whole cache off), each kept `ttl`
    /// at the longest, as are the rules.
    pub(crate) fn new(capacity: u64, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            list: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            rules: std::sync::Mutex::new(None),
            changes: AtomicU64::new(0),
            following: AtomicBool::new(false),
            ttl,
            enabled: capacity > 0,
        })
    }

    /// Taken before a load reads the database.
    pub(crate) fn ticket(&self) -> LoadTicket {
        LoadTicket(self.changes.load(Ordering::SeqCst))
    }

    fn still_current(&self, ticket: LoadTicket) -> bool {
        self.enabled && self.following.load(Ordering::SeqCst) && self.changes.load(Ordering::SeqCst) == ticket.0
    }

    /// Whether an entry read at `read_at` (a count of changes) may be served.
    fn fresh(&self, read_at: u64) -> bool {
        self.following.load(Ordering::SeqCst) && self.changes.load(Ordering::SeqCst) == read_at
    }

    /// The cached list prices in `currency` of `codes`, and the codes to load.
    pub(crate) fn list_prices(&self, currency: &str, codes: &[String]) -> (HashMap<String, i64>, Vec<String>) {
        let mut found = HashMap::with_capacity(codes.len());
        let mut missing = Vec::new();
        for code in codes {
            match self.list.get(&(currency.to_owned(), code.clone())) {
                Some((read_at, Some(amount))) if self.fresh(read_at) => {
                    found.insert(code.clone(), amount);
                }
                Some((read_at, None)) if self.fresh(read_at) => {}
                _ => missing.push(code.clone()),
            }
        }
        (found, missing)
    }

    /// Keeps loaded list prices (of `codes`, found in `prices` or without one)
    /// unless a price changed since `ticket`.
    pub(crate) fn put_list_prices(
        &self,
        ticket: LoadTicket,
        currency: &str,
        codes: &[String],
        prices: &HashMap<String, i64>,
    ) {
        if !self.still_current(ticket) {
            return;
        }
        for code in codes {
            self.list.insert(
                (currency.to_owned(), code.clone()),
                (ticket.0, prices.get(code).copied()),
            );
        }
    }

    /// The cached rules, if they hold for a quote at `at`.
    pub fn rules(&self, at: DateTime<Utc>) -> Option<Arc<PriceRules>> {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        match rules.as_ref() {
            Some((loaded, read_at, rules))
                if loaded.elapsed() < self.ttl && self.fresh(*read_at) && at >= rules.loaded_at =>
            {
                Some(rules.clone())
            }
            _ => None,
        }
    }

    /// Keeps loaded rules unless a price changed since `ticket`.
    pub(crate) fn put_rules(&self, ticket: LoadTicket, rules: Arc<PriceRules>) {
        if !self.still_current(ticket) {
            return;
        }
        *self.rules.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ticket.0, rules));
    }

    fn drop_rules(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// A price changed: everything cached goes, and no load that started before
    /// keeps what it read.
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.list.invalidate_all();
        self.drop_rules();
    }
}

impl FollowsLog for PriceCache {
    fn start(&self, _position: u64) {
        self.changed();
        self.following.store(true, Ordering::SeqCst);
    }

    fn apply(&self, event: &ev::EventEnvelope) {
        match events::seen(event) {
            // None of these changes a quote.
            Seen::Skus(_) | Seen::Neither => {}
            // A price change, or anything this build does not know: start over.
            Seen::Price | Seen::Unknown => self.changed(),
        }
    }

    fn stop(&self) {
        self.following.store(false, Ordering::SeqCst);
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(at: DateTime<Utc>) -> Arc<PriceRules> {
        Arc::new(PriceRules {
            loaded_at: at,
            tier_discounts: HashMap::from([("gold".to_owned(), 500)]),
            promotions: Vec::new(),
        })
    }

    fn following() -> Arc<PriceCache> {
        let cache = PriceCache::new(100, Duration::from_secs(60));
        cache.start(0);
        cache
    }

    #[test]
    fn a_load_that_started_before_a_change_keeps_nothing() {
        let cache = following();
        let now = Utc::now();
        let codes = vec!["A".to_owned(), "B".to_owned()];
        let ticket = cache.ticket();
        cache.changed();
        cache.put_rules(ticket, rules(now));
        cache.put_list_prices(ticket, "EUR", &codes, &HashMap::from([("A".to_owned(), 100)]));
        assert!(cache.rules(now).is_none());
        assert_eq!(cache.list_prices("EUR", &codes).1, codes);

        let ticket = cache.ticket();
        cache.put_rules(ticket, rules(now));
        cache.put_list_prices(ticket, "EUR", &codes, &HashMap::from([("A".to_owned(), 100)]));
        assert_eq!(cache.rules(now).map(|r| r.tier_discount("gold")), Some(Some(500)));
        // B has no list price, and that is known too.
        let (found, missing) = cache.list_prices("EUR", &codes);
        assert_eq!(found, HashMap::from([("A".to_owned(), 100)]));
        assert!(missing.is_empty());
        assert_eq!(cache.list_prices("USD", &codes).1, codes, "by currency");

        // A price change on the log drops it all; a stock change does not.
        let event = |ty: String| ev::EventEnvelope {
            r#type: ty,
            ..Default::default()
        };
        cache.apply(&event(<ev::StockChanged as prost::Name>::full_name()));
        assert!(cache.rules(now).is_some());
        cache.apply(&event(<ev::PriceChanged as prost::Name>::full_name()));
        assert!(cache.rules(now).is_none());
        assert_eq!(cache.list_prices("EUR", &codes).1, codes);
    }

    /// A load that passed its check just before a change and inserts just after it
    /// (the change's clear already done) is never served.
    #[test]
    fn an_entry_read_before_the_latest_change_is_a_miss() {
        let cache = following();
        let now = Utc::now();
        let codes = vec!["A".to_owned()];
        let ticket = cache.ticket();
        cache.changed();
        cache
            .list
            .insert(("EUR".to_owned(), "A".to_owned()), (ticket.0, Some(100)));
        *cache.rules.lock().unwrap() = Some((Instant::now(), ticket.0, rules(now)));
        assert_eq!(cache.list_prices("EUR", &codes).1, codes);
        assert!(cache.rules(now).is_none());
    }

    #[test]
    fn rules_serve_only_quotes_at_or_after_their_load_and_nothing_is_kept_unfollowed() {
        let cache = following();
        let now = Utc::now();
        cache.put_rules(cache.ticket(), rules(now));
        assert!(cache.rules(now - chrono::Duration::seconds(1)).is_none());
        assert!(cache.rules(now + chrono::Duration::days(3)).is_some());
        cache.stop();
        cache.put_rules(cache.ticket(), rules(now));
        assert!(cache.rules(now).is_none());
        let off = PriceCache::new(0, Duration::from_secs(60));
        off.start(0);
        off.put_rules(off.ticket(), rules(now));
        assert!(off.rules(now).is_none());
    }
}
