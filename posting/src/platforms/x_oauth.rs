//! Signing in to X: OAuth 2.0 Authorization Code with PKCE and
//! `offline.access` (the `oauth2` crate over our own HTTP client), and
//! keeping the tokens fresh.
//!
//! X rotates refresh tokens: each refresh returns a new refresh token and
//! the old one stops working. So a refresh is done by one caller at a time
//! per account, across replicas (a lease on the account's row), and the new
//! access and refresh tokens are stored together in one sealed value, in
//! the same statement that ends the lease. A process that dies between
//! X's answer and that statement loses the new refresh token: the account
//! then asks to be authorised again (it cannot post twice or wrongly,
//! only stop).

use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde_json::{json, Value};

use crate::model::{now_ms, Account, AccountStatus};
use crate::secrets::Sealer;
use crate::store::{Store, StoreError};

/// Refresh a token this long before it expires.
const EARLY_MS: i64 = 120_000;
/// How long a refresh may hold the account's lease beyond the HTTP
/// client's whole timeout (so a slow token call never outlives its lease).
const LEASE_MARGIN_MS: i64 = 30_000;

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// X's OAuth 2.0 endpoints for our app.
#[derive(Debug, Clone)]
pub struct XOAuth {
    client: Client,
    http: reqwest::Client,
    scopes: Vec<String>,
    /// A refresh's hold on the account: the client's timeout and a margin.
    lease_ms: i64,
}

/// Tokens as stored (the account's credentials).
#[derive(Clone, PartialEq)]
pub struct Tokens {
    /// Bearer token for API calls.
    pub access_token: String,
    /// For the next refresh (X rotates it each time).
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix ms).
    pub expires_at_ms: Option<i64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("expires_at_ms", &self.expires_at_ms).finish_non_exhaustive()
    }
}

impl Tokens {
    /// As the account's credentials JSON.
    pub fn to_json(&self) -> Value {
        json!({"access_token": self.access_token, "refresh_token": self.refresh_token, "expires_at_ms": self.expires_at_ms})
    }
}

/// A refresh that did not give new tokens.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// X refused the refresh token (used, revoked, expired): a person must
    /// authorise the account again.
    #[error("X refused the refresh token: {0}")]
    Rejected(String),
    /// No answer, or one we could not read: try again later.
    #[error("token refresh failed: {0}")]
    Failed(String),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the flow failed.
fn said<E: std::error::Error>(e: RequestTokenError<E, oauth2::basic::BasicErrorResponse>) -> RefreshError {
    match e {
        RequestTokenError::ServerResponse(r) => RefreshError::Rejected(r.to_string()),
        other => RefreshError::Failed(other.to_string()),
    }
}

/// The oauth2 crate's requests, sent by our reqwest client (a boxed
/// future of its own, so the handlers that await it stay `Send`).
struct Http(reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for Http {
    type Error = reqwest::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, reqwest::Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        let http = self.0.clone();
        Box::pin(async move { send(&http, request).await })
    }
}

async fn send(http: &reqwest::Client, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let (parts, body) = req.into_parts();
    let res = http.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
    let mut out = oauth2::http::Response::builder().status(res.status());
    for (k, v) in res.headers() {
        out = out.header(k, v);
    }
    let bytes = res.bytes().await?.to_vec();
    // Status and headers came from a valid response: the builder accepts them.
    Ok(out.body(bytes).unwrap_or_default())
}

impl XOAuth {
    /// The flow of `config`'s app (a confidential client when it has a
    /// secret), its token endpoint on `config.api_base`, answering at
    /// `redirect`, calling X with `http`.
    pub fn new(http: reqwest::Client, config: &super::x::XConfig, redirect: &str) -> Result<Self, String> {
        let token_url = format!("{}/2/oauth2/token", config.api_base.trim_end_matches('/'));
        let mut client = BasicClient::new(ClientId::new(config.client_id.clone()))
            .set_auth_uri(AuthUrl::new(config.authorize_url.clone()).map_err(|e| format!("[posting.x] authorize_url: {e}"))?)
            .set_token_uri(TokenUrl::new(token_url).map_err(|e| format!("token URL: {e}"))?)
            .set_redirect_uri(RedirectUrl::new(redirect.to_owned()).map_err(|e| format!("[posting.x] redirect_url: {e}"))?);
        if let Some(s) = &config.client_secret {
            client = client.set_client_secret(ClientSecret::new(s.0.clone()));
        }
        let lease_ms = (config.timeout_secs * 1000) as i64 + LEASE_MARGIN_MS;
        Ok(Self { client, http, scopes: config.scopes.clone(), lease_ms })
    }

