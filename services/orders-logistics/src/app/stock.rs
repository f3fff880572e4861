//! Stock that follows an order's state change into catalog.
//!
//! A cancellation and a received return each write their stock work
//! (`order_stock_work`) in the transaction that changes the order, and the work is
//! done right after the commit. What does not get done then - catalog unavailable,
//! the answer lost, the process killed in between - stays pending, and the sweeper
//! (and the start of the next process) does it until catalog has it. Each catalog
//! call is idempotent (a release by order id, a return by its request id), so work
//! done twice counts once.
//!
//! A cancellation of an unpaid order (by the customer, or the sweeper at the end of
//! the payment window) also releases the coupon the order redeemed, so the code can
//! be used again; a paid order's coupon stays used, also after a cancellation or a
//! return.
//!
//! A cancellation gives back whatever catalog holds for the order, as catalog says
//! it is now: a reservation is released; stock already shipped out - a paid order,
//! or a payment that committed the reservation and then lost the race to this
//! cancellation - is returned in full. So a payment and a cancellation racing on one
//! order cannot lose its units whichever of them wins.

use retail_kit::convert::now;
use tonic::{Code, Status};

use super::App;
use crate::downstream::{Held, Units};
use crate::store::{self, stock_work, work_state};

/// How many pending pieces of work one sweep takes on.
const SWEEP_BATCH: u64 = 200;

impl App {
    /// Does stock work `id` now, right after the commit that wrote it; what fails is
    /// left to the sweeper.
    pub(crate) async fn follow_up(&self, id: &str) {
        match store::find_work(&self.db, id).await {
            Ok(Some(work)) if work.state == work_state::PENDING => {
                self.do_work(&work).await;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(work = id, error = %err, "could not read stock work; the sweeper will do it"),
        }
    }

    /// Does all pending stock work; returns how much got done. Runs at start and in
    /// the sweeper.
    pub async fn finish_stock_work(&self) -> retail_kit::error::ServiceResult<u64> {
        let pending = store::pending_work(&self.db, SWEEP_BATCH).await?;
        let mut done = 0;
        for work in &pending {
            if self.do_work(work).await {
                done += 1;
            }
        }
        Ok(done)
    }

    /// True when the work is done.
    async fn do_work(&self, work: &stock_work::Model) -> bool {
        let outcome = match work.kind.as_str() {
            "cancel" => self.cancelled(&work.order_id).await,
            "return" => self.put_back(&work.order_id, &work.return_id).await,
            other => Err(Status::internal(format!("unknown stock work kind {other}"))),
        };
        let (state, error) = match outcome {
            Ok(()) => (work_state::DONE, String::new()),
            // Catalog refuses it for good: retrying cannot help, someone must look.
            Err(status) if refused(&status) => {
                tracing::error!(
                    work = %work.id,
                    order_id = %work.order_id,
                    code = ?status.code(),
                    error = %status.message(),
                    "catalog refused the stock of an order's state change; its stock needs a manual correction"
                );
                (work_state::FAILED, status.message().to_owned())
            }
            Err(status) => {
                tracing::warn!(
                    work = %work.id,
                    order_id = %work.order_id,
                    code = ?status.code(),
                    error = %status.message(),
                    "stock of an order's state change is not in catalog yet; will retry"
                );
                (work_state::PENDING, status.message().to_owned())
            }
        };
        if let Err(err) = store::end_work(&self.db, &work.id, state, &error, now()).await {
            tracing::warn!(work = %work.id, error = %err, "could not record stock work; it will be done again");
            return false;
        }
        state == work_state::DONE
    }

    /// Gives back what a cancelled order holds: its stock, and the coupon it
    /// redeemed if it was never paid (a paid order keeps its coupon used).
    async fn cancelled(&self, order_id: &str) -> Result<(), Status> {
        self.give_back(order_id).await?;
        let order = store::find_order(&self.db, order_id).await.map_err(Status::from)?;
        if let Some(order) = order
            && !order.coupon_code.is_empty()
            && order.paid_at.is_none()
        {
            self.downstream.release_coupon(order_id).await?;
        }
        Ok(())
    }

    /// Gives back whatever catalog holds for a cancelled order.
    async fn give_back(&self, order_id: &str) -> Result<(), Status> {
        // A payment may commit the reservation between the read and the release:
        // the release then fails and the next read sees the stock shipped out.
        for _ in 0..3 {
            match self.downstream.held(order_id).await? {
                Held::Nothing => return Ok(()),
                Held::Reserved => match self.downstream.release(order_id).await {
                    Ok(()) => return Ok(()),
                    Err(status) if status.code() == Code::FailedPrecondition => continue,
                    Err(status) => return Err(status),
                },
                Held::Shipped => {
                    let lines: Vec<Units> = store::lines_of(&self.db, order_id)
                        .await
                        .map_err(Status::from)?
                        .into_iter()
                        .map(|l| (l.sku_code, l.quantity))
                        .collect();
                    return self
                        .downstream
                        .return_stock(order_id, &lines, false, &format!("cancel-{order_id}"))
                        .await;
                }
            }
        }
        Err(Status::aborted("the reservation kept changing; will retry"))
    }

    /// Puts a received return's goods back: sellable, or unsellable when damaged.
    async fn put_back(&self, order_id: &str, return_id: &str) -> Result<(), Status> {
        let ret = store::find_return(&self.db, order_id, return_id)
            .await
            .map_err(Status::from)?
            .ok_or_else(|| Status::not_found(format!("orders/{order_id}/returns/{return_id}")))?;
        let (damaged, sellable): (Vec<_>, Vec<_>) = ret.lines.into_iter().partition(|l| l.damaged);
        for (lines, is_damaged, suffix) in [(sellable, false, "sellable"), (damaged, true, "damaged")] {
            let units: Vec<Units> = lines.into_iter().map(|l| (l.sku_code, l.quantity)).collect();
            if !units.is_empty() {
                self.downstream
                    .return_stock(order_id, &units, is_damaged, &format!("{return_id}-{suffix}"))
                    .await?;
            }
        }
        Ok(())
    }
}

/// Catalog's answers that retrying will not change.
fn refused(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound | Code::AlreadyExists | Code::OutOfRange
    )
}
