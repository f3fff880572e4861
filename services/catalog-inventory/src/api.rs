//! The gRPC adapter of the catalog: products, variants, listings and the listing
//! reconciliation. Parses requests into domain types, authorises, runs the change and
//! its event in one transaction.
//!
//! Pricing is in [`crate::pricing`], stock and reservations in [`crate::inventory`];
//! the shared state and conversions live here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use retail_kit::auth::Principal;
use retail_kit::convert::{now, timestamp};
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::events::{self, EventLog};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use retail_proto::catalog as pb;
use retail_proto::catalog::catalog_service_server::CatalogService;
use retail_proto::events as ev;
use sea_orm::{ActiveValue::Set, DatabaseConnection, IntoActiveModel};
use tonic::{Request, Response, Status};

use crate::domain::codes::{self, Channel, Role, SkuCode, TitleParts};
use crate::domain::reconcile;
use crate::settings::Settings;
use crate::store::{self, ProductView, SkuView};

pub const READ: &str = "catalog.read";
pub const WRITE: &str = "catalog.write";

/// Variants per product, at most.
const MAX_SKUS: usize = 100;
/// Tags per product, at most.
const MAX_TAGS: usize = 50;
/// Media per product, at most.
const MAX_MEDIA: usize = 30;
/// Names per batch get, at most.
const MAX_BATCH: usize = 100;
/// Detail page size, at most, in characters.
const MAX_DETAIL: usize = 20_000;

#[derive(Debug)]
pub struct State {
    pub db: DatabaseConnection,
    pub log: Arc<EventLog>,
    /// SKU views for `BatchGetSkus` and quotes, evicted by this service's own events.
    pub skus: Arc<crate::sku_cache::SkuCache>,
    /// List prices and price rules for quotes, dropped on every price change.
    pub prices: Arc<crate::price_cache::PriceCache>,
    /// Reservations this process made and that may still be active, by order id.
    pub held: crate::inventory::HeldReservations,
    pub settings: Settings,
}

pub(crate) type Rpc<T> = Result<Response<T>, Status>;

pub(crate) fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

#[derive(Debug, Clone)]
pub struct CatalogApi {
    state: Arc<State>,
}

impl CatalogApi {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

pub(crate) fn channel_of_pb(field: &str, channel: i32) -> ServiceResult<Channel> {
    match pb::SalesChannel::try_from(channel) {
        Ok(pb::SalesChannel::Store) => Ok(Channel::Store),
        Ok(pb::SalesChannel::Online) => Ok(Channel::Online),
        Ok(pb::SalesChannel::App) => Ok(Channel::App),
        Ok(pb::SalesChannel::Partner) => Ok(Channel::Partner),
        _ => Err(ServiceError::invalid(field, "must be a sales channel")),
    }
}

pub(crate) fn pb_channel(channel: &str) -> i32 {
    (match Channel::parse(channel) {
        Some(Channel::Store) => pb::SalesChannel::Store,
        Some(Channel::Online) => pb::SalesChannel::Online,
        Some(Channel::App) => pb::SalesChannel::App,
        Some(Channel::Partner) => pb::SalesChannel::Partner,
        None => pb::SalesChannel::Unspecified,
    }) as i32
}

fn role_of_pb(role: i32) -> Result<Option<Role>, &'static str> {
    match pb::ProductRole::try_from(role) {
        Ok(pb::ProductRole::Unspecified) => Ok(None),
        Ok(pb::ProductRole::Hero) => Ok(Some(Role::Hero)),
        Ok(pb::ProductRole::Volume) => Ok(Some(Role::Volume)),
        Ok(pb::ProductRole::Potential) => Ok(Some(Role::Potential)),
        Ok(pb::ProductRole::Anchor) => Ok(Some(Role::Anchor)),
        Err(_) => Err("must be a product role"),
    }
}

fn pb_role(role: &str) -> i32 {
    (match Role::parse(role) {
        Some(Role::Hero) => pb::ProductRole::Hero,
        Some(Role::Volume) => pb::ProductRole::Volume,
        Some(Role::Potential) => pb::ProductRole::Potential,
        Some(Role::Anchor) => pb::ProductRole::Anchor,
        None => pb::ProductRole::Unspecified,
    }) as i32
}

/// Parses `skus/{code}` into a code, naming `field` when it is not one.
pub(crate) fn sku_name(field: &str, name: &str) -> ServiceResult<SkuCode> {
    SkuCode::from_resource_name(name).map_err(|e| ServiceError::invalid(field, e))
}