    /// Where to send the person, the state that comes back, and the PKCE
    /// verifier to keep until then.
    pub fn authorize(&self) -> (String, String, String) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(self.scopes.iter().map(|s| Scope::new(s.clone())))
            .set_pkce_challenge(challenge)
            .url();
        (url.to_string(), state.secret().clone(), verifier.secret().clone())
    }

    fn tokens(t: &oauth2::basic::BasicTokenResponse, previous_refresh: Option<&str>) -> Tokens {
        Tokens {
            access_token: t.access_token().secret().clone(),
            refresh_token: t.refresh_token().map(|r| r.secret().clone()).or(previous_refresh.map(str::to_owned)),
            expires_at_ms: t.expires_in().map(|d| now_ms() + d.as_millis() as i64),
        }
    }

    /// Trade the code X sent back for tokens.
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<Tokens, RefreshError> {
        let http = Http(self.http.clone());
        let t = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&http)
            .await
            .map_err(said)?;
        Ok(Self::tokens(&t, None))
    }

    async fn refresh(&self, refresh_token: &str) -> Result<Tokens, RefreshError> {
        let http = Http(self.http.clone());
        let t = self.client.exchange_refresh_token(&RefreshToken::new(refresh_token.to_owned())).request_async(&http).await.map_err(said)?;
        Ok(Self::tokens(&t, Some(refresh_token)))
    }

    /// Store rotated tokens. X has already retired `used`: the new refresh
    /// token must not be lost to a concurrent write (`accounts reseal`
    /// seals the old one again) or a passing database error, so the write
    /// is tried again over anything that still holds `used`.
    async fn keep(&self, store: &Store, sealer: &Sealer, account: &Account, mut version: i64, used: &str, t: &Tokens) -> Result<(), RefreshError> {
        let sealed = sealer.seal(&account.id, t.to_json().to_string().as_bytes()).map_err(|e| RefreshError::Failed(e.to_string()))?;
        for _ in 0..5 {
            match store.replace_credentials(&account.id, version, &sealed).await {
                Ok(true) => {
                    tracing::info!(account = %account.id, "X tokens refreshed");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(account = %account.id, error = %e, "storing refreshed tokens; trying again"),
            }
            let Ok(Some((stored, v))) = store.sealed_credentials(&account.id).await else { continue };
            let holds_used = sealer
                .open(&account.id, &stored)
                .ok()
                .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
                .is_some_and(|c| c.get("refresh_token").and_then(Value::as_str) == Some(used));
            if !holds_used {
                // Someone stored newer tokens (a new authorisation): theirs stand.
                return Ok(());
            }
            version = v;
        }
        Err(RefreshError::Failed("the refreshed tokens could not be stored".into()))
    }

    /// The account's credentials, refreshed first when its access token
    /// is about to expire. One refresh at a time per account: a caller
    /// that finds another refreshing waits for its result.
    pub async fn fresh(&self, store: &Store, sealer: &Sealer, account: &Account) -> Result<Value, RefreshError> {
        let open = |sealed: &str| -> Result<Value, RefreshError> {
            let plain = sealer.open(&account.id, sealed).map_err(|e| RefreshError::Failed(e.to_string()))?;
            serde_json::from_slice(&plain).map_err(|e| RefreshError::Failed(format!("stored credentials are not JSON: {e}")))
        };
        let expiring = |c: &Value| {
            c.get("refresh_token").and_then(Value::as_str).is_some()
                && c.get("expires_at_ms").and_then(Value::as_i64).is_some_and(|at| at < now_ms() + EARLY_MS)
        };
        for _ in 0..=(self.lease_ms / 100) {
            let Some((sealed, version)) = store.sealed_credentials(&account.id).await? else {
                return Err(RefreshError::Failed("the account has no credentials".into()));
            };
            let creds = open(&sealed)?;
            if !expiring(&creds) {
                return Ok(creds);
            }
            if !store.take_refresh_lease(&account.id, now_ms() + self.lease_ms).await? {
                // Another dispatcher is refreshing: its tokens will be stored shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let refresh_token = creds.get("refresh_token").and_then(Value::as_str).unwrap_or_default();
            return match self.refresh(refresh_token).await {
                Ok(t) => self.keep(store, sealer, account, version, refresh_token, &t).await.map(|()| t.to_json()),
                Err(e) => {
                    store.release_refresh_lease(&account.id).await?;
                    if let RefreshError::Rejected(why) = &e {
                        // Unless another stored new tokens meanwhile, the
                        // account must be authorised again.
                        let now = store.sealed_credentials(&account.id).await?.map(|(_, v)| v);
                        if now == Some(version) {
                            store.set_account_status(&account.id, AccountStatus::NeedsReauth, Some(why)).await?;
                        }
                    }
                    Err(e)
                }
            };
        }
        Err(RefreshError::Failed("another refresh of this account did not finish".into()))
    }
}
