//! The token signing keys as the API shows them: rotation on demand and the public
//! keys that verify tokens.

use retail_kit::error::ServiceResult;
use serde_json::json;

use super::{App, Caller, now};
use crate::store::{self, Audit, signing_key};

impl App {
    /// Starts signing with a new key; the old ones keep verifying for a while.
    pub(crate) async fn rotate_signing_key(&self, caller: &Caller) -> ServiceResult<signing_key::Model> {
        let key = self.keys.rotate().await?;
        self.verifier.refresh().await;
        self.audit(Audit {
            action: "signing_key.rotated",
            actor: &caller.subject,
            target: &key.id,
            detail: json!({}),
        })
        .await?;
        Ok(key)
    }

    /// The keys that may still verify a valid token, newest first.
    pub(crate) async fn public_keys(&self) -> ServiceResult<Vec<signing_key::Model>> {
        store::verifying_keys(&self.db, now()).await
    }

    /// Picks up rotations by other replicas and rotates a key grown too old, every
    /// `every`, until the task is aborted.
    pub(crate) fn spawn_key_maintenance(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let keys = self.keys.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(err) = keys.maintain().await {
                    tracing::warn!(error = %err, "signing key maintenance failed");
                }
            }
        })
    }
}
