//! Requests parsed into the app's inputs, every field violation collected at once.

use std::collections::BTreeMap;

use chrono::Utc;
use retail_kit::convert::from_timestamp;
use retail_kit::error::{ServiceError, ServiceResult, Violation, Violations, text};
use retail_kit::idempotency;
use retail_kit::paging::Page;
use retail_proto::membership as pb;

use crate::app::{ListMembers, Merge, ProfileChange, PurchaseInput, Registration, TagChange, Touch, Visit};
use crate::domain::fields::{
    self, ConsentChannel, Identifier, IdentifierKind, MAX_IDENTIFIERS, MAX_TAGS, Scene, TouchKind,
};
use crate::domain::ids::MemberId;
use crate::domain::lifecycle::LifecycleState;
use crate::store::MemberFilter;
use crate::store::identity::ContactFilter;

/// A member's resource name; INVALID_ARGUMENT on `field` otherwise.
pub(super) fn member_id(field: &str, name: &str) -> ServiceResult<MemberId> {
    MemberId::parse_name(name).map_err(|reason| ServiceError::invalid(field, reason))
}

fn identifier_kind(kind: i32) -> Option<IdentifierKind> {
    match pb::IdentifierKind::try_from(kind).ok()? {
        pb::IdentifierKind::Phone => Some(IdentifierKind::Phone),
        pb::IdentifierKind::Email => Some(IdentifierKind::Email),
        pb::IdentifierKind::Card => Some(IdentifierKind::Card),
        pb::IdentifierKind::External => Some(IdentifierKind::External),
        pb::IdentifierKind::Device => Some(IdentifierKind::Device),
        pb::IdentifierKind::Rfid => Some(IdentifierKind::Rfid),
        pb::IdentifierKind::Beacon => Some(IdentifierKind::Beacon),
        pb::IdentifierKind::Unspecified => None,
    }
}

pub(super) fn consent_channel(channel: i32) -> Option<ConsentChannel> {
    match pb::ConsentChannel::try_from(channel).ok()? {
        pb::ConsentChannel::Sms => Some(ConsentChannel::Sms),
        pb::ConsentChannel::Email => Some(ConsentChannel::Email),
        pb::ConsentChannel::AppPush => Some(ConsentChannel::AppPush),
        pb::ConsentChannel::Social => Some(ConsentChannel::Social),
        pb::ConsentChannel::Unspecified => None,
    }
}

pub(super) fn lifecycle_state(state: pb::LifecycleState) -> Option<LifecycleState> {
    Some(match state {
        pb::LifecycleState::Unspecified => return None,
        pb::LifecycleState::Prospect => LifecycleState::Prospect,
        pb::LifecycleState::NewOnce => LifecycleState::NewOnce,
        pb::LifecycleState::NewRepeat => LifecycleState::NewRepeat,
        pb::LifecycleState::OldOnce => LifecycleState::OldOnce,
        pb::LifecycleState::OldRepeat => LifecycleState::OldRepeat,
        pb::LifecycleState::Silent => LifecycleState::Silent,
        pb::LifecycleState::Sleeping => LifecycleState::Sleeping,
        pb::LifecycleState::Lost => LifecycleState::Lost,
    })
}

fn parse_identifier(field: &str, id: Option<&pb::Identifier>) -> Result<Identifier, Violation> {
    let Some(id) = id else {
        return Err(Violation::new(field, "is required"));
    };
    let Some(kind) = identifier_kind(id.kind) else {
        return Err(Violation::new(
            format!("{field}.kind"),
            "must be a known identifier kind (phone, email, card, external, device, rfid, beacon)",
        ));
    };
    Identifier::parse(field, kind, &id.channel, &id.value)
}

/// One identifier at `field`.
pub(super) fn identifier(field: &str, id: Option<&pb::Identifier>) -> ServiceResult<Identifier> {
    parse_identifier(field, id).map_err(ServiceError::from)
}

