//! Requests into the app's inputs; every field violation of a request at once.

use chrono::Utc;
use retail_kit::convert::from_timestamp;
use retail_kit::error::{ServiceResult, Violations};
use retail_proto::analytics as pb;

use crate::app::Period;
use crate::app::kpis::SALES_DIMENSIONS;
use crate::domain::touchpoint::{MAX_TEXT, Raw};

/// Longest period a KPI is asked for: ten years.
const MAX_PERIOD_SECS: i64 = 10 * 366 * 86_400;

pub fn period(v: &mut Violations, field: &str, p: &Option<pb::Period>) -> Option<Period> {
    let Some(p) = p else {
        v.add(field, "required");
        return None;
    };
    let start = p.start_time.as_ref().and_then(from_timestamp);
    let end = p.end_time.as_ref().and_then(from_timestamp);
    match (start, end) {
        (Some(s), Some(e)) if e > s && (e - s).num_seconds() <= MAX_PERIOD_SECS => Some(Period {
            start: s.timestamp(),
            end: e.timestamp(),
        }),
        (Some(_), Some(_)) => {
            v.add(field, "end_time must be after start_time, at most ten years later");
            None
        }
        _ => {
            v.add(field, "start_time and end_time are required, valid timestamps");
            None
        }
    }
}

/// A dimension and its value: "all" (default) takes no value, the others need one.
pub fn dimension(v: &mut Violations, dim: &str, value: &str, allowed: &[&str]) -> (String, String) {
    let dim = if dim.is_empty() { "all" } else { dim };
    if !allowed.contains(&dim) {
        v.add("dimension", format!("one of {}", allowed.join(", ")));
    } else if dim == "all" && !value.is_empty() {
        v.add("dimension_value", "must be empty with dimension all");
    } else if dim != "all" && (value.is_empty() || value.len() > MAX_TEXT) {
        v.add("dimension_value", format!("required, at most {MAX_TEXT} characters"));
    }
    (dim.to_owned(), value.to_owned())
}

pub fn sales(req: &pb::GetSalesReportRequest) -> ServiceResult<(Period, String, String)> {
    let mut v = Violations::new();
    let p = period(&mut v, "period", &req.period);
    let (dim, key) = dimension(&mut v, &req.dimension, &req.dimension_value, SALES_DIMENSIONS);
    v.finish()?;
    Ok((p.unwrap_or(Period { start: 0, end: 1 }), dim, key))
}

pub fn satisfaction(req: &pb::GetSatisfactionRequest) -> ServiceResult<(Period, String, String)> {
    let mut v = Violations::new();
    let p = period(&mut v, "period", &req.period);
    let (dim, key) = dimension(
        &mut v,
        &req.dimension,
        &req.dimension_value,
        &["all", "channel", "store", "partner"],
    );
    v.finish()?;
    Ok((p.unwrap_or(Period { start: 0, end: 1 }), dim, key))
}

/// A required period alone.
pub fn only_period(p: &Option<pb::Period>) -> ServiceResult<Period> {
    let mut v = Violations::new();
    let p = period(&mut v, "period", p);
    v.finish()?;
    Ok(p.unwrap_or(Period { start: 0, end: 1 }))
}

/// A period and a required store code.
pub fn store_period(p: &Option<pb::Period>, store: &str) -> ServiceResult<(Period, String)> {
    let mut v = Violations::new();
    let p = period(&mut v, "period", p);
    let store = v.text("store", store, MAX_TEXT, true);
    v.finish()?;
    Ok((p.unwrap_or(Period { start: 0, end: 1 }), store))
}

/// A period and an optional partner id.
pub fn partner_period(p: &Option<pb::Period>, partner: &str) -> ServiceResult<(Period, String)> {
    let mut v = Violations::new();
    let p = period(&mut v, "period", p);
    let partner = v.text("partner", partner, MAX_TEXT, false);
    v.finish()?;
    Ok((p.unwrap_or(Period { start: 0, end: 1 }), partner))
}

/// `as_of_time`, now when unset.
pub fn as_of(v: &mut Violations, ts: &Option<prost_types::Timestamp>) -> i64 {
    match ts {
        None => Utc::now().timestamp(),
        Some(ts) => match from_timestamp(ts) {
            Some(t) => t.timestamp(),
            None => {
                v.add("as_of_time", "not a valid timestamp");
                0
            }
        },
    }
}

/// A window in days: the default when 0, else 1 to 3650.
pub fn window_days(v: &mut Violations, field: &str, days: i32, default: i64) -> i64 {
    match days {
        0 => default,
        1..=3650 => i64::from(days),
        _ => {
            v.add(field, "between 1 and 3650 days");
            default
        }
    }
}

/// A share between 0 (exclusive) and 1, or the default when 0.
pub fn share(v: &mut Violations, field: &str, value: f64, default: f64) -> f64 {
    if value == 0.0 {
        default
    } else if value.is_finite() && value > 0.0 && value <= 1.0 {
        value
    } else {
        v.add(field, "between 0 and 1");
        default
    }
}

/// A member filter: "members/{id}" or the id.
pub fn member(v: &mut Violations, raw: &str) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    let id = raw.strip_prefix("members/").unwrap_or(raw);
    if id.is_empty() || id.len() > MAX_TEXT {
        v.add("member", "a member id or members/{id}");
        return None;
    }
    Some(id.to_owned())
}

pub fn touchpoint(t: pb::Touchpoint) -> Raw {
    Raw {
        at: t.occur_time.as_ref().and_then(from_timestamp).map(|d| d.timestamp()),
        event_id: t.event_id,
        kind: t.kind,
        store: t.store,
        place: t.place,
        sku: t.sku_code,
        subject: t.subject,
        staff: t.staff_id,
        count: t.count,
        seconds: t.seconds,
        reception_seconds: t.reception_seconds,
        amount_minor: t.amount_minor,
        skus: t.sku_codes,
        home_page: t.home_page,
    }
}

/// A required period and a window in days (`default` when 0).
pub fn period_window(p: &Option<pb::Period>, days: i32, default: i64) -> ServiceResult<(Period, i64)> {
    let mut v = Violations::new();
    let p = period(&mut v, "period", p);
    let w = window_days(&mut v, "window_days", days, default);
    v.finish()?;
    Ok((p.unwrap_or(Period { start: 0, end: 1 }), w))
}