fn product_id(field: &str, name: &str) -> ServiceResult<String> {
    let id = name
        .strip_prefix("products/")
        .ok_or_else(|| ServiceError::invalid(field, "must be products/{product_id}"))?;
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ServiceError::invalid(field, "must be products/{product_id} with a UUID id"))
}

fn sku_to_pb(v: &SkuView) -> pb::Sku {
    pb::Sku {
        name: format!("skus/{}", v.sku.code),
        sku_code: v.sku.code.clone(),
        product: format!("products/{}", v.sku.product_id),
        attributes: serde_json::from_str(&v.sku.attributes_json).unwrap_or_default(),
        sellable_quantity: v.sellable,
        listed_channels: v.listed_channels.iter().map(|c| pb_channel(c)).collect(),
        create_time: Some(timestamp(v.sku.created_at)),
    }
}

fn title_parts_to_pb(t: &TitleParts) -> pb::TitleParts {
    pb::TitleParts {
        category_words: t.category.clone(),
        attribute_words: t.attribute.clone(),
        brand_words: t.brand.clone(),
        selling_point_words: t.selling_point.clone(),
        promotion_words: t.promotion.clone(),
    }
}

fn product_to_pb(v: &ProductView) -> pb::Product {
    let p = &v.product;
    let parts: TitleParts = serde_json::from_str(&p.title_parts_json).unwrap_or_default();
    let media: Vec<(i32, String)> = serde_json::from_str(&p.media_json).unwrap_or_default();
    pb::Product {
        name: format!("products/{}", p.id),
        category: p.category.clone(),
        title_parts: Some(title_parts_to_pb(&parts)),
        title: p.title.clone(),
        media: media.into_iter().map(|(kind, uri)| pb::Media { kind, uri }).collect(),
        detail: p.detail.clone(),
        tags: v.tags.clone(),
        role: pb_role(&p.role),
        skus: v.skus.iter().map(sku_to_pb).collect(),
        create_time: Some(timestamp(p.created_at)),
        update_time: Some(timestamp(p.updated_at)),
    }
}

fn listing_to_pb(l: &store::listing::Model) -> pb::Listing {
    pb::Listing {
        sku: format!("skus/{}", l.sku_code),
        channel: pb_channel(&l.channel),
        listed: l.listed,
        actor: l.actor.clone(),
        reason: l.reason.clone(),
        update_time: Some(timestamp(l.updated_at)),
    }
}

fn title_parts(v: &mut Violations, field: &str, parts: Option<&pb::TitleParts>) -> TitleParts {
    let Some(p) = parts else {
        v.add(field, "is required");
        return TitleParts::default();
    };
    let trim = |words: &[String]| words.iter().map(|w| w.trim().to_owned()).collect::<Vec<_>>();
    let parts = TitleParts {
        category: trim(&p.category_words),
        attribute: trim(&p.attribute_words),
        brand: trim(&p.brand_words),
        selling_point: trim(&p.selling_point_words),
        promotion: trim(&p.promotion_words),
    };
    for (part, reason) in parts.violations() {
        v.add(format!("{field}.{part}"), reason);
    }
    parts
}

fn media(v: &mut Violations, field: &str, media: &[pb::Media]) -> String {
    if media.len() > MAX_MEDIA {
        v.add(field, format!("at most {MAX_MEDIA}"));
    }
    let mut out = Vec::new();
    for (i, m) in media.iter().enumerate().take(MAX_MEDIA) {
        let kind_ok = matches!(
            pb::media::Kind::try_from(m.kind),
            Ok(pb::media::Kind::Image | pb::media::Kind::Video)
        );
        if !kind_ok {
            v.add(format!("{field}[{i}].kind"), "must be image or video");
        }
        let uri = m.uri.trim();
        if !uri.starts_with("https://") || uri.len() > 2_000 || uri.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            v.add(
                format!("{field}[{i}].uri"),
                "must be an https URI of at most 2000 characters",
            );
        }
        out.push((m.kind, uri.to_owned()));
    }
    serde_json::to_string(&out).unwrap_or_else(|_| "[]".into())
}

/// Detail page content: Markdown, so line breaks and tabs are allowed.
fn detail(v: &mut Violations, field: &str, raw: &str) -> String {
    if raw.chars().count() > MAX_DETAIL {
        v.add(field, format!("must be at most {MAX_DETAIL} characters"));
    }
    if raw.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        v.add(
            field,
            "must not contain control characters other than line breaks and tabs",
        );
    }
    raw.trim().to_owned()
}

