//! The audit trail of security events, newest first.

use retail_kit::error::ServiceResult;
use retail_kit::paging::Page;

use super::App;
use crate::store::{self, audit_event};

impl App {
    /// A page of audit events, of one action if `action` names one. Returns the page
    /// and the next page's token.
    pub(crate) async fn list_audit_events(
        &self,
        action: Option<&str>,
        page: &Page,
    ) -> ServiceResult<(Vec<audit_event::Model>, String)> {
        let rows = store::list_audit_events(&self.db, page, action).await?;
        Ok(page.finish(rows, |e| e.id.clone()))
    }
}
