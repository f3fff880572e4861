//! Channel-partner's tables and queries.

pub mod entities;
pub mod migration;

use retail_kit::error::ServiceResult;
use retail_kit::paging::Page;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

pub use entities::{partner, status_change};

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub async fn partner(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<partner::Model>> {
    Ok(partner::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// Which partners a list returns.
#[derive(Debug, Clone, Default)]
pub struct PartnerFilter {
    pub state: Option<String>,
    /// A partner principal's own organisation only.
    pub only: Option<String>,
}

pub async fn list_partners(
    conn: &impl ConnectionTrait,
    filter: &PartnerFilter,
    page: &Page,
) -> ServiceResult<Vec<partner::Model>> {
    let mut q = partner::Entity::find().order_by_asc(partner::Column::Id);
    if let Some(state) = &filter.state {
        q = q.filter(partner::Column::State.eq(state.as_str()));
    }
    if let Some(only) = &filter.only {
        q = q.filter(partner::Column::Id.eq(only.as_str()));
    }
    if let Some(after) = &page.after {
        q = q.filter(partner::Column::Id.gt(after.as_str()));
    }
    Ok(q.limit(page.fetch_limit()).all(conn).await?)
}
