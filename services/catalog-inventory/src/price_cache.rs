//! The read cache behind quotes: list prices by SKU and currency, and the rules every
//! consumer quote applies (tier discounts, and the promotions not yet ended), kept
//! until a price changes.
//!
//! Every price change publishes `PriceChanged` on the catalog's own log. Each replica
//! follows the log (see [`crate::read_cache`]) and drops everything cached when it
//! applies one; the replica that made the change also drops it right after its
//! commit, so it quotes its own change at once. Other replicas quote it within one
//! log delivery: a few milliseconds, up to `events.poll_ms`.
//!
//! A slow load must not put back prices read before a change that was already
//! dropped: loads note the count of changes before reading, every entry carries the
//! count it was read at, and an entry from before the latest change is a miss (so a
//! load that races a change may insert, but is never served).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use retail_proto::events as ev;

use crate::domain::pricing::Promotion;
use crate::read_cache::FollowsLog;

/// The price rules of consumer quotes, as loaded at one time.
#[derive(Debug, Clone)]
pub struct PriceRules {
    /// Valid for quotes at or after this time: promotions that ended before it were
    /// not loaded.
    pub loaded_at: DateTime<Utc>,
    /// Discount in basis points, by tier.
    pub tier_discounts: HashMap<String, u32>,
    /// Promotions that had not ended at `loaded_at`, by id, each with its SKUs
    /// (`None`: every SKU).
    pub promotions: Vec<(Promotion, Option<HashSet<String>>)>,
}

impl PriceRules {
    pub fn tier_discount(&self, tier: &str) -> Option<u32> {
        self.tier_discounts.get(tier).copied()
    }

    /// The promotions active at `at` for each of `codes`, in the order they were
    /// loaded (by id).
    pub fn active_promotions(&self, codes: &[String], at: DateTime<Utc>) -> HashMap<String, Vec<Promotion>> {
        let mut out: HashMap<String, Vec<Promotion>> = HashMap::new();
        for (promotion, skus) in &self.promotions {
            if !promotion.is_active(at) {
                continue;
            }
            for code in codes {
                if skus.as_ref().is_none_or(|skus| skus.contains(code)) {
                    out.entry(code.clone()).or_default().push(promotion.clone());
                }
            }
        }
        out
    }
}

/// Where a load stands: the count of changes before it read the database.
#[derive(Debug, Clone, Copy)]
pub struct LoadTicket(u64);

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
    pub fn new(capacity: u64, ttl: Duration) -> Arc<Self> {
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
    pub fn ticket(&self) -> LoadTicket {
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
    pub fn list_prices(&self, currency: &str, codes: &[String]) -> (HashMap<String, i64>, Vec<String>) {
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
    pub fn put_list_prices(&self, ticket: LoadTicket, currency: &str, codes: &[String], prices: &HashMap<String, i64>) {
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
    pub fn put_rules(&self, ticket: LoadTicket, rules: Arc<PriceRules>) {
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
    pub fn changed(&self) {
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
        match event.r#type.as_str() {
            // None of these changes a quote.
            "retail.events.v1.StockChanged"
            | "retail.events.v1.ListingChanged"
            | "retail.events.v1.ReservationCreated"
            | "retail.events.v1.ReservationCommitted"
            | "retail.events.v1.ReservationReleased"
            | "retail.events.v1.ReservationExpired"
            | "retail.events.v1.CompetitorUndercut"
            | "retail.events.v1.ProductCreated"
            | "retail.events.v1.ProductUpdated" => {}
            // A price change, or anything this build does not know: start over.
            _ => self.changed(),
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
        let event = |ty: &str| ev::EventEnvelope {
            r#type: ty.to_owned(),
            ..Default::default()
        };
        cache.apply(&event("retail.events.v1.StockChanged"));
        assert!(cache.rules(now).is_some());
        cache.apply(&event("retail.events.v1.PriceChanged"));
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

    #[test]
    fn active_promotions_follow_their_window_and_skus() {
        let now = Utc::now();
        let promotion = |id: &str, from: i64, to: i64| Promotion {
            id: id.to_owned(),
            display_name: id.to_owned(),
            discount_bp: 1000,
            starts_at: now + chrono::Duration::days(from),
            ends_at: now + chrono::Duration::days(to),
        };
        let rules = PriceRules {
            loaded_at: now,
            tier_discounts: HashMap::new(),
            promotions: vec![
                (promotion("all", -1, 1), None),
                (promotion("a-later", 2, 3), Some(HashSet::from(["A".to_owned()]))),
                (promotion("b", -1, 1), Some(HashSet::from(["B".to_owned()]))),
            ],
        };
        let codes = vec!["A".to_owned(), "C".to_owned()];
        let ids = |m: &HashMap<String, Vec<Promotion>>, code: &str| {
            m.get(code)
                .map(|ps| ps.iter().map(|p| p.id.clone()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let active = rules.active_promotions(&codes, now);
        assert_eq!(ids(&active, "A"), ["all"]);
        assert_eq!(ids(&active, "C"), ["all"]);
        assert!(!active.contains_key("B"), "only the SKUs asked for");
        let later = rules.active_promotions(&codes, now + chrono::Duration::days(2));
        assert_eq!(ids(&later, "A"), ["a-later"]);
        assert!(!later.contains_key("C"));
    }
}
