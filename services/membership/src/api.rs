//! The gRPC adapter of membership's profiles: parse, authorise, run against the
//! store in one transaction with its events, invalidate the cache after the commit.
//!
//! Reads of a member and recognition by identifier go through the versioned cache.
//! A committed change is never hidden here by an older cached profile, and an
//! erased member is never served: an invalidation Redis misses keeps the key on the
//! database until a retry delivers it. Other replicas sharing the Redis may serve
//! the older profile for at most [`retail_kit::cache::STALENESS_BOUND`] (2 s) after
//! Redis answers again.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use prost::Message;
use retail_kit::auth::Principal;
use retail_kit::cache::VersionedCache;
use retail_kit::convert::{from_timestamp, timestamp};
use retail_kit::error::{ServiceError, ServiceResult, Violations, text};
use retail_kit::events::{self, EventLog};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use retail_proto::common::Money;
use retail_proto::events as ev;
use retail_proto::membership as pb;
use retail_proto::membership::membership_service_server::MembershipService;
use sea_orm::{AccessMode, ActiveValue::Set, DatabaseConnection, IntoActiveModel, IsolationLevel, TransactionTrait};
use tonic::{Request, Response, Status};

use crate::domain::fields::{self, ConsentChannel, Identifier, IdentifierKind};
use crate::domain::lifecycle::LifecycleState;
use crate::domain::rules::LoyaltyRules;
use crate::store::{self, MemberView};

pub const READ: &str = "membership.members.read";
pub const WRITE: &str = "membership.members.write";

/// Identifiers per member, at most.
const MAX_IDENTIFIERS: usize = retail_kit::limits::MAX_IDENTIFIERS;
/// Tags per member, at most; and per request.
const MAX_TAGS: usize = 100;

#[derive(Debug)]
pub struct State {
    pub db: DatabaseConnection,
    pub cache: Arc<VersionedCache>,
    pub log: Arc<EventLog>,
    pub rules: LoyaltyRules,
}

#[derive(Debug, Clone)]
pub struct MembershipApi {
    state: Arc<State>,
}

impl MembershipApi {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

pub(crate) fn member_key(id: &str) -> String {
    format!("member:{id}")
}

/// The cache key of a member's tier alone. Every change through the RPCs and jobs
/// invalidates it, but a payment from the orders log only when it changed the tier
/// (see [`State::forget_member`]), so pricing's tier reads stay hits while the
/// member buys.
pub(crate) fn tier_key(id: &str) -> String {
    format!("member-tier:{id}")
}

fn decode_member(bytes: &[u8]) -> ServiceResult<pb::Member> {
    pb::Member::decode(bytes)
        .map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("cached member is unreadable")))
}

fn member_not_found(id: &str) -> ServiceError {
    ServiceError::not_found("member", format!("members/{id}"))
}

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
];
/// The fields read from identifiers, tags, consents and purchases.
const VIEW_FIELDS: &[&str] = &["identifiers", "tags", "consents", "lifecycle_state", "qualifying_spend"];

/// A `read_mask` (AIP-157): the fields of a member to return; `None` = all of them.
#[derive(Debug)]
struct ReadMask(Option<std::collections::BTreeSet<String>>);