fn tags(v: &mut Violations, field: &str, raw: &[String]) -> Vec<String> {
    if raw.len() > MAX_TAGS {
        v.add(field, format!("at most {MAX_TAGS}"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, t) in raw.iter().enumerate().take(MAX_TAGS) {
        if let Some(tag) = v.field(&format!("{field}[{i}]"), codes::path(t))
            && !out.contains(&tag)
        {
            out.push(tag);
        }
    }
    out
}

fn attributes(v: &mut Violations, field: &str, attrs: &BTreeMap<String, String>) -> String {
    if attrs.len() > 20 {
        v.add(field, "at most 20 attributes");
    }
    for (k, value) in attrs {
        if k.trim().is_empty()
            || k.len() > 64
            || value.len() > 200
            || k.chars().chain(value.chars()).any(char::is_control)
        {
            v.add(
                format!("{field}[{k:.64}]"),
                "keys 1-64 characters, values at most 200, no control characters",
            );
        }
    }
    serde_json::to_string(attrs).unwrap_or_else(|_| "{}".into())
}

/// The variants of a create request, parsed.
fn skus(v: &mut Violations, field: &str, raw: &[pb::Sku], product_id: &str) -> Vec<store::sku::Model> {
    if raw.is_empty() {
        v.add(field, "at least one variant is required");
    }
    if raw.len() > MAX_SKUS {
        v.add(field, format!("at most {MAX_SKUS}"));
    }
    let now = now();
    let mut out: Vec<store::sku::Model> = Vec::new();
    for (i, s) in raw.iter().enumerate().take(MAX_SKUS) {
        let code = v.field(&format!("{field}[{i}].sku_code"), SkuCode::parse(&s.sku_code));
        let attributes_json = attributes(v, &format!("{field}[{i}].attributes"), &s.attributes);
        if let Some(code) = code {
            if out.iter().any(|o| o.code == code.as_str()) {
                v.add(format!("{field}[{i}].sku_code"), "is listed twice");
            }
            out.push(store::sku::Model {
                code: code.as_str().to_owned(),
                product_id: product_id.to_owned(),
                attributes_json,
                created_at: now,
            });
        }
    }
    out
}

impl State {
    /// The views of the SKUs among `codes` that exist, by code: from the SKU cache
    /// where it has them, the rest read (and cached).
    pub(crate) async fn sku_views(&self, codes: &[String]) -> ServiceResult<HashMap<String, Arc<pb::Sku>>> {
        let (mut found, missing) = self.skus.get_many(codes);
        if !missing.is_empty() {
            let ticket = self.skus.ticket();
            for view in store::sku_views(&self.db, &missing).await? {
                let sku = Arc::new(sku_to_pb(&view));
                self.skus.put(ticket, sku.clone());
                found.insert(view.sku.code, sku);
            }
        }
        Ok(found)
    }

    async fn product(&self, id: &str) -> ServiceResult<pb::Product> {
        let product = store::find_product(&self.db, id)
            .await?
            .ok_or_else(|| ServiceError::not_found("product", format!("products/{id}")))?;
        let views = store::product_views(&self.db, vec![product]).await?;
        views
            .first()
            .map(product_to_pb)
            .ok_or_else(|| ServiceError::not_found("product", format!("products/{id}")))
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    #[tracing::instrument(skip_all)]
    async fn create_product(&self, request: Request<pb::CreateProductRequest>) -> Rpc<pb::Product> {
        let s = &self.state;
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("catalog.CreateProduct", &caller, &req.request_id, &req)?;
        let Some(p) = req.product.as_ref() else {
            return Err(ServiceError::invalid("product", "is required").into());
        };
        let id = store::new_id();
        let mut v = Violations::new();
        let category = v.field("product.category", codes::path(&p.category));
        let parts = title_parts(&mut v, "product.title_parts", p.title_parts.as_ref());
        let media_json = media(&mut v, "product.media", &p.media);
        let detail = detail(&mut v, "product.detail", &p.detail);
        let tags = tags(&mut v, "product.tags", &p.tags);
        let role = v.field("product.role", role_of_pb(p.role)).flatten();
        let skus = skus(&mut v, "product.skus", &p.skus, &id);
        v.finish()?;
        let now = now();
        let model = store::product::Model {
            id: id.clone(),
            category: category.unwrap_or_default(),
            title_parts_json: serde_json::to_string(&parts).unwrap_or_else(|_| "{}".into()),
            title: parts.compose(),
            media_json,
            detail,
            role: role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        let response = idempotency::execute(&s.db, key.as_ref(), Clone::clone, |txn| {
            let (model, tags, skus) = (model.clone(), tags.clone(), skus.clone());
            Box::pin(async move {
                let event = ev::ProductCreated {
                    product_id: model.id.clone(),
                    category: model.category.clone(),
                    title: model.title.clone(),
                    sku_codes: skus.iter().map(|s| s.code.clone()).collect(),
                    role: model.role.clone(),
                };
                store::insert_product(txn, model.clone(), &tags, skus).await?;
                events::publish(txn, "retail.events.v1.ProductCreated", &model.id, &event).await?;
                let views = store::product_views(txn, vec![model]).await?;
                views
                    .first()
                    .map(product_to_pb)
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("created product is not readable")))
            })
        })
        .await?;
        s.log.committed();
        ok(response)
    }

    async fn get_product(&self, request: Request<pb::GetProductRequest>) -> Rpc<pb::Product> {
        Principal::of(&request)?.require_scope(READ)?;
        let id = product_id("name", &request.get_ref().name)?;
        ok(self.state.product(&id).await?)
    }

    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Rpc<pb::BatchGetProductsResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let names = &request.get_ref().names;
        if names.len() > MAX_BATCH {
            return Err(ServiceError::invalid("names", format!("at most {MAX_BATCH}")).into());
        }
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| product_id(&format!("names[{i}]"), n))
            .collect::<ServiceResult<Vec<_>>>()?;
        let views = store::products_by_ids(&self.state.db, &ids).await?;
        if let Some(missing) = ids.iter().find(|id| !views.iter().any(|v| &v.product.id == *id)) {
            return Err(ServiceError::not_found("product", format!("products/{missing}")).into());
        }
        // Views come in the order asked, once per distinct id; repeat duplicates.
        let by_id: BTreeMap<&str, &ProductView> = views.iter().map(|v| (v.product.id.as_str(), v)).collect();
        let products = ids
            .iter()
            .filter_map(|id| by_id.get(id.as_str()).map(|v| product_to_pb(v)))
            .collect();
        ok(pb::BatchGetProductsResponse { products })
    }

    async fn batch_get_skus(&self, request: Request<pb::BatchGetSkusRequest>) -> Rpc<pb::BatchGetSkusResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let names = &request.get_ref().names;
        if names.len() > MAX_BATCH {
            return Err(ServiceError::invalid("names", format!("at most {MAX_BATCH}")).into());
        }
        let codes = names
            .iter()
            .enumerate()
            .map(|(i, n)| sku_name(&format!("names[{i}]"), n).map(|c| c.as_str().to_owned()))
            .collect::<ServiceResult<Vec<_>>>()?;
        let found = self.state.sku_views(&codes).await?;
        let mut skus = Vec::with_capacity(codes.len());
        for code in &codes {
            match found.get(code) {
                Some(sku) => skus.push(sku.as_ref().clone()),
                None => return Err(ServiceError::not_found("sku", format!("skus/{code}")).into()),
            }
        }
        ok(pb::BatchGetSkusResponse { skus })
    }

    async fn list_products(&self, request: Request<pb::ListProductsRequest>) -> Rpc<pb::ListProductsResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let mut filter = store::ProductFilter::default();
        if !req.category.is_empty() {
            filter.category = v.field("category", codes::path(&req.category));
        }
        if !req.tag.is_empty() {
            filter.tag = v.field("tag", codes::path(&req.tag));
        }
        filter.role = v
            .field("role", role_of_pb(req.role))
            .flatten()
            .map(|r| r.as_str().to_owned());
        if req.channel != 0 {
            match channel_of_pb("channel", req.channel) {
                Ok(c) => filter.listing = Some((c.as_str().to_owned(), req.listed)),
                Err(_) => v.add("channel", "must be a sales channel"),
            }
        }
        v.finish()?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("{filter:?}"))?;
        let rows = store::list_products(&self.state.db, &page, &filter).await?;
        let (rows, next_page_token) = page.finish(rows, |p| p.id.clone());
        let products = store::product_views(&self.state.db, rows)
            .await?
            .iter()
            .map(product_to_pb)
            .collect();
        ok(pb::ListProductsResponse {
            products,
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn update_product(&self, request: Request<pb::UpdateProductRequest>) -> Rpc<pb::Product> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let Some(p) = req.product.as_ref() else {
            return Err(ServiceError::invalid("product", "is required").into());
        };
        let id = product_id("product.name", &p.name)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(ServiceError::invalid("update_mask", "must name the fields to update").into());
        }
        let existing = store::find_product(&s.db, &id)
            .await?
            .ok_or_else(|| ServiceError::not_found("product", format!("products/{id}")))?;
        let mut active = existing.clone().into_active_model();
        let mut new_tags = None;
        let mut v = Violations::new();
        for path in v.mask_paths("update_mask", &paths) {
            match path.as_str() {
                "category" => {
                    if let Some(c) = v.field("product.category", codes::path(&p.category)) {
                        active.category = Set(c);
                    }
                }
                "title_parts" => {
                    let parts = title_parts(&mut v, "product.title_parts", p.title_parts.as_ref());
                    active.title = Set(parts.compose());
                    active.title_parts_json = Set(serde_json::to_string(&parts).unwrap_or_else(|_| "{}".into()));
                }
                "media" => active.media_json = Set(media(&mut v, "product.media", &p.media)),
                "detail" => active.detail = Set(detail(&mut v, "product.detail", &p.detail)),
                "tags" => new_tags = Some(tags(&mut v, "product.tags", &p.tags)),
                "role" => {
                    if let Some(role) = v.field("product.role", role_of_pb(p.role)) {
                        active.role = Set(role.map(|r| r.as_str().to_owned()).unwrap_or_default());
                    }
                }
                other => v.add("update_mask", format!("cannot update `{other}`")),
            }
        }
        v.finish()?;
        active.updated_at = Set(now());
        idempotency::transaction(&s.db, |txn| {
            let (active, id, paths, new_tags) = (active.clone(), id.clone(), paths.clone(), new_tags.clone());
            Box::pin(async move {
                store::update_product(txn, active).await?;
                if let Some(tags) = &new_tags {
                    store::replace_tags(txn, &id, tags).await?;
                }
                events::publish(
                    txn,
                    "retail.events.v1.ProductUpdated",
                    &id,
                    &ev::ProductUpdated {
                        product_id: id.clone(),
                        changed_fields: paths,
                    },
                )
                .await?;
                Ok(())
            })
        })
        .await?;
        s.log.committed();
        ok(s.product(&id).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn create_sku(&self, request: Request<pb::CreateSkuRequest>) -> Rpc<pb::Sku> {
        let s = &self.state;
        Principal::of(&request)?.require_scope(WRITE)?;
        let req = request.into_inner();
        let id = product_id("parent", &req.parent)?;
        let Some(sku) = req.sku.as_ref() else {
            return Err(ServiceError::invalid("sku", "is required").into());
        };
        let mut v = Violations::new();
        let mut models = skus(&mut v, "sku", std::slice::from_ref(sku), &id);
        v.finish()?;
        let model = models
            .pop()
            .ok_or_else(|| ServiceError::invalid("sku.sku_code", "is required"))?;
        store::find_product(&s.db, &id)
            .await?
            .ok_or_else(|| ServiceError::not_found("product", format!("products/{id}")))?;
        idempotency::transaction(&s.db, |txn| {
            let (model, id) = (model.clone(), id.clone());
            Box::pin(async move {
                store::insert_sku(txn, model).await?;
                events::publish(
                    txn,
                    "retail.events.v1.ProductUpdated",
                    &id,
                    &ev::ProductUpdated {
                        product_id: id.clone(),
                        changed_fields: vec!["skus".into()],
                    },
                )
                .await?;
                Ok(())
            })
        })
        .await?;
        s.log.committed();
        let views = store::sku_views(&s.db, std::slice::from_ref(&model.code)).await?;
        let view = views
            .first()
            .ok_or_else(|| ServiceError::not_found("sku", format!("skus/{}", model.code)))?;
        ok(sku_to_pb(view))
    }

    #[tracing::instrument(skip_all)]
    async fn set_listing(&self, request: Request<pb::SetListingRequest>) -> Rpc<pb::Listing> {
        let s = &self.state;
        let actor = {
            let principal = Principal::of(&request)?;
            principal.require_scope(WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let mut v = Violations::new();
        let code = v.check(sku_name("sku", &req.sku).map_err(first_violation));
        let channel = v.check(channel_of_pb("channel", req.channel).map_err(first_violation));
        let reason = v.text("reason", &req.reason, 200, false);
        v.finish()?;
        let (Some(code), Some(channel)) = (code, channel) else {
            return Err(ServiceError::invalid("sku", "is required").into());
        };
        if store::find_sku(&s.db, code.as_str()).await?.is_none() {
            return Err(ServiceError::not_found("sku", code.resource_name()).into());
        }
        let listing = idempotency::transaction(&s.db, |txn| {
            let (code, actor, reason) = (code.clone(), actor.clone(), reason.clone());
            Box::pin(async move {
                let now = now();
                let current = store::find_listing(txn, code.as_str(), channel.as_str()).await?;
                // Setting the state it already has changes nothing and publishes nothing.
                if let Some(current) = current
                    && current.listed == req.listed
                {
                    return Ok(current);
                }
                let row =
                    store::set_listing(txn, code.as_str(), channel.as_str(), req.listed, &actor, &reason, now).await?;
                events::publish(
                    txn,
                    "retail.events.v1.ListingChanged",
                    code.as_str(),
                    &ev::ListingChanged {
                        sku_code: code.as_str().to_owned(),
                        channel: channel.as_str().to_owned(),
                        listed: req.listed,
                    },
                )
                .await?;
                Ok(row)
            })
        })
        .await?;
        s.log.committed();
        ok(listing_to_pb(&listing))
    }

    async fn list_listing_changes(
        &self,
        request: Request<pb::ListListingChangesRequest>,
    ) -> Rpc<pb::ListListingChangesResponse> {
        let principal = Principal::of(&request)?;
        principal.require_scope(READ)?;
        // Who changed a listing is a staff identity: partners see the change, not them.
        let show_actor = principal.partner_scope().is_none();
        let req = request.into_inner();
        let code = sku_name("sku", &req.sku)?;
        let page = Page::parse(req.page_size, &req.page_token, code.as_str())?;
        if store::find_sku(&self.state.db, code.as_str()).await?.is_none() {
            return Err(ServiceError::not_found("sku", code.resource_name()).into());
        }
        let rows = store::listing_changes(&self.state.db, code.as_str(), &page).await?;
        let (rows, next_page_token) = page.finish(rows, |c| c.id.clone());
        ok(pb::ListListingChangesResponse {
            changes: rows
                .into_iter()
                .map(|c| pb::Listing {
                    sku: format!("skus/{}", c.sku_code),
                    channel: pb_channel(&c.channel),
                    listed: c.listed,
                    actor: if show_actor { c.actor } else { String::new() },
                    reason: c.reason,
                    update_time: Some(timestamp(c.created_at)),
                })
                .collect(),
            next_page_token,
        })
    }

    async fn reconcile_listings(
        &self,
        request: Request<pb::ReconcileListingsRequest>,
    ) -> Rpc<pb::ReconcileListingsResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let channel = channel_of_pb("channel", request.get_ref().channel)?;
        let report = self.state.reconcile(channel).await?;
        ok(report)
    }
}

impl State {
    /// The reconciliation report of a channel (also run daily by the service).
    pub async fn reconcile(&self, channel: Channel) -> ServiceResult<pb::ReconcileListingsResponse> {
        let facts = store::reconciliation_facts(&self.db, channel.as_str()).await?;
        let report = reconcile::reconcile(&facts);
        let name = |code: &String| format!("skus/{code}");
        Ok(pb::ReconcileListingsResponse {
            channel: pb_channel(channel.as_str()),
            listed_without_stock: report.listed_without_stock.iter().map(name).collect(),
            unlisted_with_stock: report.unlisted_with_stock.iter().map(name).collect(),
            duplicates: report
                .duplicates
                .into_iter()
                .map(|(title, skus)| pb::DuplicateListing {
                    title,
                    skus: skus.iter().map(name).collect(),
                })
                .collect(),
            report_time: Some(timestamp(now())),
        })
    }
}

/// The first field violation of an invalid-argument error, to collect it with others.
pub(crate) fn first_violation(err: ServiceError) -> retail_kit::error::Violation {
    match err {
        ServiceError::InvalidArgument(mut v) if !v.is_empty() => v.swap_remove(0),
        other => retail_kit::error::Violation::new("request", other.to_string()),
    }
}
