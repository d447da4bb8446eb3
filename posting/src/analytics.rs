//! Analytics: posts, the platform's counts and our link clicks, grouped by
//! campaign, post, link, variant or product over a date range, with
//! click-through and engagement rates and an estimated revenue; and the
//! A/B comparison of a campaign's variants.
//!
//! - CTR = link clicks / impressions; engagement rate = (likes + reposts +
//!   replies + quotes) / impressions (0 where nothing was shown).
//! - Estimated revenue = clicks x `[posting] conversion_rate` x the
//!   product's commission rate x its price, for clicks on links to a
//!   product (each product in its own currency; rows sum them as numbers).
//! - The A/B test is a two-proportion z-test on click-through (clicks out
//!   of impressions) between the two variants with the best CTR, two-sided,
//!   significant below p = 0.05.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::model::Post;
use crate::platforms::Metrics;
use crate::store::{Click, Product};

/// What rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Per campaign.
    Campaign,
    /// Per post.
    Post,
    /// Per short link.
    Link,
    /// Per A/B variant (of a campaign).
    Variant,
    /// Per product.
    Product,
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "campaign" => Self::Campaign,
            "post" => Self::Post,
            "link" => Self::Link,
            "variant" => Self::Variant,
            "product" => Self::Product,
            other => return Err(format!("`{other}`: one of campaign, post, link, variant, product")),
        })
    }
}

/// One group's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Row {
    /// The group (a campaign, post or product id, a link code, or
    /// `campaign/variant`; `none` for what has none).
    pub key: String,
    /// Posts that went out.
    pub posts: i64,
    /// Times shown.
    pub impressions: i64,
    /// Likes.
    pub likes: i64,
    /// Reposts.
    pub reposts: i64,
    /// Replies.
    pub replies: i64,
    /// Human clicks on our links.
    pub link_clicks: i64,
    /// `link_clicks / impressions`.
    pub ctr: f64,
    /// `(likes + reposts + replies + quotes) / impressions`.
    pub engagement_rate: f64,
    /// Estimated commission earned.
    pub revenue_estimate: f64,
    #[serde(skip)]
    quotes: i64,
}

fn ratio(a: i64, b: i64) -> f64 {
    if b > 0 {
        a as f64 / b as f64
    } else {
        0.0
    }
}

/// The group keys of a post (a post is in one group; by link and product
/// it counts in every group its links point to).
fn post_keys(by: GroupBy, p: &Post, links_of_post: &HashMap<String, Vec<(String, Option<String>)>>) -> Vec<String> {
    let none = || "none".to_owned();
    match by {
        GroupBy::Campaign => vec![p.campaign_id.clone().unwrap_or_else(none)],
        GroupBy::Post => vec![p.id.clone()],
        GroupBy::Variant => vec![format!("{}/{}", p.campaign_id.as_deref().unwrap_or("none"), p.variant.as_deref().unwrap_or("none"))],
        GroupBy::Link => links_of_post.get(&p.id).map(|l| l.iter().map(|(code, _)| code.clone()).collect()).unwrap_or_default(),
        GroupBy::Product => links_of_post.get(&p.id).map(|l| l.iter().filter_map(|(_, prod)| prod.clone()).collect()).unwrap_or_default(),
    }
}

fn click_key(by: GroupBy, c: &Click) -> String {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
    match by {
        GroupBy::Campaign => or_none(&c.campaign_id),
        GroupBy::Post => or_none(&c.post_id),
        GroupBy::Variant => format!("{}/{}", c.campaign_id.as_deref().unwrap_or("none"), c.variant.as_deref().unwrap_or("none")),
        GroupBy::Link => c.code.clone(),
        GroupBy::Product => or_none(&c.product_id),
    }
}

/// Group `posts` (with their latest `metrics`) and `clicks`.
pub fn report(
    by: GroupBy,
    posts: &[Post],
    metrics: &HashMap<String, Metrics>,
    clicks: &[Click],
    links_of_post: &HashMap<String, Vec<(String, Option<String>)>>,
    products: &HashMap<String, Product>,
    conversion_rate: f64,
) -> Vec<Row> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for p in posts {
        let m = metrics.get(&p.id).copied().unwrap_or_default();
        for key in post_keys(by, p, links_of_post) {
            let r = rows.entry(key.clone()).or_insert_with(|| Row { key, ..Row::default() });
            r.posts += 1;
            r.impressions += m.impressions;
            r.likes += m.likes;
            r.reposts += m.reposts;
            r.replies += m.replies;
            r.quotes += m.quotes;
        }
    }
    for c in clicks {
        let key = click_key(by, c);
        let r = rows.entry(key.clone()).or_insert_with(|| Row { key, ..Row::default() });
        r.link_clicks += 1;
        if let Some(prod) = c.product_id.as_ref().and_then(|id| products.get(id)) {
            r.revenue_estimate += conversion_rate * prod.commission_rate.unwrap_or(0.0) * prod.price.unwrap_or(0.0);
        }
    }
    rows.into_values()
        .map(|mut r| {
            r.ctr = ratio(r.link_clicks, r.impressions);
            r.engagement_rate = ratio(r.likes + r.reposts + r.replies + r.quotes, r.impressions);
            r.revenue_estimate = (r.revenue_estimate * 100.0).round() / 100.0;
            r
        })
        .collect()
}

/// The two-proportion z-test of `a` and `b` successes out of `na` and
/// `nb` trials: (z, two-sided p). None when either has no trials or the
/// pooled rate is 0 or 1 (no variance to test).
pub fn two_proportion_z(a: i64, na: i64, b: i64, nb: i64) -> Option<(f64, f64)> {
    if na <= 0 || nb <= 0 {
        return None;
    }
    let (pa, pb) = (a as f64 / na as f64, b as f64 / nb as f64);
    let pooled = (a + b) as f64 / (na + nb) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / na as f64 + 1.0 / nb as f64)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return None;
    }
    let z = (pa - pb) / se;
    Some((z, 2.0 * (1.0 - normal_cdf(z.abs()))))
}

/// The standard normal CDF (Abramowitz and Stegun 7.1.26 for erf, error
/// below 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let t = x / std::f64::consts::SQRT_2;
    let s = t.abs();
    let k = 1.0 / (1.0 + 0.327_591_1 * s);
    let poly = k * (0.254_829_592 + k * (-0.284_496_736 + k * (1.421_413_741 + k * (-1.453_152_027 + k * 1.061_405_429))));
    let erf = 1.0 - poly * (-s * s).exp();
    0.5 * (1.0 + if t < 0.0 { -erf } else { erf })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_test_matches_the_textbook() {
        // 200/1000 against 150/1000: pooled 0.175, z = 0.05 / sqrt(0.175
        // x 0.825 x 0.002) = 2.9424, p = erfc(z / sqrt 2) = 0.003256.
        let (z, p) = two_proportion_z(200, 1000, 150, 1000).expect("test");
        assert!((z - 2.9424).abs() < 0.0001, "{z}");
        assert!((p - 0.003256).abs() < 0.00001, "{p}");
        let (_, p) = two_proportion_z(10, 1000, 9, 1000).expect("test");
        assert!(p > 0.5, "{p}");
        assert!(two_proportion_z(0, 0, 1, 10).is_none());
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
    }
}
