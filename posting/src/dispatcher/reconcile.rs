//! Posts whose outcome is unknown: looked for on the account's timeline
//! (found: posted, a thread goes on), sent again under their idempotency
//! key where the platform has one, else held for a person.

use super::{CredentialsError, Dispatcher, Value};
use crate::model::{now_ms, State};
use crate::platforms::{same_text, Ctx};
use crate::store::{Claimed, StoreError, Tenant, Transition};

impl Dispatcher {
    /// Look for an unknown post's next part among the account's recent posts.
    pub(super) async fn reconcile(&self, c: &Claimed) -> Result<(), StoreError> {
        let post = &c.post;
        let Some(account) = self.store.account(&Tenant::All, &post.account_id).await? else { return Ok(()) };
        let Some(part) = post.parts.get(post.external_ids.len()) else { return Ok(()) };
        let platform = match self.platform(&account) {
            Ok(p) => p,
            Err(why) => return self.hold_unknown(post.id.as_str(), i64::MAX, why).await,
        };
        let credentials = match self.credentials(&account).await {
            Ok(c) => c,
            Err(CredentialsError::Later(why)) => return self.look_again(&post.id, format!("the account's credentials: {why}")).await,
            Err(CredentialsError::Never(why)) => return self.hold_unknown(&post.id, i64::MAX, format!("the account's credentials: {why}")).await,
        };
        let ctx = Ctx { account: &account, credentials: credentials.as_ref() };
        let remote_id = match &account.remote_id {
            Some(r) => r.clone(),
            None => match platform.me(ctx).await {
                Ok(me) => {
                    self.store.set_remote_id(&account.id, &me.id).await?;
                    me.id
                }
                Err(e) => return self.look_again(post.id.as_str(), format!("cannot read the account: {e}")).await,
            },
        };
        // A platform that de-duplicates takes the post again under the
        // same key while it remembers it: nothing to look for.
        let started = post.first_try_ms.or(c.attempt_started_ms).unwrap_or(post.updated_ms);
        if platform.idempotency_window_ms().is_some_and(|w| now_ms() - started < w) {
            let t = Transition {
                from: &[State::Unknown],
                to: State::Scheduled,
                lease: None,
                expired_by: None,
                set: vec![("due_ms", Value::Int(Some(now_ms()))), ("reconcile_checks", Value::Int(Some(0)))],
                detail: Some("sent again under its idempotency key".into()),
            };
            self.store.transition(&post.id, t).await?;
            self.wake();
            return Ok(());
        }
        // A little before the attempt began: clocks differ.
        let since = started - 5 * 60_000;
        let found = match platform.recent(ctx, &remote_id, since).await {
            Ok(recent) => recent.into_iter().find(|r| same_text(&part.text, &r.text)),
            Err(e) => return self.look_again(&post.id, format!("cannot read the account's posts: {e}")).await,
        };
        let checks = self.store.reconcile_checks(&post.id).await? + 1;
        match found {
            Some(remote) => {
                let mut ids = post.external_ids.clone();
                ids.push(remote.id.clone());
                let done = ids.len() == post.parts.len();
                let now = now_ms();
                let t = Transition {
                    from: &[State::Unknown],
                    to: if done { State::Posted } else { State::Scheduled },
                    lease: None,
                    expired_by: None,
                    set: vec![
                        ("external_ids", Value::Text(Some(serde_json::to_string(&ids).unwrap_or_default()))),
                        ("posted_ms", Value::Int(done.then_some(remote.created_ms.unwrap_or(now)))),
                        ("due_ms", Value::Int((!done).then_some(now))),
                        ("last_error", Value::Text(None)),
                        ("reconcile_checks", Value::Int(Some(0))),
                        ("first_try_ms", Value::Int(None)),
                    ],
                    detail: Some(format!("found on the platform as {}", remote.id)),
                };
                self.store.transition(&post.id, t).await?;
                if !done {
                    self.wake();
                }
                Ok(())
            }
            None if checks >= self.config.reconcile_checks => self.hold_unknown(&post.id, checks, format!(
                "not found among the account's posts after {checks} looks: it was probably not sent; \
                 POST /api/v1/posts/{}/retry to send it, or /dismiss to drop it",
                post.id
            ))
            .await,
            None => {
                let set = vec![("reconcile_checks", Value::Int(Some(checks))), ("due_ms", Value::Int(Some(self.next_look_ms())))];
                self.stay_unknown(&post.id, set, format!("not found yet (look {checks} of {})", self.config.reconcile_checks)).await
            }
        }
    }

    /// Stop looking for an unknown post: a person decides.
    pub(super) async fn hold_unknown(&self, id: &str, checks: i64, why: String) -> Result<(), StoreError> {
        let set = vec![
            ("reconcile_checks", Value::Int(Some(checks.min(i64::MAX / 2)))),
            ("due_ms", Value::Int(None)),
            ("last_error", Value::Text(Some(why.clone()))),
        ];
        self.stay_unknown(id, set, why).await
    }

    /// Look again later without counting a look (the platform did not answer).
    pub(super) async fn look_again(&self, id: &str, why: String) -> Result<(), StoreError> {
        self.stay_unknown(id, vec![("due_ms", Value::Int(Some(self.next_look_ms())))], why).await
    }

    /// An unknown post stays unknown, with `set` and the reason in its events.
    async fn stay_unknown(&self, id: &str, set: Vec<(&'static str, Value)>, detail: String) -> Result<(), StoreError> {
        let t = Transition { from: &[State::Unknown], to: State::Unknown, lease: None, expired_by: None, set, detail: Some(detail) };
        self.store.transition(id, t).await?;
        Ok(())
    }
}
