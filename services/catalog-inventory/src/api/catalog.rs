//! `CatalogService`: products, variants, listings and the listing reconciliation.

use std::collections::BTreeMap;
use std::sync::Arc;

use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::paging::Page;
use retail_proto::catalog as pb;
use retail_proto::catalog::catalog_service_server::CatalogService;
use tonic::Request;

use super::convert::{listing_change_to_pb, listing_to_pb, product_to_pb, report_to_pb, sku_to_pb};
use super::parse::{channel, sku_name};
use super::{READ, Rpc, authorised, ok};
use crate::app::{App, NewProduct, NewSku, ProductChanges};
use crate::domain::codes::{self, ProductId, Role, SkuCode, TitleParts};
use crate::store::ProductFilter;

const WRITE: &str = "catalog.write";

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

#[derive(Debug, Clone)]
pub(crate) struct CatalogApi {
    app: Arc<App>,
}

impl CatalogApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn product_id(field: &str, name: &str) -> ServiceResult<ProductId> {
    ProductId::from_resource_name(name).map_err(|e| ServiceError::invalid(field, e))
}

fn role(role: i32) -> Result<Option<Role>, &'static str> {
    match pb::ProductRole::try_from(role) {
        Ok(pb::ProductRole::Unspecified) => Ok(None),
        Ok(pb::ProductRole::Hero) => Ok(Some(Role::Hero)),
        Ok(pb::ProductRole::Volume) => Ok(Some(Role::Volume)),
        Ok(pb::ProductRole::Potential) => Ok(Some(Role::Potential)),
        Ok(pb::ProductRole::Anchor) => Ok(Some(Role::Anchor)),
        Err(_) => Err("must be a product role"),
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

fn media(v: &mut Violations, field: &str, media: &[pb::Media]) -> Vec<(i32, String)> {
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
    out
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

fn attributes(v: &mut Violations, field: &str, attrs: &BTreeMap<String, String>) {
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
}

/// The variants of a create request, parsed.
fn skus(v: &mut Violations, field: &str, raw: &[pb::Sku]) -> Vec<NewSku> {
    if raw.is_empty() {
        v.add(field, "at least one variant is required");
    }
    if raw.len() > MAX_SKUS {
        v.add(field, format!("at most {MAX_SKUS}"));
    }
    let mut out: Vec<NewSku> = Vec::new();
    for (i, s) in raw.iter().enumerate().take(MAX_SKUS) {
        let code = v.field(&format!("{field}[{i}].sku_code"), SkuCode::parse(&s.sku_code));
        attributes(v, &format!("{field}[{i}].attributes"), &s.attributes);
        if let Some(code) = code {
            if out.iter().any(|o| o.code == code) {
                v.add(format!("{field}[{i}].sku_code"), "is listed twice");
            }
            out.push(NewSku {
                code,
                attributes: s.attributes.clone(),
            });
        }
    }
    out
}

fn new_product(p: &pb::Product) -> ServiceResult<NewProduct> {
    let mut v = Violations::new();
    let category = v.field("product.category", codes::path(&p.category));
    let title_parts = title_parts(&mut v, "product.title_parts", p.title_parts.as_ref());
    let media = media(&mut v, "product.media", &p.media);
    let detail = detail(&mut v, "product.detail", &p.detail);
    let tags = tags(&mut v, "product.tags", &p.tags);
    let role = v.field("product.role", role(p.role)).flatten();
    let skus = skus(&mut v, "product.skus", &p.skus);
    v.finish()?;
    Ok(NewProduct {
        category: category.unwrap_or_default(),
        title_parts,
        media,
        detail,
        tags,
        role,
        skus,
    })
}

fn product_changes(p: &pb::Product, paths: Vec<String>) -> ServiceResult<ProductChanges> {
    if paths.is_empty() {
        return Err(ServiceError::invalid("update_mask", "must name the fields to update"));
    }
    let mut changes = ProductChanges::default();
    let mut v = Violations::new();
    for path in v.mask_paths("update_mask", &paths) {
        match path.as_str() {
            "category" => changes.category = v.field("product.category", codes::path(&p.category)),
            "title_parts" => {
                changes.title_parts = Some(title_parts(&mut v, "product.title_parts", p.title_parts.as_ref()));
            }
            "media" => changes.media = Some(media(&mut v, "product.media", &p.media)),
            "detail" => changes.detail = Some(detail(&mut v, "product.detail", &p.detail)),
            "tags" => changes.tags = Some(tags(&mut v, "product.tags", &p.tags)),
            "role" => changes.role = v.field("product.role", role(p.role)),
            other => v.add("update_mask", format!("cannot update `{other}`")),
        }
    }
    v.finish()?;
    changes.paths = paths;
    Ok(changes)
}

fn product_filter(req: &pb::ListProductsRequest) -> ServiceResult<ProductFilter> {
    let mut v = Violations::new();
    let mut filter = ProductFilter::default();
    if !req.category.is_empty() {
        filter.category = v.field("category", codes::path(&req.category));
    }
    if !req.tag.is_empty() {
        filter.tag = v.field("tag", codes::path(&req.tag));
    }
    filter.role = v.field("role", role(req.role)).flatten().map(|r| r.as_str().to_owned());
    if req.channel != 0 {
        filter.listing = v
            .field("channel", channel(req.channel))
            .map(|c| (c.as_str().to_owned(), req.listed));
    }
    v.finish()?;
    Ok(filter)
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    #[tracing::instrument(skip_all)]
    async fn create_product(&self, request: Request<pb::CreateProductRequest>) -> Rpc<pb::Product> {
        let caller = authorised(&request, WRITE)?.subject.clone();
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("catalog.CreateProduct", &caller, &req.request_id, &req)?;
        let Some(p) = req.product.as_ref() else {
            return Err(ServiceError::invalid("product", "is required").into());
        };
        let input = new_product(p)?;
        ok(self.app.create_product(key.as_ref(), input, product_to_pb).await?)
    }

    async fn get_product(&self, request: Request<pb::GetProductRequest>) -> Rpc<pb::Product> {
        authorised(&request, READ)?;
        let id = product_id("name", &request.get_ref().name)?;
        ok(product_to_pb(&self.app.product(&id).await?))
    }

    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Rpc<pb::BatchGetProductsResponse> {
        authorised(&request, READ)?;
        let names = &request.get_ref().names;
        if names.len() > MAX_BATCH {
            return Err(ServiceError::invalid("names", format!("at most {MAX_BATCH}")).into());
        }
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| product_id(&format!("names[{i}]"), n))
            .collect::<ServiceResult<Vec<_>>>()?;
        let views = self.app.products(&ids).await?;
        ok(pb::BatchGetProductsResponse {
            products: views.iter().map(product_to_pb).collect(),
        })
    }

    async fn batch_get_skus(&self, request: Request<pb::BatchGetSkusRequest>) -> Rpc<pb::BatchGetSkusResponse> {
        authorised(&request, READ)?;
        let names = &request.get_ref().names;
        if names.len() > MAX_BATCH {
            return Err(ServiceError::invalid("names", format!("at most {MAX_BATCH}")).into());
        }
        let codes = names
            .iter()
            .enumerate()
            .map(|(i, n)| sku_name(&format!("names[{i}]"), n))
            .collect::<ServiceResult<Vec<_>>>()?;
        let views = self.app.skus(&codes).await?;
        ok(pb::BatchGetSkusResponse {
            skus: views.iter().map(|v| sku_to_pb(v)).collect(),
        })
    }

    async fn list_products(&self, request: Request<pb::ListProductsRequest>) -> Rpc<pb::ListProductsResponse> {
        authorised(&request, READ)?;
        let req = request.into_inner();
        let filter = product_filter(&req)?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("{filter:?}"))?;
        let (views, next_page_token) = self.app.list_products(&filter, &page).await?;
        ok(pb::ListProductsResponse {
            products: views.iter().map(product_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn update_product(&self, request: Request<pb::UpdateProductRequest>) -> Rpc<pb::Product> {
        authorised(&request, WRITE)?;
        let req = request.into_inner();
        let Some(p) = req.product.as_ref() else {
            return Err(ServiceError::invalid("product", "is required").into());
        };
        let id = product_id("product.name", &p.name)?;
        let changes = product_changes(p, req.update_mask.map(|m| m.paths).unwrap_or_default())?;
        ok(product_to_pb(&self.app.update_product(&id, changes).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn create_sku(&self, request: Request<pb::CreateSkuRequest>) -> Rpc<pb::Sku> {
        authorised(&request, WRITE)?;
        let req = request.into_inner();
        let id = product_id("parent", &req.parent)?;
        let Some(sku) = req.sku.as_ref() else {
            return Err(ServiceError::invalid("sku", "is required").into());
        };
        let mut v = Violations::new();
        let mut parsed = skus(&mut v, "sku", std::slice::from_ref(sku));
        v.finish()?;
        let sku = parsed
            .pop()
            .ok_or_else(|| ServiceError::invalid("sku.sku_code", "is required"))?;
        ok(sku_to_pb(&self.app.create_sku(&id, sku).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn set_listing(&self, request: Request<pb::SetListingRequest>) -> Rpc<pb::Listing> {
        let actor = authorised(&request, WRITE)?.subject.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let code = v.field("sku", SkuCode::from_resource_name(&req.sku));
        let channel = v.field("channel", channel(req.channel));
        let reason = v.text("reason", &req.reason, 200, false);
        v.finish()?;
        let (Some(code), Some(channel)) = (code, channel) else {
            return Err(ServiceError::invalid("sku", "is required").into());
        };
        let listing = self
            .app
            .set_listing(&code, channel, req.listed, &actor, &reason)
            .await?;
        ok(listing_to_pb(&listing))
    }

    async fn list_listing_changes(
        &self,
        request: Request<pb::ListListingChangesRequest>,
    ) -> Rpc<pb::ListListingChangesResponse> {
        // Who changed a listing is a staff identity: partners see the change, not them.
        let show_actor = authorised(&request, READ)?.partner_scope().is_none();
        let req = request.into_inner();
        let code = sku_name("sku", &req.sku)?;
        let page = Page::parse(req.page_size, &req.page_token, code.as_str())?;
        let (rows, next_page_token) = self.app.listing_changes(&code, &page).await?;
        ok(pb::ListListingChangesResponse {
            changes: rows.into_iter().map(|c| listing_change_to_pb(c, show_actor)).collect(),
            next_page_token,
        })
    }

    async fn reconcile_listings(
        &self,
        request: Request<pb::ReconcileListingsRequest>,
    ) -> Rpc<pb::ReconcileListingsResponse> {
        authorised(&request, READ)?;
        let channel = channel(request.get_ref().channel).map_err(|e| ServiceError::invalid("channel", e))?;
        let report = self.app.reconcile(channel).await?;
        ok(report_to_pb(channel, report))
    }
}
