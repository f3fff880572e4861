//! The gRPC adapter of channel-partner: authorise (the scope; a partner principal
//! sees only its own organisation and what belongs to it, anything else is
//! NOT_FOUND), parse the request into the app's input ([`parse`]), call the use
//! case, convert the answer ([`convert`]).

mod convert;
mod parse;

use std::sync::Arc;

use retail_kit::auth::Principal;
use retail_kit::convert::now;
use retail_kit::error::ServiceResult;
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::paging::Page;
use retail_proto::partner as pb;
use retail_proto::partner::partner_service_server::PartnerService;
use tonic::{Request, Response, Status};

use crate::app::{App, Caller};
use convert::partner_to_pb;

pub(crate) const READ: &str = "partners.read";
pub(crate) const WRITE: &str = "partners.write";

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

/// The caller, if it holds `scope`.
fn caller<T>(request: &Request<T>, scope: &str) -> ServiceResult<Caller> {
    let p = Principal::of(request)?;
    p.require_scope(scope)?;
    Ok(Caller::from(p))
}

#[derive(Debug, Clone)]
pub(crate) struct PartnerApi {
    app: Arc<App>,
}

impl PartnerApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl PartnerService for PartnerApi {
    #[tracing::instrument(skip_all)]
    async fn create_partner(&self, request: Request<pb::CreatePartnerRequest>) -> Rpc<pb::Partner> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.CreatePartner", &who.owner, &req.request_id, &req)?;
        let new = parse::create_partner(&req)?;
        ok(self
            .app
            .create_partner(&who, new, key.as_ref(), now(), partner_to_pb)
            .await?)
    }

    async fn get_partner(&self, request: Request<pb::GetPartnerRequest>) -> Rpc<pb::Partner> {
        let who = caller(&request, READ)?;
        let id = parse::partner_id("name", &request.get_ref().name)?;
        ok(partner_to_pb(&self.app.partner(&who, &id).await?))
    }

    async fn list_partners(&self, request: Request<pb::ListPartnersRequest>) -> Rpc<pb::ListPartnersResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let filter = parse::list_partners(&req)?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("{filter:?}"))?;
        let (rows, next_page_token) = self.app.list_partners(&who, filter, &page).await?;
        ok(pb::ListPartnersResponse {
            partners: rows.iter().map(partner_to_pb).collect(),
            next_page_token,
        })
    }
}
