//! Media go up before the post that carries them: nothing is public
//! until the post is sent, so a failed upload is simply tried again later.

use super::{Dispatcher, Value};
use crate::model::{now_ms, Account, State};
use crate::platforms::{Ctx, Platform, PublishError};
use crate::store::{StoreError, Tenant, Transition};

impl Dispatcher {
    /// The platform's ids of a part's media, uploading those it lacks.
    pub(super) async fn media_ids(&self, platform: &dyn Platform, ctx: Ctx<'_>, account: &Account, media: &[String]) -> Result<Vec<String>, PublishError> {
        let store_err = |e: StoreError| PublishError::NotSent(format!("media: {e}"));
        let mut ids = Vec::with_capacity(media.len());
        for id in media {
            if let Some(remote) = self.store.uploaded(id, &account.id).await.map_err(store_err)? {
                ids.push(remote);
                continue;
            }
            let Some(m) = self.store.media(&Tenant::All, id).await.map_err(store_err)? else {
                return Err(PublishError::Rejected(format!("media `{id}` no longer exists")));
            };
            let bytes = self.store.media_bytes(id).await.map_err(store_err)?;
            let (remote, expires) = platform.upload(ctx, &m.content_type, &bytes).await?;
            self.store.save_upload(id, &account.id, &remote, expires).await.map_err(store_err)?;
            ids.push(remote);
        }
        Ok(ids)
    }

    /// A claimed post whose media did not upload: nothing was sent, so it
    /// waits and tries again (the attempt counts), unless the platform
    /// refused the media for good.
    pub(super) async fn upload_failed(&self, id: &str, attempts: i64, e: PublishError) -> Result<(), StoreError> {
        let why = format!("media upload: {e}");
        if matches!(e, PublishError::Rejected(_) | PublishError::Suspended(_)) || attempts >= self.config.max_attempts {
            return self.end(id, State::Failed, why).await;
        }
        let due = match e {
            PublishError::RateLimited { until_ms, .. } => until_ms,
            _ => now_ms() + self.retry_delay_ms(attempts),
        };
        let t = Transition {
            from: &[State::Claimed],
            to: State::Scheduled,
            lease: Some(&self.owner),
            expired_by: None,
            set: vec![
                ("due_ms", Value::Int(Some(due))),
                ("attempts", Value::Int(Some(attempts))),
                ("last_error", Value::Text(Some(why.clone()))),
                ("lease_owner", Value::Text(None)),
                ("lease_until_ms", Value::Int(None)),
            ],
            detail: Some(why),
        };
        self.store.transition(id, t).await?;
        Ok(())
    }
}
