//! The state a page keeps in its URL: the period (day, week, month, quarter, or
//! custom dates), the filters (channel, store, region, tier, partner, category),
//! the page of a list and the output format. Links are built from it, so every
//! link keeps the page's state.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::app::Period;
use crate::domain::DAY;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Params {
    /// "day", "week", "month" (default), "quarter", "custom".
    pub period: String,
    /// Custom period: first day, `YYYY-MM-DD`.
    pub from: String,
    /// Custom period: last day (inclusive), `YYYY-MM-DD`.
    pub to: String,
    pub channel: String,
    pub store: String,
    pub region: String,
    pub tier: String,
    pub partner: String,
    pub category: String,
    /// "csv" for the CSV of a table.
    pub format: String,
    /// Which table's CSV (its id); the page's first one by default.
    pub table: String,
    /// Page of a member list, from 1.
    pub page: String,
    /// Where a list continues (the campaigns': membership's page token).
    pub page_token: String,
}

/// The sales filters, in the order the first one set wins (the rollups are kept
/// per dimension, so one applies at a time).
pub const FILTERS: [&str; 5] = ["store", "channel", "region", "tier", "partner"];

impl Params {
    pub fn filter(&self, name: &str) -> &str {
        match name {
            "channel" => &self.channel,
            "store" => &self.store,
            "region" => &self.region,
            "tier" => &self.tier,
            "partner" => &self.partner,
            "category" => &self.category,
            _ => "",
        }
    }

    /// The dimension and value sales are asked for: the first filter set, or "all".
    pub fn sales_dimension(&self) -> (&'static str, &str) {
        FILTERS
            .iter()
            .find(|f| !self.filter(f).is_empty())
            .map_or(("all", ""), |f| (*f, self.filter(f)))
    }

    pub fn period_kind(&self) -> &str {
        match self.period.as_str() {
            "day" | "week" | "month" | "quarter" | "custom" => &self.period,
            _ => "month",
        }
    }

    /// The period asked for, ending at the end of today (UTC) unless custom; an
    /// invalid custom period is an error message for the page.
    pub fn resolve(&self, now: i64) -> Result<Period, String> {
        let tomorrow = now - now.rem_euclid(DAY) + DAY;
        let days = match self.period_kind() {
            "day" => 1,
            "week" => 7,
            "quarter" => 91,
            "custom" => {
                let parse = |s: &str, field: &str| {
                    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("{field} must be a date (YYYY-MM-DD)"))
                };
                let from = parse(&self.from, "from")?;
                let to = parse(&self.to, "to")?;
                if to < from {
                    return Err("to must not be before from".into());
                }
                let start = from.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()).unwrap_or(0);
                let end = to.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()).unwrap_or(0) + DAY;
                if end - start > 3 * 366 * DAY {
                    return Err("a custom period spans at most three years".into());
                }
                return Ok(Period { start, end });
            }
            _ => 30,
        };
        Ok(Period {
            start: tomorrow - days * DAY,
            end: tomorrow,
        })
    }

    /// The page number, from 1.
    pub fn page_number(&self) -> usize {
        self.page.parse::<usize>().unwrap_or(1).clamp(1, 100_000)
    }

    /// The query string of this state with `changes` applied (an empty value
    /// drops the key); the format is never carried over.
    pub fn with(&self, changes: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(&str, String)> = vec![
            ("period", self.period.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("channel", self.channel.clone()),
            ("store", self.store.clone()),
            ("region", self.region.clone()),
            ("tier", self.tier.clone()),
            ("partner", self.partner.clone()),
            ("category", self.category.clone()),
            ("page", self.page.clone()),
            ("page_token", self.page_token.clone()),
        ];
        for (key, value) in changes {
            match pairs.iter_mut().find(|(k, _)| k == key) {
                Some(pair) => pair.1 = (*value).to_owned(),
                None => pairs.push((key, (*value).to_owned())),
            }
        }
        let encoded: Vec<String> = pairs
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", encode(&v)))
            .collect();
        if encoded.is_empty() {
            String::new()
        } else {
            format!("?{}", encoded.join("&"))
        }
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn date(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0).map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string())
}

pub fn date_time(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0).map_or_else(String::new, |d| d.format("%Y-%m-%d %H:%M").to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn periods_end_with_today_and_custom_dates_are_inclusive() {
        let now = 1_700_000_000; // 2023-11-14 22:13 UTC
        let p = Params {
            period: "week".into(),
            ..Params::default()
        };
        let week = p.resolve(now).unwrap();
        assert_eq!(week.end - week.start, 7 * DAY);
        assert_eq!(week.end % DAY, 0);
        assert!(week.start <= now && now < week.end);
        let custom = Params {
            period: "custom".into(),
            from: "2023-11-01".into(),
            to: "2023-11-01".into(),
            ..Params::default()
        };
        let day = custom.resolve(now).unwrap();
        assert_eq!(day.end - day.start, DAY);
        let reversed = Params {
            to: "2023-10-01".into(),
            ..custom.clone()
        };
        assert!(reversed.resolve(now).is_err());
    }

    #[test]
    fn links_keep_the_state_and_encode_values() {
        let p = Params {
            period: "quarter".into(),
            store: "S 1&x".into(),
            ..Params::default()
        };
        assert_eq!(p.with(&[("page", "2")]), "?period=quarter&store=S%201%26x&page=2");
        assert_eq!(p.sales_dimension(), ("store", "S 1&x"));
    }
}