fn profile(v: &mut Violations, m: &pb::Member) -> crate::app::Profile {
    let display_name = v
        .check(text("member.display_name", &m.display_name, 200, false))
        .unwrap_or_default();
    let gender = v.check(text("member.gender", &m.gender, 32, false)).unwrap_or_default();
    let birth_date = v
        .check(fields::birth_date(
            "member.birth_date",
            &m.birth_date,
            Utc::now().date_naive(),
        ))
        .flatten()
        .map(|d| d.format("%Y-%m-%d").to_string());
    let region = v.check(text("member.region", &m.region, 32, false)).unwrap_or_default();
    let mut attributes = BTreeMap::new();
    if m.attributes.len() > 50 {
        v.add("member.attributes", "at most 50 attributes");
    }
    for (k, value) in &m.attributes {
        if k.is_empty() || k.len() > 64 || value.len() > 500 {
            v.add(
                format!("member.attributes[{k:.64}]"),
                "keys 1-64 characters, values at most 500",
            );
        } else {
            attributes.insert(k.clone(), value.clone());
        }
    }
    let attributes_json = serde_json::to_string(&attributes).unwrap_or_else(|_| "{}".into());
    crate::app::Profile {
        display_name,
        gender,
        birth_date,
        region,
        attributes_json,
    }
}

/// A tag at `field` (`{field}.path`, ...), checked as `SetTags` and registration
/// check them.
fn tag(v: &mut Violations, field: &str, t: &pb::Tag) -> Option<TagChange> {
    let path = v.check(fields::tag_path(&format!("{field}.path"), &t.path));
    let value = v.check(text(&format!("{field}.value"), &t.value, 200, false));
    let source = v.check(text(&format!("{field}.source"), &t.source, 64, false));
    let expires_at = match &t.expire_time {
        None => None,
        Some(ts) => {
            use chrono::SubsecRound;
            let parsed = retail_kit::convert::from_timestamp(ts).map(|t| t.trunc_subsecs(6));
            if parsed.is_none() {
                v.add(format!("{field}.expire_time"), "is not a valid time");
            }
            parsed
        }
    };
    Some(TagChange {
        path: path?,
        value: value?,
        dynamic: t.dynamic,
        source: source?,
        expires_at,
    })
}

/// The tags of a registration, checked as `SetTags` checks them.
fn registration_tags(v: &mut Violations, tags: &[pb::Tag]) -> Vec<TagChange> {
    if tags.len() > MAX_TAGS {
        v.add("member.tags", format!("at most {MAX_TAGS} tags"));
    }
    let mut parsed: Vec<TagChange> = Vec::new();
    for (i, t) in tags.iter().enumerate().take(MAX_TAGS) {
        let Some(tag) = tag(v, &format!("member.tags[{i}]"), t) else {
            continue;
        };
        if parsed.iter().any(|p| p.path == tag.path) {
            v.add(format!("member.tags[{i}].path"), "is listed twice");
            continue;
        }
        parsed.push(tag);
    }
    parsed
}

/// The consents of a registration, checked as `SetConsent` checks one; one per
/// channel.
fn registration_consents(v: &mut Violations, consents: &[pb::Consent]) -> Vec<(ConsentChannel, bool, String)> {
    let mut parsed: Vec<(ConsentChannel, bool, String)> = Vec::new();
    for (i, c) in consents.iter().enumerate() {
        let channel = consent_channel(c.channel);
        if channel.is_none() {
            v.add(format!("member.consents[{i}].channel"), "must be set");
        }
        let source = v.check(text(&format!("member.consents[{i}].source"), &c.source, 64, true));
        let (Some(channel), Some(source)) = (channel, source) else {
            continue;
        };
        if parsed.iter().any(|(known, _, _)| *known == channel) {
            v.add(format!("member.consents[{i}].channel"), "is listed twice");
            continue;
        }
        parsed.push((channel, c.granted, source));
    }
    parsed
}

pub(super) fn registration(req: &pb::RegisterMemberRequest) -> ServiceResult<Registration> {
    let Some(m) = req.member.as_ref() else {
        return Err(ServiceError::invalid("member", "is required"));
    };
    let mut v = Violations::new();
    let profile = profile(&mut v, m);
    if m.identifiers.is_empty() {
        v.add("member.identifiers", "at least one identifier is required");
    }
    if m.identifiers.len() > MAX_IDENTIFIERS {
        v.add("member.identifiers", format!("at most {MAX_IDENTIFIERS}"));
    }
    let mut identifiers = Vec::new();
    for (i, id) in m.identifiers.iter().enumerate().take(MAX_IDENTIFIERS) {
        if let Some(parsed) = v.check(parse_identifier(&format!("member.identifiers[{i}]"), Some(id))) {
            if identifiers.contains(&parsed) {
                v.add(format!("member.identifiers[{i}]"), "is listed twice");
            } else {
                identifiers.push(parsed);
            }
        }
    }
    let tags = registration_tags(&mut v, &m.tags);
    let consents = registration_consents(&mut v, &m.consents);
    v.finish()?;
    Ok(Registration {
        profile,
        identifiers,
        tags,
        consents,
    })
}

