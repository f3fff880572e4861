//! Products and their SKUs: creating, reading, listing and changing them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use retail_kit::convert::now;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;
use sea_orm::{ActiveValue::Set, IntoActiveModel};

use super::App;
use crate::domain::codes::{ProductId, Role, SkuCode, TitleParts};
use crate::events;
use crate::store::{self, ProductView, SkuView};

/// A variant of a product: its code and attributes.
#[derive(Debug, Clone)]
pub(crate) struct NewSku {
    pub(crate) code: SkuCode,
    pub(crate) attributes: BTreeMap<String, String>,
}

/// A product to create, with at least one variant.
#[derive(Debug, Clone)]
pub(crate) struct NewProduct {
    pub(crate) category: String,
    pub(crate) title_parts: TitleParts,
    /// (media kind as the API numbers it, https URI).
    pub(crate) media: Vec<(i32, String)>,
    pub(crate) detail: String,
    pub(crate) tags: Vec<String>,
    pub(crate) role: Option<Role>,
    pub(crate) skus: Vec<NewSku>,
}

/// The fields of a product to change (`None`: left as it is), and the paths the
/// change names.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProductChanges {
    pub(crate) paths: Vec<String>,
    pub(crate) category: Option<String>,
    pub(crate) title_parts: Option<TitleParts>,
    pub(crate) media: Option<Vec<(i32, String)>>,
    pub(crate) detail: Option<String>,
    pub(crate) tags: Option<Vec<String>>,
    /// `Some(None)` clears the role.
    pub(crate) role: Option<Option<Role>>,
}

fn title_parts_json(parts: &TitleParts) -> String {
    serde_json::to_string(parts).unwrap_or_else(|_| "{}".into())
}

fn media_json(media: &[(i32, String)]) -> String {
    serde_json::to_string(media).unwrap_or_else(|_| "[]".into())
}

fn role_column(role: Option<Role>) -> String {
    role.map(|r| r.as_str().to_owned()).unwrap_or_default()
}

fn sku_model(sku: &NewSku, product: &ProductId, at: chrono::DateTime<chrono::Utc>) -> store::sku::Model {
    store::sku::Model {
        code: sku.code.as_str().to_owned(),
        product_id: product.as_str().to_owned(),
        attributes_json: serde_json::to_string(&sku.attributes).unwrap_or_else(|_| "{}".into()),
        created_at: at,
    }
}

fn not_found(id: &ProductId) -> ServiceError {
    ServiceError::not_found("product", id.resource_name())
}