impl ReadMask {
    /// Unset, empty or `*` is the whole member; an unknown path is INVALID_ARGUMENT.
    fn parse(field: &str, mask: Option<&prost_types::FieldMask>) -> ServiceResult<Self> {
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
    fn apply(&self, member: pb::Member) -> pb::Member {
        let Some(paths) = &self.0 else {
            return member;
        };
        fn pick<T: Default>(paths: &std::collections::BTreeSet<String>, path: &str, value: T) -> T {
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
        }
    }
}

fn kind_of_pb(kind: i32) -> Option<IdentifierKind> {
    match pb::IdentifierKind::try_from(kind).ok()? {
        pb::IdentifierKind::Phone => Some(IdentifierKind::Phone),
        pb::IdentifierKind::Email => Some(IdentifierKind::Email),
        pb::IdentifierKind::Card => Some(IdentifierKind::Card),
        pb::IdentifierKind::External => Some(IdentifierKind::External),
        pb::IdentifierKind::Unspecified => None,
    }
}

fn pb_kind(kind: &str) -> i32 {
    match IdentifierKind::parse(kind) {
        Some(IdentifierKind::Phone) => pb::IdentifierKind::Phone as i32,
        Some(IdentifierKind::Email) => pb::IdentifierKind::Email as i32,
        Some(IdentifierKind::Card) => pb::IdentifierKind::Card as i32,
        Some(IdentifierKind::External) => pb::IdentifierKind::External as i32,
        None => pb::IdentifierKind::Unspecified as i32,
    }
}

fn channel_of_pb(channel: i32) -> Option<ConsentChannel> {
    match pb::ConsentChannel::try_from(channel).ok()? {
        pb::ConsentChannel::Sms => Some(ConsentChannel::Sms),
        pb::ConsentChannel::Email => Some(ConsentChannel::Email),
        pb::ConsentChannel::AppPush => Some(ConsentChannel::AppPush),
        pb::ConsentChannel::Social => Some(ConsentChannel::Social),
        pb::ConsentChannel::Unspecified => None,
    }
}

fn pb_channel(channel: &str) -> i32 {
    match ConsentChannel::parse(channel) {
        Some(ConsentChannel::Sms) => pb::ConsentChannel::Sms as i32,
        Some(ConsentChannel::Email) => pb::ConsentChannel::Email as i32,
        Some(ConsentChannel::AppPush) => pb::ConsentChannel::AppPush as i32,
        Some(ConsentChannel::Social) => pb::ConsentChannel::Social as i32,
        None => pb::ConsentChannel::Unspecified as i32,
    }
}

fn pb_lifecycle(state: LifecycleState) -> i32 {
    (match state {
        LifecycleState::Prospect => pb::LifecycleState::Prospect,
        LifecycleState::NewOnce => pb::LifecycleState::NewOnce,
        LifecycleState::NewRepeat => pb::LifecycleState::NewRepeat,
        LifecycleState::OldOnce => pb::LifecycleState::OldOnce,
        LifecycleState::OldRepeat => pb::LifecycleState::OldRepeat,
        LifecycleState::Silent => pb::LifecycleState::Silent,
        LifecycleState::Sleeping => pb::LifecycleState::Sleeping,
        LifecycleState::Lost => pb::LifecycleState::Lost,
    }) as i32
}

fn parse_identifier(field: &str, id: Option<&pb::Identifier>) -> Result<Identifier, retail_kit::error::Violation> {
    let Some(id) = id else {
        return Err(retail_kit::error::Violation::new(field, "is required"));
    };
    let Some(kind) = kind_of_pb(id.kind) else {
        return Err(retail_kit::error::Violation::new(
            format!("{field}.kind"),
            "must be set",
        ));
    };
    Identifier::parse(field, kind, &id.channel, &id.value)
}

fn resource_id(field: &str, name: &str) -> ServiceResult<String> {
    let id = name
        .strip_prefix("members/")
        .ok_or_else(|| ServiceError::invalid(field, "must be members/{id}"))?;
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ServiceError::invalid(field, "must be members/{id} with a UUID id"))
}

impl State {
    pub(crate) fn to_pb(&self, v: &MemberView) -> pb::Member {
        member_to_pb(&self.rules, v)
    }
}

/// Loads a live member for a change; NOT_FOUND for unknown and erased ones.
async fn live_member(db: &impl sea_orm::ConnectionTrait, id: &str) -> ServiceResult<store::member::Model> {
    match store::find_member(db, id).await? {
        Some(m) if m.erased_at.is_none() => Ok(m),
        _ => Err(ServiceError::not_found("member", format!("members/{id}"))),
    }
}

