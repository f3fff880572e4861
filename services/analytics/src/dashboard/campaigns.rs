//! Campaign results for the dashboard: membership owns campaigns and their
//! reports, so the campaigns page reads them from membership's
//! `EngagementService` on behalf of the signed-in user, with the user's own access
//! token (membership checks its scope `membership.engagement.read`).

use std::collections::HashMap;
use std::time::Duration;

use retail_proto::membership::engagement_service_client::EngagementServiceClient;
use retail_proto::membership::{self as mpb};
use tonic::transport::Channel;

/// How long one call to membership may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A campaign and its results so far, as the page shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CampaignResult {
    /// `campaigns/{id}`.
    pub name: String,
    pub display_name: String,
    /// "draft", "scheduled", "running", "finished", "cancelled".
    pub state: String,
    /// The window, seconds since the epoch.
    pub start: i64,
    pub end: i64,
    /// The segment's display name (or its resource name when it cannot be read)
    /// and the channel.
    pub audience: String,
    pub control_share_bp: i32,
    pub report: Report,
}

/// A campaign's report (membership's `CampaignReport`), amounts in minor units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub reached: i64,
    pub responded: i64,
    pub response_rate_bp: i64,
    pub control: i64,
    pub control_responded: i64,
    pub control_response_rate_bp: i64,
    pub revenue: i64,
    pub control_revenue: i64,
    pub incremental_revenue: i64,
    pub cost: i64,
    /// Unset without cost.
    pub roi_bp: Option<i64>,
    pub currency: String,
}

/// A page of campaigns, newest first.
#[derive(Debug, Clone, Default)]
pub struct CampaignPage {
    pub campaigns: Vec<CampaignResult>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// Why campaigns could not be read.
#[derive(Debug)]
pub enum CampaignsError {
    /// Membership refused the user's token (scope, expiry).
    Denied,
    /// The page token is not one membership handed out.
    BadPageToken,
    /// Membership could not be reached or failed.
    Unavailable(String),
}

/// Membership's campaigns, read with the user's access token.
#[async_trait::async_trait]
pub trait Campaigns: Send + Sync + std::fmt::Debug {
    async fn list(&self, access_token: &str, page_size: i32, page_token: &str) -> Result<CampaignPage, CampaignsError>;
}

/// [`Campaigns`] over membership's gRPC API.
#[derive(Debug, Clone)]
pub struct MembershipCampaigns {
    client: EngagementServiceClient<Channel>,
}

impl MembershipCampaigns {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: EngagementServiceClient::new(channel),
        }
    }
}

fn request<T>(token: &str, message: T) -> Result<tonic::Request<T>, CampaignsError> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().map_err(|_| CampaignsError::Denied)?;
    request.metadata_mut().insert("authorization", value);
    request.set_timeout(TIMEOUT);
    Ok(request)
}

fn error_of(status: tonic::Status) -> CampaignsError {
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => CampaignsError::Denied,
        tonic::Code::InvalidArgument => CampaignsError::BadPageToken,
        code => CampaignsError::Unavailable(code.to_string()),
    }
}

fn state_name(state: i32) -> &'static str {
    match mpb::CampaignState::try_from(state).unwrap_or_default() {
        mpb::CampaignState::Draft => "draft",
        mpb::CampaignState::Scheduled => "scheduled",
        mpb::CampaignState::Running => "running",
        mpb::CampaignState::Finished => "finished",
        mpb::CampaignState::Cancelled => "cancelled",
        mpb::CampaignState::Unspecified => "",
    }
}

fn channel_name(channel: i32) -> &'static str {
    match mpb::ConsentChannel::try_from(channel).unwrap_or_default() {
        mpb::ConsentChannel::Sms => "sms",
        mpb::ConsentChannel::Email => "email",
        mpb::ConsentChannel::AppPush => "app push",
        mpb::ConsentChannel::Social => "social",
        mpb::ConsentChannel::Unspecified => "",
    }
}

fn seconds(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| t.seconds)
}

fn report_of(r: mpb::CampaignReport) -> Report {
    let amount = |m: &Option<retail_proto::common::Money>| m.as_ref().map_or(0, |m| m.amount_minor);
    Report {
        reached: r.reached,
        responded: r.responded,
        response_rate_bp: r.response_rate_bp,
        control: r.control,
        control_responded: r.control_responded,
        control_response_rate_bp: r.control_response_rate_bp,
        revenue: amount(&r.revenue),
        control_revenue: amount(&r.control_revenue),
        incremental_revenue: amount(&r.incremental_revenue),
        cost: amount(&r.cost),
        roi_bp: r.roi_bp,
        currency: r.revenue.map(|m| m.currency_code).unwrap_or_default(),
    }
}

#[async_trait::async_trait]
impl Campaigns for MembershipCampaigns {
    async fn list(&self, access_token: &str, page_size: i32, page_token: &str) -> Result<CampaignPage, CampaignsError> {
        let mut client = self.client.clone();
        let listed = client
            .list_campaigns(request(
                access_token,
                mpb::ListCampaignsRequest {
                    page_size,
                    page_token: page_token.to_owned(),
                    state: mpb::CampaignState::Unspecified as i32,
                },
            )?)
            .await
            .map_err(error_of)?
            .into_inner();
        // The reports and the segments' names, each segment read once.
        let reports = futures::future::join_all(listed.campaigns.iter().map(|c| {
            let mut client = self.client.clone();
            let name = c.name.clone();
            async move {
                let r = request(access_token, mpb::GetCampaignReportRequest { name })?;
                client.get_campaign_report(r).await.map_err(error_of)
            }
        }))
        .await;
        let mut segment_names: Vec<String> = listed.campaigns.iter().map(|c| c.segment.clone()).collect();
        segment_names.sort();
        segment_names.dedup();
        let segments = futures::future::join_all(segment_names.iter().map(|name| {
            let mut client = self.client.clone();
            let name = name.clone();
            async move {
                let r = request(access_token, mpb::GetSegmentRequest { name: name.clone() }).ok()?;
                let segment = client.get_segment(r).await.ok()?.into_inner();
                Some((name, segment.display_name))
            }
        }))
        .await;
        let segments: HashMap<String, String> = segments.into_iter().flatten().collect();
        let mut campaigns = Vec::with_capacity(listed.campaigns.len());
        for (c, report) in listed.campaigns.into_iter().zip(reports) {
            let report = report?.into_inner();
            let segment = segments.get(&c.segment).cloned().unwrap_or_else(|| c.segment.clone());
            campaigns.push(CampaignResult {
                state: state_name(c.state).to_owned(),
                start: seconds(c.start_time.as_ref()),
                end: seconds(c.end_time.as_ref()),
                audience: format!("{segment} ({})", channel_name(c.channel)),
                control_share_bp: c.control_share_bp,
                report: report_of(report),
                name: c.name,
                display_name: c.display_name,
            });
        }
        Ok(CampaignPage {
            campaigns,
            next_page_token: listed.next_page_token,
        })
    }
}
