//! Products and their SKUs with the stock available to sell.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use retail_proto::catalog::catalog_service_client::CatalogServiceClient;
use retail_proto::catalog::{GetProductRequest, ListProductsRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Money, etag, i64_as_string, id_of, time, with_etag};
use crate::auth::Caller;
use crate::http::{AppState, Path, Query, check_id};
use crate::problem::Problem;

/// A variant of a product.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sku {
    /// `skus/{skuCode}`: what an order line names.
    pub name: String,
    pub sku_code: String,
    /// `products/{productId}`.
    pub product: String,
    /// Variant attributes, for example `{"color": "red"}`.
    pub attributes: BTreeMap<String, String>,
    /// Units available to sell across all warehouses.
    #[serde(serialize_with = "i64_as_string")]
    #[schema(value_type = String, example = "12")]
    pub sellable_quantity: i64,
    /// Channels the SKU is listed on, for example `SALES_CHANNEL_PARTNER`.
    pub listed_channels: Vec<String>,
    /// The list price per unit (single product reads; absent when not priced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_unit_price: Option<Money>,
    /// The caller's price per unit from its level's price list (single product
    /// reads; absent when not priced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_unit_price: Option<Money>,
}

/// A product.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// `products/{productId}`.
    pub name: String,
    pub product_id: String,
    pub category: String,
    pub title: String,
    /// Detail page content (Markdown).
    pub detail: String,
    pub tags: Vec<String>,
    pub skus: Vec<Sku>,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
}

impl From<retail_proto::catalog::Product> for Product {
    fn from(p: retail_proto::catalog::Product) -> Self {
        Self {
            product_id: id_of(&p.name, "products").to_owned(),
            name: p.name,
            category: p.category,
            title: p.title,
            detail: p.detail,
            tags: p.tags,
            skus: p
                .skus
                .into_iter()
                .map(|s| Sku {
                    listed_channels: s.listed_channels().map(|c| c.as_str_name().to_owned()).collect(),
                    name: s.name,
                    sku_code: s.sku_code,
                    product: s.product,
                    attributes: s.attributes,
                    sellable_quantity: s.sellable_quantity,
                    list_unit_price: None,
                    partner_unit_price: None,
                })
                .collect(),
            create_time: time(p.create_time),
            update_time: time(p.update_time),
        }
    }
}

/// A page of products.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductPage {
    pub products: Vec<Product>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// Filters and page of the product list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductQuery {
    /// At most this many; default 50, at most 500.
    #[param(minimum = 0, maximum = 500)]
    pub page_size: Option<i32>,
    /// `nextPageToken` of the previous page.
    #[param(max_length = 1024)]
    pub page_token: Option<String>,
    /// Only products in this category or below it, for example `footwear/running`.
    #[param(max_length = 200)]
    pub category: Option<String>,
    /// Only products with this tag.
    #[param(max_length = 200)]
    pub tag: Option<String>,
}

/// Lists products with their SKUs and available stock.
#[utoipa::path(get, path = "/v1/products", tag = "products", params(ProductQuery),
    responses(
        (status = 200, description = "A page of products", body = ProductPage),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_products(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ProductQuery>,
) -> Result<axum::Json<ProductPage>, Problem> {
    let (page_size, page_token) = super::Paging {
        page_size: query.page_size,
        page_token: query.page_token,
    }
    .parts()?;
    let mut client = CatalogServiceClient::new(state.catalog.clone());
    let request = state.request(
        &caller,
        ListProductsRequest {
            page_size,
            page_token,
            category: query.category.unwrap_or_default(),
            tag: query.tag.unwrap_or_default(),
            ..Default::default()
        },
    );
    let page = client
        .list_products(request)
        .await
        .map_err(|s| Problem::from_status(&s, ""))?
        .into_inner();
    Ok(axum::Json(ProductPage {
        products: page.products.into_iter().map(Product::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Gets a product with its SKUs and available stock.
#[utoipa::path(get, path = "/v1/products/{productId}", tag = "products",
    params(("productId" = String, Path, description = "The product's id (a UUID)",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses(
        (status = 200, description = "The product", body = Product,
            headers(("ETag" = String, description = "Version of the product"))),
        (status = "4XX", description = "A problem", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_product(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(product_id): Path<String>,
) -> Result<Response, Problem> {
    check_id("productId", &product_id)?;
    let mut client = CatalogServiceClient::new(state.catalog.clone());
    let request = state.request(
        &caller,
        GetProductRequest {
            name: format!("products/{product_id}"),
        },
    );
    let product = client.get_product(request).await?.into_inner();
    let tag = etag(product.update_time.as_ref());
    let mut body = Product::from(product);
    add_partner_prices(&state, &caller, &mut body.skus).await;
    Ok(with_etag(body, tag))
}

/// The caller's prices of `skus`: its level's price list, quoted by catalog. A
/// product without prices is still shown, without them.
async fn add_partner_prices(state: &AppState, caller: &Caller, skus: &mut [Sku]) {
    use retail_proto::catalog::pricing_service_client::PricingServiceClient;
    use retail_proto::catalog::{QuoteLine, QuotePricesRequest, SalesChannel};
    use retail_proto::partner::GetPartnerRequest;
    use retail_proto::partner::partner_service_client::PartnerServiceClient;
    if skus.is_empty() || skus.len() > 200 {
        return;
    }
    let mut partners = PartnerServiceClient::new(state.partner.clone());
    let request = state.request(
        caller,
        GetPartnerRequest {
            name: format!("partners/{}", caller.partner_id),
        },
    );
    let Ok(partner) = partners.get_partner(request).await else {
        return;
    };
    let mut pricing = PricingServiceClient::new(state.catalog.clone());
    let request = state.request(
        caller,
        QuotePricesRequest {
            channel: SalesChannel::Partner as i32,
            currency_code: state.currency.clone(),
            partner_level: partner.into_inner().level,
            lines: skus
                .iter()
                .map(|s| QuoteLine {
                    sku: s.name.clone(),
                    quantity: 1,
                })
                .collect(),
            ..Default::default()
        },
    );
    match pricing.quote_prices(request).await {
        Ok(quote) => {
            for (sku, line) in skus.iter_mut().zip(quote.into_inner().lines) {
                sku.list_unit_price = line.list_unit_price.map(Money::from);
                sku.partner_unit_price = line.unit_price.map(Money::from);
            }
        }
        Err(status) => tracing::debug!(code = ?status.code(), "no partner prices for the product"),
    }
}
