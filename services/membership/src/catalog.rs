//! Catalog as coupon campaigns see it: `IssueCouponCodes` gives each contacted
//! member its code of the campaign's single-use coupon.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use retail_kit::auth::{ClientInterceptor, ServiceTokenSource};
use retail_proto::catalog as catalog_pb;
use retail_proto::catalog::coupon_service_client::CouponServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::app::CouponIssuer;

/// How long one `IssueCouponCodes` call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Catalog's `CouponService`, called with membership's service token.
#[derive(Debug, Clone)]
pub(crate) struct CatalogCoupons {
    client: CouponServiceClient<InterceptedService<Channel, ClientInterceptor>>,
}

impl CatalogCoupons {
    pub(crate) fn new(url: &str, tokens: Option<Arc<ServiceTokenSource>>) -> anyhow::Result<Self> {
        let channel = retail_kit::resilience::lazy_channel("catalog.url", url)?;
        Ok(Self {
            client: CouponServiceClient::with_interceptor(channel, ClientInterceptor::new(tokens)),
        })
    }
}

#[async_trait::async_trait]
impl CouponIssuer for CatalogCoupons {
    async fn issue(&self, coupon_id: &str, member_ids: &[String]) -> anyhow::Result<HashMap<String, String>> {
        let mut request = tonic::Request::new(catalog_pb::IssueCouponCodesRequest {
            coupon: format!("coupons/{coupon_id}"),
            members: member_ids.iter().map(|id| format!("members/{id}")).collect(),
        });
        request.set_timeout(CALL_TIMEOUT);
        let response = self
            .client
            .clone()
            .issue_coupon_codes(request)
            .await
            .map_err(|status| anyhow::anyhow!("IssueCouponCodes: {} {}", status.code(), status.message()))?
            .into_inner();
        response
            .codes
            .into_iter()
            .map(|issued| {
                let member = issued
                    .member
                    .strip_prefix("members/")
                    .context("catalog answered a code for an unnamed member")?;
                Ok((member.to_owned(), issued.code))
            })
            .collect()
    }
}