pub(super) fn profile_change(req: pb::UpdateMemberRequest) -> ServiceResult<(MemberId, ProfileChange)> {
    let Some(m) = req.member.as_ref() else {
        return Err(ServiceError::invalid("member", "is required"));
    };
    let id = member_id("member.name", &m.name)?;
    let paths = req.update_mask.map(|mask| mask.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(ServiceError::invalid("update_mask", "must name the fields to update"));
    }
    let mut v = Violations::new();
    let profile = profile(&mut v, m);
    for path in v.mask_paths("update_mask", &paths) {
        if !matches!(
            path.as_str(),
            "display_name" | "gender" | "birth_date" | "region" | "attributes"
        ) {
            v.add("update_mask", format!("cannot update `{path}`"));
        }
    }
    v.finish()?;
    Ok((id, ProfileChange { profile, paths }))
}

/// An anonymous contact's resource name, `contacts/{uuid}`; its id.
pub(super) fn contact_id(field: &str, name: &str) -> ServiceResult<String> {
    name.strip_prefix("contacts/")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .map(|u| u.to_string())
        .ok_or_else(|| ServiceError::invalid(field, "must be contacts/{id} with a UUID id"))
}

pub(super) fn list_contacts(req: &pb::ListContactsRequest) -> ServiceResult<(ContactFilter, Page)> {
    let mut v = Violations::new();
    let mut filter = ContactFilter {
        merged: req.merged,
        ..ContactFilter::default()
    };
    let kind = match pb::IdentifierKind::try_from(req.identifier_kind) {
        Ok(pb::IdentifierKind::Unspecified) => None,
        Ok(_) => identifier_kind(req.identifier_kind),
        Err(_) => {
            v.add("identifier_kind", "is not an identifier kind");
            None
        }
    };
    if kind.is_some_and(|k| !k.anonymous()) {
        v.add(
            "identifier_kind",
            "contacts hold only device, RFID, beacon and external ids",
        );
    }
    let has_value = !req.identifier_value.is_empty() || !req.identifier_channel.is_empty();
    match kind {
        Some(kind) if kind.anonymous() && has_value => {
            match Identifier::parse("identifier", kind, &req.identifier_channel, &req.identifier_value) {
                Ok(id) => filter.identifier = Some(id),
                Err(e) => {
                    let field = if e.field.ends_with(".channel") {
                        "identifier_channel"
                    } else {
                        "identifier_value"
                    };
                    v.add(field, e.description);
                }
            }
        }
        Some(kind) => filter.identifier_kind = Some(kind.as_str().to_owned()),
        None if has_value => v.add("identifier_kind", "is required with identifier_value"),
        None => {}
    }
    v.finish()?;
    let page = Page::parse(req.page_size, &req.page_token, &format!("contacts|{filter:?}"))?;
    Ok((filter, page))
}

pub(super) fn list_members(req: &pb::ListMembersRequest) -> ServiceResult<ListMembers> {
    let mut v = Violations::new();
    let mut filter = MemberFilter::default();
    if !req.tier.is_empty() {
        filter.tier = v.check(text("tier", &req.tier, 32, true));
    }
    if !req.region.is_empty() {
        filter.region = v.check(text("region", &req.region, 32, true));
    }
    if !req.tag.is_empty() {
        filter.tag = v.check(fields::tag_path("tag", &req.tag));
    }
    for (field, ts, slot) in [
        ("register_after", &req.register_after, &mut filter.registered_from),
        ("register_before", &req.register_before, &mut filter.registered_before),
    ] {
        if let Some(ts) = ts {
            match from_timestamp(ts) {
                Some(t) => *slot = Some(t),
                None => v.add(field, "is not a valid time"),
            }
        }
    }
    let lifecycle = match pb::LifecycleState::try_from(req.lifecycle_state) {
        Ok(state) => lifecycle_state(state),
        Err(_) => {
            v.add("lifecycle_state", "is not a lifecycle state");
            None
        }
    };
    v.finish()?;
    let page = Page::parse(
        req.page_size,
        &req.page_token,
        &format!("{filter:?}|{}", req.lifecycle_state),
    )?;
    Ok(ListMembers {
        filter,
        lifecycle,
        page,
    })
}

