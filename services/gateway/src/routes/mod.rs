//! The `/v1` routes: each parses its input, calls one service with the caller's
//! token, and converts the answer to the JSON of the protos' JSON mapping
//! (camelCase; 64-bit integers as strings; timestamps RFC 3339; enums by name).

pub mod orders;
pub mod partner;
pub mod policy;
pub mod products;
pub mod programme;
pub mod sales;
pub mod webhooks;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::problem::Problem;

/// A page of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// At most this many; default 50, at most 500.
    #[param(minimum = 0, maximum = 500)]
    pub page_size: Option<i32>,
    /// `nextPageToken` of the previous page.
    #[param(max_length = 1024)]
    pub page_token: Option<String>,
}

impl Paging {
    pub fn parts(&self) -> Result<(i32, String), Problem> {
        let size = self.page_size.unwrap_or(0);
        if !(0..=500).contains(&size) {
            return Err(Problem::invalid("pageSize", "must be 0-500"));
        }
        Ok((size, self.page_token.clone().unwrap_or_default()))
    }
}

/// An amount of money in minor units (cents) of its currency.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Money {
    /// ISO-4217 code, for example `EUR`.
    pub currency_code: String,
    /// Minor units, as a decimal string (a number is accepted too).
    #[serde(serialize_with = "i64_as_string", deserialize_with = "i64_from_string_or_number")]
    #[schema(value_type = String, pattern = "^-?[0-9]{1,18}$", example = "1999")]
    pub amount_minor: i64,
}

impl From<retail_proto::common::Money> for Money {
    fn from(m: retail_proto::common::Money) -> Self {
        Self {
            currency_code: m.currency_code,
            amount_minor: m.amount_minor,
        }
    }
}

impl From<Money> for retail_proto::common::Money {
    fn from(m: Money) -> Self {
        Self {
            currency_code: m.currency_code,
            amount_minor: m.amount_minor,
        }
    }
}

pub fn i64_as_string<S: serde::Serializer>(value: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

pub fn i64_from_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("must be an integer or a decimal string"))? {
        Raw::Number(n) => Ok(n),
        Raw::Text(t) => t
            .parse()
            .map_err(|_| serde::de::Error::custom("must be an integer or a decimal string")),
    }
}

/// RFC 3339 of a protobuf timestamp.
pub fn time(t: Option<prost_types::Timestamp>) -> Option<String> {
    let t = t?;
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// The id after `prefix/` in a resource name.
pub fn id_of<'a>(name: &'a str, prefix: &str) -> &'a str {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(name)
}

/// The entity tag of a resource version (its update time).
pub fn etag(update_time: Option<&prost_types::Timestamp>) -> Option<String> {
    update_time.map(|t| format!("\"{}.{:09}\"", t.seconds, t.nanos))
}

/// 200 with the body and its ETag.
pub fn with_etag<T: Serialize>(body: T, tag: Option<String>) -> Response {
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    if let Some(tag) = tag
        && let Ok(value) = HeaderValue::from_str(&tag)
    {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// 412 unless `If-Match` (when given) names `current`.
pub fn check_if_match(headers: &HeaderMap, current: Option<&str>) -> Result<(), Problem> {
    let Some(wanted) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let wanted = wanted.to_str().unwrap_or_default();
    let matches = wanted
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || Some(tag.trim_start_matches("W/")) == current);
    if matches {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "the resource changed since it was read (If-Match does not match its ETag)",
        ))
    }
}
