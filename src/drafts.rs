//! The posting service's drafts come from the gateway's generate-then-rank
//! (`/v1/posts/generate` without the HTTP): the caller's key, its limits
//! and budget, the router and a usage record, like any API call.

use futures_util::future::BoxFuture;
use gateway::posts::generate::{generate, GenerateRequest};
use posting::drafts::{Draft, DraftError, DraftRequest, Drafter};

/// Drafts by the gateway `App` of this process.
pub struct GatewayDrafter(pub gateway::App);

impl Drafter for GatewayDrafter {
    fn drafts(&self, req: DraftRequest) -> BoxFuture<'_, Result<Vec<Draft>, DraftError>> {
        Box::pin(async move {
            let gen = GenerateRequest {
                topic: req.topic.clone().or_else(|| req.product.is_none().then(|| "our news".to_owned())),
                product: req.product,
                platform: Some(req.platform),
                max_length: req.max_length,
                link: req.link,
                disclosure: req.disclosure,
                banned_terms: req.banned_terms,
                recent_posts: req.recent_posts,
                n: Some(req.n),
                seed: req.seed,
                ..GenerateRequest::default()
            };
            let answer = generate(&self.0, &req.caller, &gen).await.map_err(|e| DraftError { status: e.status.as_u16(), message: e.message })?;
            Ok(answer["candidates"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| Some(Draft { text: c["text"].as_str()?.to_owned(), score: c["score"].as_f64().unwrap_or(0.0) }))
                .collect())
        })
    }
}
