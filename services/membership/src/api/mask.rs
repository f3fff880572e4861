//! `read_mask` (AIP-157) of `GetMember`: which fields to return, and so where a read
//! may be served from.

use std::collections::BTreeSet;

use retail_kit::error::{ServiceResult, Violations};
use retail_proto::membership as pb;

use crate::app::MemberRead;

/// The fields of a member that come from its own row.
const ROW_FIELDS: &[&str] = &[
    "name",
    "display_name",
    "gender",
    "birth_date",
    "region",
    "attributes",
    "tier",
    "points_balance",
    "register_time",
    "update_time",
    "erased",
    "version",
    "rfm_segment",
];
/// The fields read from identifiers, tags, consents and purchases.
const VIEW_FIELDS: &[&str] = &["identifiers", "tags", "consents", "lifecycle_state", "qualifying_spend"];

/// A `read_mask` (AIP-157): the fields of a member to return; `None` = all of them.
#[derive(Debug)]
pub(super) struct ReadMask(Option<BTreeSet<String>>);

impl ReadMask {
    /// Unset, empty or `*` is the whole member; an unknown path is INVALID_ARGUMENT.
    pub(super) fn parse(field: &str, mask: Option<&prost_types::FieldMask>) -> ServiceResult<Self> {
        let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
        if paths.is_empty() || paths.iter().any(|p| p == "*") {
            return Ok(Self(None));
        }
        let mut v = Violations::new();
        for path in v.mask_paths(field, paths) {
            if !ROW_FIELDS.contains(&path.as_str()) && !VIEW_FIELDS.contains(&path.as_str()) {
                v.add(field, format!("unknown field `{path}`"));
            }
        }
        v.finish()?;
        Ok(Self(Some(paths.iter().cloned().collect())))
    }

    /// What a read under this mask needs.
    pub(super) fn read(&self) -> MemberRead {
        if self.tier_only() {
            MemberRead::Tier
        } else if self.row_only() {
            MemberRead::Row
        } else {
            MemberRead::Full
        }
    }

    /// Whether the member row alone answers the mask.
    fn row_only(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|paths| paths.iter().all(|p| ROW_FIELDS.contains(&p.as_str())))
    }

    /// Whether the mask asks for the tier and nothing else of the member's own.
    fn tier_only(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|paths| paths.iter().all(|p| p == "name" || p == "tier"))
    }

    /// The member with every field outside the mask cleared.
    pub(super) fn apply(&self, member: pb::Member) -> pb::Member {
        let Some(paths) = &self.0 else {
            return member;
        };
        fn pick<T: Default>(paths: &BTreeSet<String>, path: &str, value: T) -> T {
            if paths.contains(path) { value } else { T::default() }
        }
        // Destructured, so a new field of Member cannot be forgotten here.
        let pb::Member {
            name,
            display_name,
            gender,
            birth_date,
            region,
            attributes,
            identifiers,
            tags,
            consents,
            tier,
            points_balance,
            lifecycle_state,
            qualifying_spend,
            register_time,
            update_time,
            erased,
            version,
            rfm_segment,
        } = member;
        pb::Member {
            name: pick(paths, "name", name),
            display_name: pick(paths, "display_name", display_name),
            gender: pick(paths, "gender", gender),
            birth_date: pick(paths, "birth_date", birth_date),
            region: pick(paths, "region", region),
            attributes: pick(paths, "attributes", attributes),
            identifiers: pick(paths, "identifiers", identifiers),
            tags: pick(paths, "tags", tags),
            consents: pick(paths, "consents", consents),
            tier: pick(paths, "tier", tier),
            points_balance: pick(paths, "points_balance", points_balance),
            lifecycle_state: pick(paths, "lifecycle_state", lifecycle_state),
            qualifying_spend: pick(paths, "qualifying_spend", qualifying_spend),
            register_time: pick(paths, "register_time", register_time),
            update_time: pick(paths, "update_time", update_time),
            erased: pick(paths, "erased", erased),
            version: pick(paths, "version", version),
            rfm_segment: pick(paths, "rfm_segment", rfm_segment),
        }
    }
}
