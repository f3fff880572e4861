//! The webhook message sender: each outbox message is POSTed as JSON to one
//! configured URL (an SMS or e-mail provider's bridge), signed with the kit's
//! webhook scheme ([`retail_kit::webhook`]), with the message id as `Webhook-Id`
//! on every try. A 2xx answer delivers the message; anything else is a failed try.

use std::time::Duration;

use serde::Serialize;

use super::engagement::{MessageSender, OutgoingMessage, RetryPolicy};

/// Posts messages to `url`. `Debug` shows neither the URL's secret nor messages.
pub struct WebhookSender {
    client: retail_kit::webhook::Client,
    url: String,
    secret: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSender")
            .field("client", &self.client)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// The JSON body of one message.
#[derive(Serialize)]
struct Payload<'a> {
    id: &'a str,
    /// `campaigns/{campaign}`.
    campaign: String,
    /// `members/{member}`.
    member: String,
    channel: &'a str,
    recipient: Option<&'a str>,
    body: &'a str,
}

impl WebhookSender {
    pub fn new(
        url: String,
        secret: String,
        timeout: Duration,
        allow_private_addresses: bool,
        retry: RetryPolicy,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: retail_kit::webhook::Client::new(timeout, allow_private_addresses)?,
            url,
            secret,
            retry,
        })
    }
}

#[async_trait::async_trait]
impl MessageSender for WebhookSender {
    async fn send(&self, message: &OutgoingMessage) -> anyhow::Result<()> {
        if matches!(message.channel.as_str(), "sms" | "email") && message.recipient.is_none() {
            anyhow::bail!("the member has no consented address for the channel");
        }
        let body = serde_json::to_string(&Payload {
            id: &message.id,
            campaign: format!("campaigns/{}", message.campaign_id),
            member: format!("members/{}", message.member_id),
            channel: &message.channel,
            recipient: message.recipient.as_deref(),
            body: &message.body,
        })?;
        // The outcome names a status or a connection failure, never the URL, the
        // recipient or the body.
        match self.client.send(&self.url, &message.id, &self.secret, &body).await {
            outcome if outcome.accepted() => Ok(()),
            retail_kit::webhook::Outcome::Status(status) => anyhow::bail!("the receiver answered {status}"),
            retail_kit::webhook::Outcome::Failed(why) => anyhow::bail!("{why}"),
        }
    }

    fn retry(&self) -> RetryPolicy {
        self.retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_neither_the_secret_nor_the_recipient_nor_the_body() {
        let sender = WebhookSender::new(
            "https://bridge.example.com/hook".into(),
            "whsec_very_secret".into(),
            Duration::from_secs(1),
            false,
            RetryPolicy::default(),
        );
        let Ok(sender) = sender else {
            panic!("the client builds");
        };
        let shown = format!("{sender:?}");
        assert!(!shown.contains("whsec_very_secret") && !shown.contains("bridge.example.com"));
        let message = OutgoingMessage {
            id: "m-1".into(),
            campaign_id: "c-1".into(),
            member_id: "x-1".into(),
            channel: "sms".into(),
            recipient: Some("+4915100000001".into()),
            body: "Private text".into(),
            attempt: 1,
        };
        let shown = format!("{message:?}");
        assert!(shown.contains("m-1"));
        assert!(!shown.contains("4915100000001") && !shown.contains("Private text"));
    }
}