fn member_to_pb(rules: &LoyaltyRules, v: &MemberView) -> pb::Member {
    {
        let m = &v.member;
        let now = Utc::now();
        let spend_records: Vec<_> = v.purchases.iter().map(|p| (p.occurred_at, p.amount_minor)).collect();
        let paid_at: Vec<_> = v
            .purchases
            .iter()
            .filter(|p| p.kind == "paid")
            .map(|p| p.occurred_at)
            .collect();
        let attributes: BTreeMap<String, String> = serde_json::from_str(&m.attributes_json).unwrap_or_default();
        pb::Member {
            name: format!("members/{}", m.id),
            display_name: m.display_name.clone(),
            gender: m.gender.clone(),
            birth_date: m.birth_date.clone().unwrap_or_default(),
            region: m.region.clone(),
            attributes,
            identifiers: v
                .identifiers
                .iter()
                .map(|i| pb::Identifier {
                    kind: pb_kind(&i.kind),
                    value: i.value.clone(),
                    channel: i.channel.clone(),
                })
                .collect(),
            tags: v
                .tags
                .iter()
                .map(|t| pb::Tag {
                    path: t.path.clone(),
                    value: t.value.clone(),
                    dynamic: t.dynamic,
                    source: t.source.clone(),
                    update_time: Some(timestamp(t.updated_at)),
                })
                .collect(),
            consents: v
                .consents
                .iter()
                .map(|c| pb::Consent {
                    channel: pb_channel(&c.channel),
                    granted: c.granted,
                    source: c.source.clone(),
                    update_time: Some(timestamp(c.decided_at)),
                })
                .collect(),
            tier: m.tier.clone(),
            points_balance: m.points_balance,
            lifecycle_state: pb_lifecycle(rules.lifecycle(&paid_at, now)),
            qualifying_spend: Some(Money {
                currency_code: rules.currency.clone(),
                amount_minor: rules.spend(&spend_records, now),
            }),
            register_time: Some(timestamp(m.registered_at)),
            update_time: Some(timestamp(m.updated_at)),
            erased: m.erased_at.is_some(),
            version: m.version,
        }
    }
}

impl State {
    /// The member as served: from the cache, else from the database (and cached).
    async fn cached_member(&self, id: &str) -> ServiceResult<pb::Member> {
        let bytes = self
            .cache
            .get_or_load(&member_key(id), || async {
                // One snapshot: the member row (points, version) and its purchases
                // (spend, lifecycle) as of the same commit.
                let txn = match self.db.get_database_backend() {
                    sea_orm::DatabaseBackend::Postgres => {
                        self.db
                            .begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly))
                            .await?
                    }
                    // A SQLite transaction reads one snapshot anyway.
                    _ => self.db.begin().await?,
                };
                let Some(member) = store::find_member(&txn, id).await? else {
                    return Ok(None);
                };
                if member.erased_at.is_some() {
                    return Ok(None);
                }
                let version = member.version.max(0) as u64;
                let view = store::view(&txn, member).await?;
                txn.commit().await?;
                Ok(Some((version, self.to_pb(&view).encode_to_vec())))
            })
            .await?;
        match bytes {
            Some(bytes) => decode_member(&bytes),
            None => Err(member_not_found(id)),
        }
    }

    /// The member's own fields (see [`ROW_FIELDS`]): from the cached profile if there
    /// is one, else from the member row alone. Not cached: the cache holds whole
    /// profiles.
    async fn member_row(&self, id: &str) -> ServiceResult<pb::Member> {
        if let Some(bytes) = self.cache.peek(&member_key(id)).await {
            return decode_member(&bytes);
        }
        match store::find_member(&self.db, id).await? {
            Some(member) if member.erased_at.is_none() => Ok(self.to_pb(&MemberView {
                member,
                identifiers: Vec::new(),
                tags: Vec::new(),
                consents: Vec::new(),
                purchases: Vec::new(),
            })),
            _ => Err(member_not_found(id)),
        }
    }

    /// The member's name and tier, through the tier's own cache key ([`tier_key`]).
    async fn member_tier(&self, id: &str) -> ServiceResult<pb::Member> {
        let tier = self
            .cache
            .get_or_load(&tier_key(id), || async {
                Ok(match store::find_member(&self.db, id).await? {
                    Some(m) if m.erased_at.is_none() => Some((m.version.max(0) as u64, m.tier.into_bytes())),
                    _ => None,
                })
            })
            .await?
            .ok_or_else(|| member_not_found(id))?;
        let tier = String::from_utf8(tier.to_vec())
            .map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("cached tier is unreadable")))?;
        Ok(pb::Member {
            name: format!("members/{id}"),
            tier,
            ..pb::Member::default()
        })
    }

    /// Invalidates the member's cached profile up to `version`, and its cached tier
    /// too unless the change left the tier alone (`tier_changed` false). False if
    /// Redis missed one of them.
    pub(crate) async fn forget_member(&self, member_id: &str, version: i64, tier_changed: bool) -> bool {
        let version = version.max(0) as u64;
        let mut reached = self.cache.invalidate(&member_key(member_id), version).await;
        if tier_changed {
            reached &= self.cache.invalidate(&tier_key(member_id), version).await;
        }
        reached
    }

    /// [`Self::forget_member`] in this process alone ([`VersionedCache::invalidate_here`]).
    pub(crate) fn forget_member_here(&self, member_id: &str, version: i64, tier_changed: bool) {
        let version = version.max(0) as u64;
        self.cache.invalidate_here(&member_key(member_id), version);
        if tier_changed {
            self.cache.invalidate_here(&tier_key(member_id), version);
        }
    }

    async fn after_commit(&self, member_id: &str, version: i64, identifiers: &[Identifier]) {
        self.forget_member(member_id, version, true).await;
        let version = version.max(0) as u64;
        for id in identifiers {
            self.cache.invalidate(&id.cache_key(), version).await;
        }
        self.log.committed();
    }

    async fn view_pb(&self, id: &str) -> ServiceResult<pb::Member> {
        let member = live_member(&self.db, id).await?;
        Ok(self.to_pb(&store::view(&self.db, member).await?))
    }
}

