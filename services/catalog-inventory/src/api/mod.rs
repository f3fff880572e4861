//! The gRPC adapter of catalog-inventory: four services ([`catalog`], [`pricing`],
//! [`coupons`], [`inventory`]) that authorise (the scope; partners see no staff identity, audit
//! trail or reservation), parse the request into the app's input (collecting every
//! field violation), call the use case and convert the answer ([`convert`]).

mod catalog;
mod convert;
mod coupons;
mod inventory;
mod parse;
mod pricing;

use retail_kit::auth::Principal;
use retail_kit::error::ServiceResult;
use tonic::{Request, Response, Status};

pub(crate) use catalog::CatalogApi;
pub(crate) use coupons::CouponApi;
pub(crate) use inventory::InventoryApi;
pub(crate) use pricing::PricingApi;

/// Reads every part of the catalog: products, prices, stock, reservations.
const READ: &str = "catalog.read";

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

/// The principal of `request`, if it holds `scope`.
fn authorised<'r, T>(request: &'r Request<T>, scope: &str) -> ServiceResult<&'r Principal> {
    let principal = Principal::of(request)?;
    principal.require_scope(scope)?;
    Ok(principal)
}
