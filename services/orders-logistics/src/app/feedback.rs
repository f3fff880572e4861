//! What customers say about an order, and its timeline.

use retail_kit::convert::now;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency;
use sea_orm::ActiveModelTrait;

use super::{App, Caller, state_of};
use crate::domain::ids::OrderId;
use crate::domain::lifecycle::{self as rules, Action};
use crate::events;
use crate::store::{self, order_event, rating};

/// A rating, parsed: satisfaction 1-5 and the NPS question 0-10.
#[derive(Debug, Clone)]
pub struct Rating {
    pub satisfaction: i32,
    pub recommend: i32,
    pub comment: String,
}

impl App {
    /// Rates a delivered order once; a second rating is FAILED_PRECONDITION.
    pub async fn rate(&self, caller: &Caller, id: &OrderId, input: Rating) -> ServiceResult<rating::Model> {
        let order = self.visible(caller, id).await?;
        rules::next(state_of(&order)?, Action::Rate).map_err(ServiceError::FailedPrecondition)?;
        let rating = rating::Model {
            order_id: id.as_str().to_owned(),
            satisfaction: input.satisfaction,
            recommend: input.recommend,
            comment: input.comment,
            created_at: now(),
        };
        let event = events::rated(&order, &rating);
        idempotency::transaction(&self.db, |txn| {
            let (rating, state, event) = (rating.clone(), order.state.clone(), event.clone());
            Box::pin(async move {
                store::insert_rating(txn, rating.clone()).await?;
                let detail = format!("satisfaction {}, recommend {}", rating.satisfaction, rating.recommend);
                store::timeline_row(&rating.order_id, "rated", "", &detail, &state, rating.created_at)
                    .insert(txn)
                    .await?;
                event.outbox_row(&rating.order_id).insert(txn).await?;
                Ok(())
            })
        })
        .await?;
        self.log.committed();
        Ok(rating)
    }

    /// Every state change and tracking event of an order, oldest first.
    pub async fn timeline(&self, caller: &Caller, id: &OrderId) -> ServiceResult<Vec<order_event::Model>> {
        self.visible(caller, id).await?;
        store::events_of(&self.db, id.as_str()).await
    }
}