fn profile_fields(
    v: &mut Violations,
    m: &pb::Member,
    required_name: bool,
) -> (String, String, Option<String>, String, String) {
    let display_name = v
        .check(text("member.display_name", &m.display_name, 200, required_name))
        .unwrap_or_default();
    let gender = v.check(text("member.gender", &m.gender, 32, false)).unwrap_or_default();
    let birth = v
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
    (display_name, gender, birth, region, attributes_json)
}

/// The tags of a registration, checked as `SetTags` checks them (a tag without a
/// source is the caller's); their member id is set when the member is written.
fn registration_tags(
    v: &mut Violations,
    tags: &[pb::Tag],
    caller: &str,
    now: chrono::DateTime<Utc>,
) -> Vec<store::tag::Model> {
    if tags.len() > MAX_TAGS {
        v.add("member.tags", format!("at most {MAX_TAGS} tags"));
    }
    let mut parsed: Vec<store::tag::Model> = Vec::new();
    for (i, t) in tags.iter().enumerate().take(MAX_TAGS) {
        let path = v.check(fields::tag_path(&format!("member.tags[{i}].path"), &t.path));
        let value = v.check(text(&format!("member.tags[{i}].value"), &t.value, 200, false));
        let source = v.check(text(&format!("member.tags[{i}].source"), &t.source, 64, false));
        let (Some(path), Some(value), Some(source)) = (path, value, source) else {
            continue;
        };
        if parsed.iter().any(|p| p.path == path) {
            v.add(format!("member.tags[{i}].path"), "is listed twice");
            continue;
        }
        parsed.push(store::tag::Model {
            member_id: String::new(),
            path,
            value,
            dynamic: t.dynamic,
            source: if source.is_empty() { caller.to_owned() } else { source },
            updated_at: now,
        });
    }
    parsed
}