/// The tags to set and the paths to remove.
pub(super) fn tag_changes(req: &pb::SetTagsRequest) -> ServiceResult<(Vec<TagChange>, Vec<String>)> {
    let mut v = Violations::new();
    if req.set.len() + req.remove_paths.len() > MAX_TAGS {
        v.add("set", format!("at most {MAX_TAGS} tags per request"));
    }
    let set: Vec<TagChange> = req
        .set
        .iter()
        .enumerate()
        .take(MAX_TAGS)
        .filter_map(|(i, t)| tag(&mut v, &format!("set[{i}]"), t))
        .collect();
    let mut remove = Vec::new();
    for (i, p) in req.remove_paths.iter().enumerate().take(MAX_TAGS) {
        if let Some(path) = v.check(fields::tag_path(&format!("remove_paths[{i}]"), p)) {
            remove.push(path);
        }
    }
    v.finish()?;
    Ok((set, remove))
}

/// A consent decision: its channel, whether granted, and its source.
pub(super) fn consent(req: &pb::SetConsentRequest) -> ServiceResult<(ConsentChannel, bool, String)> {
    let Some(consent) = req.consent.as_ref() else {
        return Err(ServiceError::invalid("consent", "is required"));
    };
    let mut v = Violations::new();
    let channel = consent_channel(consent.channel);
    if channel.is_none() {
        v.add("consent.channel", "must be set");
    }
    let source = v.check(text("consent.source", &consent.source, 64, true));
    v.finish()?;
    match (channel, source) {
        (Some(channel), Some(source)) => Ok((channel, consent.granted, source)),
        _ => Err(ServiceError::internal(anyhow::anyhow!("validated fields missing"))),
    }
}

/// A purchase or refund in `currency`, the only one membership records.
pub(super) fn purchase(req: &pb::RecordPurchaseRequest, currency: &str) -> ServiceResult<PurchaseInput> {
    let Some(p) = req.purchase.as_ref() else {
        return Err(ServiceError::invalid("purchase", "is required"));
    };
    let mut v = Violations::new();
    if p.order_id.is_empty()
        || p.order_id.len() > 64
        || !p
            .order_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        v.add(
            "purchase.order_id",
            "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'",
        );
    }
    let amount = p.amount.as_ref();
    match amount {
        None => v.add("purchase.amount", "is required"),
        Some(m) if m.currency_code != currency => v.add("purchase.amount.currency_code", format!("must be {currency}")),
        Some(m) => {
            v.check(retail_kit::money::positive_amount(
                "purchase.amount.amount_minor",
                m.amount_minor,
            ));
        }
    }
    let at = match &p.occur_time {
        None => Some(Utc::now()),
        Some(ts) => match from_timestamp(ts) {
            Some(t) if t <= Utc::now() + chrono::Duration::minutes(5) => Some(t),
            _ => {
                v.add("purchase.occur_time", "must be a valid time, not in the future");
                None
            }
        },
    };
    // Checked with or without `refund`, like every request id, though only a
    // refund keeps it.
    if req.refund && req.request_id.is_empty() {
        v.add("request_id", "a refund needs a request id of 1-128 characters");
    } else {
        v.check(idempotency::check_request_id("request_id", &req.request_id));
    }
    if p.channel.len() > 32 {
        v.add("purchase.channel", "must be at most 32 characters");
    }
    v.finish()?;
    let (Some(amount), Some(at)) = (amount, at) else {
        return Err(ServiceError::internal(anyhow::anyhow!("validated fields missing")));
    };
    Ok(PurchaseInput {
        order_id: p.order_id.clone(),
        amount_minor: amount.amount_minor,
        at,
        channel: p.channel.clone(),
        refund: req.refund,
        reference: if req.refund {
            req.request_id.clone()
        } else {
            String::new()
        },
    })
}

pub(super) fn positive_points(field: &str, points: i64) -> ServiceResult<i64> {
    if points <= 0 {
        return Err(ServiceError::invalid(field, "must be positive"));
    }
    if points > 1_000_000_000 {
        return Err(ServiceError::invalid(field, "must be at most 1,000,000,000"));
    }
    Ok(points)
}

pub(super) fn reason(field: &str, raw: &str) -> ServiceResult<String> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > 200 || t.chars().any(char::is_control) {
        return Err(ServiceError::invalid(field, "must be 1-200 characters"));
    }
    Ok(t.to_owned())
}

