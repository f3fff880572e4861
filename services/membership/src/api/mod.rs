//! The gRPC adapter: authorises (scopes), parses requests into the app's inputs
//! ([`parse`], [`mask`]), calls the app and converts its answers ([`convert`]).
//! [`members`] serves `MembershipService`, [`loyalty`] `LoyaltyService`,
//! [`engagement`] `EngagementService`.

mod convert;
mod engagement;
mod loyalty;
mod mask;
mod members;
mod parse;

use std::sync::Arc;

use tonic::{Response, Status};

use crate::app::App;

const READ: &str = "membership.members.read";
const WRITE: &str = "membership.members.write";
const POINTS_WRITE: &str = "membership.points.write";
/// Segments and campaigns: reading them, and creating, scheduling and cancelling.
const ENGAGEMENT_READ: &str = "membership.engagement.read";
const ENGAGEMENT_WRITE: &str = "membership.engagement.write";

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

#[derive(Debug, Clone)]
pub(crate) struct MembershipApi {
    app: Arc<App>,
}

impl MembershipApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LoyaltyApi {
    app: Arc<App>,
}

impl LoyaltyApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct EngagementApi {
    app: std::sync::Arc<App>,
}

impl EngagementApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}
