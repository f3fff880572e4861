//! `partner_id` on users and API keys refers to a partner organisation of the
//! programme, which channel-partner keeps. When `partners.url` is set, identity
//! asks channel-partner (with a token it signs for itself, scope `partner.read`):
//! - creating a partner user or an API key for a partner that does not exist, or
//!   is terminated, is FAILED_PRECONDITION;
//! - a partner principal gets tokens (API-key exchange, login, refresh) only while
//!   its partner is active; otherwise PERMISSION_DENIED, so suspending or
//!   terminating a partner shuts its keys and users out within one access token's
//!   lifetime.
//!
//! If channel-partner cannot be asked, these answer UNAVAILABLE: partner access
//! fails closed; staff and services are never asked about.

use std::time::Duration;

use retail_kit::auth::PrincipalKind;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_proto::partner::partner_service_client::PartnerServiceClient;
use retail_proto::partner::{GetPartnerRequest, PartnerState};
use tonic::transport::Channel;

use super::App;
use super::tokens::Grant;
use crate::settings::PartnersSettings;

/// channel-partner, if identity checks `partner_id`s.
#[derive(Debug, Clone)]
pub(crate) struct PartnerDirectory {
    channel: Option<Channel>,
    timeout: Duration,
}

impl PartnerDirectory {
    pub(crate) fn new(settings: &PartnersSettings) -> anyhow::Result<Self> {
        let channel = match &settings.url {
            Some(url) => Some(retail_kit::resilience::lazy_channel("partners.url", url)?),
            None => None,
        };
        Ok(Self {
            channel,
            timeout: Duration::from_millis(settings.timeout_ms),
        })
    }
}

/// What channel-partner says of a partner.
enum Standing {
    /// Not checked (`partners.url` unset).
    Unchecked,
    Unknown,
    Known(PartnerState),
}

impl App {
    async fn standing(&self, partner_id: &str) -> ServiceResult<Standing> {
        let Some(channel) = &self.partners.channel else {
            return Ok(Standing::Unchecked);
        };
        let token = self
            .issue(Grant {
                subject: "identity",
                kind: PrincipalKind::Service,
                roles: &[],
                scopes: vec!["partner.read".into()],
                partner_id: None,
                session_id: None,
                stores: Vec::new(),
            })?
            .access_token;
        let mut request = tonic::Request::new(GetPartnerRequest {
            name: format!("partners/{partner_id}"),
        });
        request.set_timeout(self.partners.timeout);
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| ServiceError::internal(anyhow::anyhow!("the own token is not a header value")))?;
        request.metadata_mut().insert("authorization", bearer);
        match PartnerServiceClient::new(channel.clone()).get_partner(request).await {
            Ok(partner) => Ok(Standing::Known(
                PartnerState::try_from(partner.into_inner().state).unwrap_or(PartnerState::Unspecified),
            )),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(Standing::Unknown),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "channel-partner could not be asked about a partner");
                Err(ServiceError::Unavailable(
                    "the partner programme cannot be reached; try again".into(),
                ))
            }
        }
    }

    /// A user or key may be created for `partner_id` (on `field`): the partner
    /// exists and is not terminated.
    pub(super) async fn require_partner(&self, field: &str, partner_id: &str) -> ServiceResult<()> {
        match self.standing(partner_id).await? {
            Standing::Unchecked => Ok(()),
            Standing::Known(state) if state != PartnerState::Terminated => Ok(()),
            Standing::Known(_) => Err(ServiceError::FailedPrecondition(format!(
                "{field}: partner {partner_id} is terminated"
            ))),
            Standing::Unknown => Err(ServiceError::FailedPrecondition(format!(
                "{field}: no partner {partner_id} in the partner programme"
            ))),
        }
    }

    /// Tokens go to a partner's principals only while it is active.
    pub(super) async fn require_active_partner(&self, partner_id: &str) -> ServiceResult<()> {
        match self.standing(partner_id).await? {
            Standing::Unchecked | Standing::Known(PartnerState::Active) => Ok(()),
            _ => Err(ServiceError::PermissionDenied(format!(
                "partner {partner_id} is not active in the partner programme"
            ))),
        }
    }
}
