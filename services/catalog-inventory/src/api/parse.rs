//! Parsing shared by the services: resource names, channels and lines of SKUs.

use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_proto::catalog as pb;

use crate::domain::codes::{Channel, SkuCode};

/// `skus/{code}`; INVALID_ARGUMENT on `field` otherwise.
pub(super) fn sku_name(field: &str, name: &str) -> ServiceResult<SkuCode> {
    SkuCode::from_resource_name(name).map_err(|e| ServiceError::invalid(field, e))
}

pub(super) fn channel(channel: i32) -> Result<Channel, &'static str> {
    match pb::SalesChannel::try_from(channel) {
        Ok(pb::SalesChannel::Store) => Ok(Channel::Store),
        Ok(pb::SalesChannel::Online) => Ok(Channel::Online),
        Ok(pb::SalesChannel::App) => Ok(Channel::App),
        Ok(pb::SalesChannel::Partner) => Ok(Channel::Partner),
        _ => Err("must be a sales channel"),
    }
}

/// A quantity of 1-`max` units, or 0 with a violation: a refused value is never
/// computed with (negating `i64::MIN` overflows).
pub(super) fn quantity(v: &mut Violations, field: &str, q: i64, max: i64) -> i64 {
    if q <= 0 || q > max {
        v.add(field, format!("must be 1-{max}"));
        return 0;
    }
    q
}

/// Lines of SKUs and units: 1-`max_lines`, each SKU once, 1-`max_units` units each.
pub(super) fn lines<'a>(
    v: &mut Violations,
    field: &str,
    raw: impl ExactSizeIterator<Item = (&'a str, i64)>,
    max_lines: usize,
    max_units: i64,
) -> Vec<(SkuCode, i64)> {
    if raw.len() == 0 || raw.len() > max_lines {
        v.add(field, format!("1-{max_lines} lines"));
    }
    let mut lines: Vec<(SkuCode, i64)> = Vec::new();
    for (i, (sku, q)) in raw.enumerate().take(max_lines) {
        let code = v.field(&format!("{field}[{i}].sku"), SkuCode::from_resource_name(sku));
        let q = quantity(v, &format!("{field}[{i}].quantity"), q, max_units);
        if let Some(code) = code {
            if lines.iter().any(|(c, _)| *c == code) {
                v.add(format!("{field}[{i}].sku"), "is listed twice");
            } else {
                lines.push((code, q));
            }
        }
    }
    lines
}

/// A member's id from `members/{member_id}` (a UUID).
pub(super) fn member_name(name: &str) -> Result<String, String> {
    retail_kit::convert::uuid_id(name, "members")
}