impl App {
    /// Creates a product with its variants. Idempotent by `key`: a replay answers what
    /// the first request answered, as `render` made it.
    pub(crate) async fn create_product<R>(
        &self,
        key: Option<&IdempotencyKey>,
        input: NewProduct,
        render: fn(&ProductView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        let id = ProductId::new();
        let now = now();
        let skus: Vec<store::sku::Model> = input.skus.iter().map(|s| sku_model(s, &id, now)).collect();
        let model = store::product::Model {
            id: id.as_str().to_owned(),
            category: input.category,
            title_parts_json: title_parts_json(&input.title_parts),
            title: input.title_parts.compose(),
            media_json: media_json(&input.media),
            detail: input.detail,
            role: role_column(input.role),
            created_at: now,
            updated_at: now,
        };
        let tags = input.tags;
        let response = idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (model, tags, skus) = (model.clone(), tags.clone(), skus.clone());
            Box::pin(async move {
                let event = events::product_created(&model, skus.iter().map(|s| s.code.clone()).collect());
                store::insert_product(txn, model.clone(), &tags, skus).await?;
                event.publish(txn, &model.id).await?;
                let views = store::product_views(txn, vec![model]).await?;
                views
                    .first()
                    .map(render)
                    .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("created product is not readable")))
            })
        })
        .await?;
        self.log.committed();
        Ok(response)
    }

    pub(crate) async fn product(&self, id: &ProductId) -> ServiceResult<ProductView> {
        let product = store::find_product(&self.db, id.as_str())
            .await?
            .ok_or_else(|| not_found(id))?;
        store::product_views(&self.db, vec![product])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| not_found(id))
    }

    /// The products `ids` name, in that order (repeated as asked); NOT_FOUND for the
    /// first that does not exist.
    pub(crate) async fn products(&self, ids: &[ProductId]) -> ServiceResult<Vec<ProductView>> {
        let raw: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        let views = store::products_by_ids(&self.db, &raw).await?;
        if let Some(missing) = ids.iter().find(|id| !views.iter().any(|v| v.product.id == id.as_str())) {
            return Err(not_found(missing));
        }
        // Views come in the order asked, once per distinct id; repeat duplicates.
        let by_id: HashMap<&str, &ProductView> = views.iter().map(|v| (v.product.id.as_str(), v)).collect();
        Ok(raw
            .iter()
            .filter_map(|id| by_id.get(id.as_str()).map(|v| (*v).clone()))
            .collect())
    }

    /// Lists the products `filter` selects; returns the page and the next page's token.
    pub(crate) async fn list_products(
        &self,
        filter: &store::ProductFilter,
        page: &Page,
    ) -> ServiceResult<(Vec<ProductView>, String)> {
        let rows = store::list_products(&self.db, page, filter).await?;
        let (rows, next_page_token) = page.finish(rows, |p| p.id.clone());
        Ok((store::product_views(&self.db, rows).await?, next_page_token))
    }

    /// Changes the fields `changes` names.
    pub(crate) async fn update_product(&self, id: &ProductId, changes: ProductChanges) -> ServiceResult<ProductView> {
        let existing = store::find_product(&self.db, id.as_str())
            .await?
            .ok_or_else(|| not_found(id))?;
        let mut active = existing.into_active_model();
        if let Some(category) = changes.category {
            active.category = Set(category);
        }
        if let Some(parts) = &changes.title_parts {
            active.title = Set(parts.compose());
            active.title_parts_json = Set(title_parts_json(parts));
        }
        if let Some(media) = &changes.media {
            active.media_json = Set(media_json(media));
        }
        if let Some(detail) = changes.detail {
            active.detail = Set(detail);
        }
        if let Some(role) = changes.role {
            active.role = Set(role_column(role));
        }
        active.updated_at = Set(now());
        let (paths, new_tags) = (changes.paths, changes.tags);
        idempotency::transaction(&self.db, |txn| {
            let (active, id, paths, new_tags) = (active.clone(), id.clone(), paths.clone(), new_tags.clone());
            Box::pin(async move {
                store::update_product(txn, active).await?;
                if let Some(tags) = &new_tags {
                    store::replace_tags(txn, id.as_str(), tags).await?;
                }
                events::product_updated(id.as_str(), paths)
                    .publish(txn, id.as_str())
                    .await?;
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        self.product(id).await
    }

    /// Adds a variant to a product.
    pub(crate) async fn create_sku(&self, product: &ProductId, sku: NewSku) -> ServiceResult<SkuView> {
        store::find_product(&self.db, product.as_str())
            .await?
            .ok_or_else(|| not_found(product))?;
        let model = sku_model(&sku, product, now());
        idempotency::transaction(&self.db, |txn| {
            let (model, product) = (model.clone(), product.clone());
            Box::pin(async move {
                store::insert_sku(txn, model).await?;
                events::product_updated(product.as_str(), vec!["skus".into()])
                    .publish(txn, product.as_str())
                    .await?;
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        store::sku_views(&self.db, std::slice::from_ref(&model.code))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ServiceError::not_found("sku", sku.code.resource_name()))
    }

    /// The SKUs `codes` name, in that order; NOT_FOUND for the first that does not exist.
    pub(crate) async fn skus(&self, codes: &[SkuCode]) -> ServiceResult<Vec<Arc<SkuView>>> {
        let raw: Vec<String> = codes.iter().map(|c| c.as_str().to_owned()).collect();
        let found = self.sku_views(&raw).await?;
        codes
            .iter()
            .map(|code| {
                found
                    .get(code.as_str())
                    .cloned()
                    .ok_or_else(|| ServiceError::not_found("sku", code.resource_name()))
            })
            .collect()
    }

    /// The views of the SKUs among `codes` that exist, by code: from the SKU cache
    /// where it has them, the rest read (and cached).
    pub(crate) async fn sku_views(&self, codes: &[String]) -> ServiceResult<HashMap<String, Arc<SkuView>>> {
        let (mut found, missing) = self.skus.get_many(codes);
        if !missing.is_empty() {
            let ticket = self.skus.ticket();
            for view in store::sku_views(&self.db, &missing).await? {
                let view = Arc::new(view);
                self.skus.put(ticket, view.clone());
                found.insert(view.sku.code.clone(), view);
            }
        }
        Ok(found)
    }
}