/// The consents of a registration, checked as `SetConsent` checks one; one per
/// channel.
fn registration_consents(v: &mut Violations, consents: &[pb::Consent]) -> Vec<(ConsentChannel, bool, String)> {
    let mut parsed: Vec<(ConsentChannel, bool, String)> = Vec::new();
    for (i, c) in consents.iter().enumerate() {
        let channel = channel_of_pb(c.channel);
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

/// Whether the page's last member is also the last row the scan read.
fn member_is_last(members: &[pb::Member], last_id: &str) -> bool {
    members.last().is_some_and(|m| m.name.ends_with(last_id))
}

#[tonic::async_trait]
impl MembershipService for MembershipApi {
    #[tracing::instrument(skip_all)]
    async fn register_member(&self, request: Request<pb::RegisterMemberRequest>) -> Rpc<pb::Member> {
        let s = &self.state;
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("membership.RegisterMember", &caller, &req.request_id, &req)?;
        let Some(m) = req.member.as_ref() else {
            return Err(ServiceError::invalid("member", "is required").into());
        };
        let mut v = Violations::new();
        let (display_name, gender, birth_date, region, attributes_json) = profile_fields(&mut v, m, false);
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
        let now = Utc::now();
        let tags = registration_tags(&mut v, &m.tags, &caller, now);
        let consents = registration_consents(&mut v, &m.consents);
        v.finish()?;
        let model = store::member::Model {
            id: store::new_id(),
            display_name,
            gender,
            birth_date,
            region,
            attributes_json,
            tier: s.rules.base_tier().to_owned(),
            points_balance: 0,
            points_debt: 0,
            registered_at: now,
            updated_at: now,
            erased_at: None,
            version: 1,
        };
        let rules = s.rules.clone();
        let response = idempotency::execute(&s.db, key.as_ref(), Clone::clone, |txn| {
            let (model, identifiers, rules) = (model.clone(), identifiers.clone(), rules.clone());
            let (tags, consents) = (tags.clone(), consents.clone());
            Box::pin(async move {
                store::insert_member(txn, model.clone()).await?;
                for id in &identifiers {
                    store::insert_identifier(txn, &model.id, id, now).await?;
                }
                for tag in tags {
                    store::upsert_tag(
                        txn,
                        store::tag::Model {
                            member_id: model.id.clone(),
                            ..tag
                        },
                    )
                    .await?;
                }
                for (channel, granted, source) in consents {
                    store::insert_consent(
                        txn,
                        store::consent::Model {
                            id: store::new_id(),
                            member_id: model.id.clone(),
                            channel: channel.as_str().to_owned(),
                            granted,
                            source,
                            decided_at: now,
                        },
                    )
                    .await?;
                    events::publish(
                        txn,
                        "retail.events.v1.ConsentChanged",
                        &model.id,
                        &ev::ConsentChanged {
                            member_id: model.id.clone(),
                            channel: channel.as_str().to_owned(),
                            granted,
                        },
                    )
                    .await?;
                }
                events::publish(
                    txn,
                    "retail.events.v1.MemberRegistered",
                    &model.id,
                    &ev::MemberRegistered {
                        member_id: model.id.clone(),
                        region: model.region.clone(),
                        register_time: Some(timestamp(now)),
                    },
                )
                .await?;
                let view = store::view(txn, model).await?;
                Ok(member_to_pb(&rules, &view))
            })
        })
        .await?;
        s.log.committed();
        ok(response)
    }

    async fn get_member(&self, request: Request<pb::GetMemberRequest>) -> Rpc<pb::Member> {
        Principal::of(&request)?.require_scope(READ)?;
        let req = request.get_ref();
        let id = resource_id("name", &req.name)?;
        let mask = ReadMask::parse("read_mask", req.read_mask.as_ref())?;
        let member = if mask.tier_only() {
            self.state.member_tier(&id).await?
        } else if mask.row_only() {
            self.state.member_row(&id).await?
        } else {
            self.state.cached_member(&id).await?
        };
        ok(mask.apply(member))
    }

    async fn identify_member(&self, request: Request<pb::IdentifyMemberRequest>) -> Rpc<pb::Member> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(READ)?;
        let id = parse_identifier("identifier", request.get_ref().identifier.as_ref()).map_err(ServiceError::from)?;
        let not_found = || ServiceError::not_found("member", "with this identifier");
        let member_id = s
            .cache
            .get_or_load(&id.cache_key(), || async {
                let Some(member_id) = store::member_id_by_identifier(&s.db, &id).await? else {
                    return Ok(None);
                };
                let version = store::find_member(&s.db, &member_id)
                    .await?
                    .map(|m| m.version.max(0) as u64)
                    .unwrap_or(0);
                Ok(Some((version, member_id.into_bytes())))
            })
            .await?
            .ok_or_else(not_found)?;
        let member_id = String::from_utf8(member_id.to_vec()).map_err(|_| not_found())?;
        ok(s.cached_member(&member_id).await?)
    }

    async fn list_members(&self, request: Request<pb::ListMembersRequest>) -> Rpc<pb::ListMembersResponse> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(READ)?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let mut filter = store::MemberFilter::default();
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
        let lifecycle = pb::LifecycleState::try_from(req.lifecycle_state).unwrap_or(pb::LifecycleState::Unspecified);
        if pb::LifecycleState::try_from(req.lifecycle_state).is_err() {
            v.add("lifecycle_state", "is not a lifecycle state");
        }
        v.finish()?;
        let page = Page::parse(
            req.page_size,
            &req.page_token,
            &format!("{filter:?}|{}", req.lifecycle_state),
        )?;
        // Lifecycle depends on "now", so it is filtered here while scanning; the scan
        // is bounded, and a page may then come back short with a token to continue.
        let wanted = (lifecycle != pb::LifecycleState::Unspecified).then_some(lifecycle as i32);
        let mut members = Vec::new();
        let mut cursor = page.after.clone();
        let mut next_page_token = String::new();
        'scan: for _ in 0..20 {
            let rows = store::list_members(&s.db, &page.continued_after(cursor.clone()), &filter).await?;
            let exhausted = rows.len() as u64 <= page.size;
            for row in rows.into_iter().take(page.size as usize) {
                cursor = Some(row.id.clone());
                let member = s.to_pb(&store::view(&s.db, row).await?);
                if wanted.is_none_or(|w| member.lifecycle_state == w) {
                    members.push(member);
                }
                if members.len() as u64 >= page.size {
                    if let Some(last) = &cursor
                        && !(exhausted && member_is_last(&members, last))
                    {
                        next_page_token = page.token_after(last);
                    }
                    break 'scan;
                }
            }
            if exhausted {
                break;
            }
            if let Some(last) = &cursor {
                next_page_token = page.token_after(last);
            }
        }
        ok(pb::ListMembersResponse {
            members,
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn update_member(&self, request: Request<pb::UpdateMemberRequest>) -> Rpc<pb::Member> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let Some(m) = req.member.as_ref() else {
            return Err(ServiceError::invalid("member", "is required").into());
        };
        let id = resource_id("member.name", &m.name)?;
        let paths = req.update_mask.map(|mask| mask.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(ServiceError::invalid("update_mask", "must name the fields to update").into());
        }
        let mut v = Violations::new();
        let (display_name, gender, birth_date, region, attributes_json) = profile_fields(&mut v, m, false);
        for path in v.mask_paths("update_mask", &paths) {
            if !matches!(
                path.as_str(),
                "display_name" | "gender" | "birth_date" | "region" | "attributes"
            ) {
                v.add("update_mask", format!("cannot update `{path}`"));
            }
        }
        v.finish()?;
        let current = live_member(&s.db, &id).await?;
        let mut active = current.into_active_model();
        for path in &paths {
            match path.as_str() {
                "display_name" => active.display_name = Set(display_name.clone()),
                "gender" => active.gender = Set(gender.clone()),
                "birth_date" => active.birth_date = Set(birth_date.clone()),
                "region" => active.region = Set(region.clone()),
                _ => active.attributes_json = Set(attributes_json.clone()),
            }
        }
        let now = Utc::now();
        let version = idempotency::transaction(&s.db, |txn| {
            let (active, id, paths) = (active.clone(), id.clone(), paths.clone());
            Box::pin(async move {
                store::update_member(txn, active).await?;
                let version = store::touch(txn, &id, now).await?.version;
                events::publish(
                    txn,
                    "retail.events.v1.MemberUpdated",
                    &id,
                    &ev::MemberUpdated {
                        member_id: id.clone(),
                        changed_fields: paths,
                        version,
                    },
                )
                .await?;
                Ok(version)
            })
        })
        .await?;
        s.after_commit(&id, version, &[]).await;
        ok(s.view_pb(&id).await?)
    }

    async fn add_identifier(&self, request: Request<pb::AddIdentifierRequest>) -> Rpc<pb::Member> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let id = resource_id("name", &req.name)?;
        let identifier = parse_identifier("identifier", req.identifier.as_ref()).map_err(ServiceError::from)?;
        let now = Utc::now();
        let version = idempotency::transaction(&s.db, |txn| {
            let (id, identifier) = (id.clone(), identifier.clone());
            Box::pin(async move {
                let member = live_member(txn, &id).await?;
                let view = store::view(txn, member).await?;
                if view.identifiers.len() >= MAX_IDENTIFIERS {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "a member has at most {MAX_IDENTIFIERS} identifiers"
                    )));
                }
                store::insert_identifier(txn, &id, &identifier, now).await?;
                let version = store::touch(txn, &id, now).await?.version;
                publish_updated(txn, &id, "identifiers", version).await?;
                Ok(version)
            })
        })
        .await?;
        s.after_commit(&id, version, &[identifier]).await;
        ok(s.view_pb(&id).await?)
    }

    async fn remove_identifier(&self, request: Request<pb::RemoveIdentifierRequest>) -> Rpc<pb::Member> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let id = resource_id("name", &req.name)?;
        let identifier = parse_identifier("identifier", req.identifier.as_ref()).map_err(ServiceError::from)?;
        let now = Utc::now();
        let version = idempotency::transaction(&s.db, |txn| {
            let (id, identifier) = (id.clone(), identifier.clone());
            Box::pin(async move {
                live_member(txn, &id).await?;
                if !store::delete_identifier(txn, &id, &identifier).await? {
                    return Err(ServiceError::not_found("identifier", "on this member"));
                }
                let version = store::touch(txn, &id, now).await?.version;
                publish_updated(txn, &id, "identifiers", version).await?;
                Ok(version)
            })
        })
        .await?;
        s.after_commit(&id, version, &[identifier]).await;
        ok(s.view_pb(&id).await?)
    }

    async fn set_tags(&self, request: Request<pb::SetTagsRequest>) -> Rpc<pb::Member> {
        let s = &self.state;
        let principal = Principal::of(&request)?.clone();
        principal.require_scope(WRITE)?;
        let req = request.into_inner();
        let id = resource_id("name", &req.name)?;
        let mut v = Violations::new();
        if req.set.len() + req.remove_paths.len() > MAX_TAGS {
            v.add("set", format!("at most {MAX_TAGS} tags per request"));
        }
        let now = Utc::now();
        let mut set = Vec::new();
        for (i, t) in req.set.iter().enumerate().take(MAX_TAGS) {
            let path = v.check(fields::tag_path(&format!("set[{i}].path"), &t.path));
            let value = v.check(text(&format!("set[{i}].value"), &t.value, 200, false));
            let source = v.check(text(&format!("set[{i}].source"), &t.source, 64, false));
            if let (Some(path), Some(value), Some(source)) = (path, value, source) {
                set.push(store::tag::Model {
                    member_id: id.clone(),
                    path,
                    value,
                    dynamic: t.dynamic,
                    source: if source.is_empty() {
                        principal.subject.clone()
                    } else {
                        source
                    },
                    updated_at: now,
                });
            }
        }
        let mut remove = Vec::new();
        for (i, p) in req.remove_paths.iter().enumerate().take(MAX_TAGS) {
            if let Some(path) = v.check(fields::tag_path(&format!("remove_paths[{i}]"), p)) {
                remove.push(path);
            }
        }
        v.finish()?;
        let version = idempotency::transaction(&s.db, |txn| {
            let (id, set, remove) = (id.clone(), set.clone(), remove.clone());
            Box::pin(async move {
                let member = live_member(txn, &id).await?;
                for path in &remove {
                    store::delete_tag(txn, &id, path).await?;
                }
                for tag in set {
                    store::upsert_tag(txn, tag).await?;
                }
                let view = store::view(txn, member).await?;
                if view.tags.len() > MAX_TAGS {
                    return Err(ServiceError::invalid(
                        "set",
                        format!("a member has at most {MAX_TAGS} tags"),
                    ));
                }
                let version = store::touch(txn, &id, now).await?.version;
                publish_updated(txn, &id, "tags", version).await?;
                Ok(version)
            })
        })
        .await?;
        s.after_commit(&id, version, &[]).await;
        ok(s.view_pb(&id).await?)
    }

    async fn set_consent(&self, request: Request<pb::SetConsentRequest>) -> Rpc<pb::Member> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let id = resource_id("name", &req.name)?;
        let Some(consent) = req.consent.as_ref() else {
            return Err(ServiceError::invalid("consent", "is required").into());
        };
        let mut v = Violations::new();
        let channel = channel_of_pb(consent.channel);
        if channel.is_none() {
            v.add("consent.channel", "must be set");
        }
        let source = v.check(text("consent.source", &consent.source, 64, true));
        v.finish()?;
        let (Some(channel), Some(source)) = (channel, source) else {
            return Err(ServiceError::internal(anyhow::anyhow!("validated fields missing")).into());
        };
        let now = Utc::now();
        let granted = consent.granted;
        let version = idempotency::transaction(&s.db, |txn| {
            let (id, source) = (id.clone(), source.clone());
            Box::pin(async move {
                live_member(txn, &id).await?;
                store::insert_consent(
                    txn,
                    store::consent::Model {
                        id: store::new_id(),
                        member_id: id.clone(),
                        channel: channel.as_str().to_owned(),
                        granted,
                        source,
                        decided_at: now,
                    },
                )
                .await?;
                let version = store::touch(txn, &id, now).await?.version;
                events::publish(
                    txn,
                    "retail.events.v1.ConsentChanged",
                    &id,
                    &ev::ConsentChanged {
                        member_id: id.clone(),
                        channel: channel.as_str().to_owned(),
                        granted,
                    },
                )
                .await?;
                Ok(version)
            })
        })
        .await?;
        s.after_commit(&id, version, &[]).await;
        ok(s.view_pb(&id).await?)
    }

    async fn export_member(&self, request: Request<pb::ExportMemberRequest>) -> Rpc<pb::ExportMemberResponse> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(READ)?;
        let id = resource_id("name", &request.get_ref().name)?;
        let member = live_member(&s.db, &id).await?;
        let history = store::consent_history(&s.db, &id).await?;
        let view = store::view(&s.db, member).await?;
        ok(pb::ExportMemberResponse {
            member: Some(s.to_pb(&view)),
            consent_history: history
                .iter()
                .map(|c| pb::Consent {
                    channel: pb_channel(&c.channel),
                    granted: c.granted,
                    source: c.source.clone(),
                    update_time: Some(timestamp(c.decided_at)),
                })
                .collect(),
            points_entries: crate::store::loyalty::all_entries(&s.db, &id)
                .await?
                .iter()
                .map(|e| crate::loyalty::entry_to_pb(&id, e))
                .collect(),
            tier_changes: crate::store::loyalty::tier_changes(&s.db, &id, None)
                .await?
                .iter()
                .map(crate::loyalty::tier_change_to_pb)
                .collect(),
            purchases: view
                .purchases
                .iter()
                .map(|p| pb::Purchase {
                    order_id: p.order_id.clone(),
                    amount: Some(Money {
                        currency_code: p.currency.clone(),
                        amount_minor: p.amount_minor,
                    }),
                    occur_time: Some(timestamp(p.occurred_at)),
                    channel: p.channel.clone(),
                })
                .collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn erase_member(&self, request: Request<pb::EraseMemberRequest>) -> Rpc<pb::EraseMemberResponse> {
        let s = &self.state;
        let principal = Principal::of(&request)?.clone();
        principal.require_scope(WRITE)?;
        let req = request.into_inner();
        let id = resource_id("name", &req.name)?;
        text("reason", &req.reason, 200, true).map_err(ServiceError::from)?;
        let now = Utc::now();
        let (version, identifiers) = idempotency::transaction(&s.db, |txn| {
            let id = id.clone();
            Box::pin(async move {
                let member = live_member(txn, &id).await?;
                let view = store::view(txn, member).await?;
                let identifiers: Vec<Identifier> = view
                    .identifiers
                    .iter()
                    .filter_map(|i| {
                        IdentifierKind::parse(&i.kind).map(|kind| Identifier {
                            kind,
                            channel: i.channel.clone(),
                            value: i.value.clone(),
                        })
                    })
                    .collect();
                store::erase(txn, &id, now).await?;
                let version = store::touch(txn, &id, now).await?.version;
                events::publish(
                    txn,
                    "retail.events.v1.MemberErased",
                    &id,
                    &ev::MemberErased { member_id: id.clone() },
                )
                .await?;
                Ok((version, identifiers))
            })
        })
        .await?;
        // The cache forgets the profile and every identifier at once.
        s.after_commit(&id, version, &identifiers).await;
        tracing::info!(member_id = %id, "member erased");
        ok(pb::EraseMemberResponse {})
    }
}

async fn publish_updated(txn: &sea_orm::DatabaseTransaction, id: &str, field: &str, version: i64) -> ServiceResult<()> {
    events::publish(
        txn,
        "retail.events.v1.MemberUpdated",
        id,
        &ev::MemberUpdated {
            member_id: id.to_owned(),
            changed_fields: vec![field.to_owned()],
            version,
        },
    )
    .await?;
    Ok(())
}

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}