/// An erasure's reason: required, as an audit of why.
pub(super) fn erasure_reason(raw: &str) -> ServiceResult<()> {
    text("reason", raw, 200, true).map_err(ServiceError::from)?;
    Ok(())
}

/// Identifiers a touch may link to the presented one, at most.
const MAX_LINKED: usize = 5;

/// A code such as a place or SKU at `field`: 1-64 visible characters.
fn code(field: &str, raw: &str) -> Result<String, Violation> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > 64 || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Violation::new(field, "must be 1-64 characters without spaces"));
    }
    Ok(t.to_owned())
}

fn touch(v: &mut Violations, t: Option<&pb::Touchpoint>) -> Option<Touch> {
    let Some(t) = t else {
        v.add("touchpoint", "is required");
        return None;
    };
    let scene = match pb::Scene::try_from(t.scene).unwrap_or_default() {
        pb::Scene::Store => Some(Scene::Store),
        pb::Scene::Online => Some(Scene::Online),
        pb::Scene::PartnerOutlet => Some(Scene::PartnerOutlet),
        pb::Scene::Unspecified => {
            v.add("touchpoint.scene", "must be store, online or partner outlet");
            None
        }
    };
    let kind = match pb::TouchKind::try_from(t.kind).unwrap_or_default() {
        pb::TouchKind::CheckIn => Some(TouchKind::CheckIn),
        pb::TouchKind::Visit => Some(TouchKind::Visit),
        pb::TouchKind::ViewProduct => Some(TouchKind::ViewProduct),
        pb::TouchKind::TryProduct => Some(TouchKind::TryProduct),
        pb::TouchKind::Unspecified => {
            v.add(
                "touchpoint.kind",
                "must be check-in, visit, view product or try product",
            );
            None
        }
    };
    let place = v.check(code("touchpoint.place", &t.place));
    let product = match kind {
        Some(k) if k.about_product() => v.check(code("touchpoint.product", &t.product)),
        _ if !t.product.is_empty() => {
            v.add("touchpoint.product", "is only for viewed or tried products");
            None
        }
        _ => Some(String::new()),
    };
    let now = Utc::now();
    let at = match &t.occur_time {
        None => Some(now),
        Some(ts) => match from_timestamp(ts) {
            Some(at) if at <= now + chrono::Duration::minutes(5) => Some(at),
            _ => {
                v.add("touchpoint.occur_time", "must be a valid time, not in the future");
                None
            }
        },
    };
    Some(Touch {
        scene: scene?,
        place: place?,
        kind: kind?,
        product: product?,
        at: at?,
    })
}

/// A visitor's identification with the touch to record.
pub(super) fn visit(req: &pb::IdentifyVisitorRequest) -> ServiceResult<Visit> {
    let mut v = Violations::new();
    let identifier = v.check(parse_identifier("identifier", req.identifier.as_ref()));
    let touch = touch(&mut v, req.touchpoint.as_ref());
    if req.linked_identifiers.len() > MAX_LINKED {
        v.add("linked_identifiers", format!("at most {MAX_LINKED}"));
    }
    let mut linked = Vec::new();
    for (i, id) in req.linked_identifiers.iter().enumerate().take(MAX_LINKED) {
        if let Some(parsed) = v.check(parse_identifier(&format!("linked_identifiers[{i}]"), Some(id))) {
            linked.push(parsed);
        }
    }
    v.finish()?;
    match (identifier, touch) {
        (Some(identifier), Some(touch)) => Ok(Visit {
            identifier,
            touch,
            linked,
        }),
        _ => Err(ServiceError::invalid("identifier", "is invalid")),
    }
}

/// A merge of two members: both names valid and different.
pub(super) fn merge(req: &pb::MergeMembersRequest) -> ServiceResult<Merge> {
    let mut v = Violations::new();
    let survivor = v.check(MemberId::parse_name(&req.survivor).map_err(|r| Violation::new("survivor", r)));
    let merged = v.check(MemberId::parse_name(&req.merged).map_err(|r| Violation::new("merged", r)));
    let reason = v.check(text("reason", &req.reason, 500, false)).unwrap_or_default();
    if let (Some(s), Some(m)) = (&survivor, &merged)
        && s == m
    {
        v.add("merged", "must be another member than the survivor");
    }
    v.finish()?;
    match (survivor, merged) {
        (Some(survivor), Some(merged)) => Ok(Merge {
            survivor,
            merged,
            reason,
        }),
        _ => Err(ServiceError::invalid("survivor", "is invalid")),
    }
}
