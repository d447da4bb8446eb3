//! OAuth 1.0a user-context signing, X's alternative to OAuth 2.0 bearer
//! tokens: an `Authorization: OAuth ...` header whose HMAC-SHA1 signature
//! covers the method, the URL and every query (or form) parameter, under
//! the app's consumer secret and the user's token secret.
//!
//! Credentials: `{"consumer_key", "consumer_secret", "access_token",
//! "access_token_secret"}` (the account's own, sealed like any).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::distributions::{Alphanumeric, DistString};
use sha1::Sha1;

/// The four keys of a user-context request.
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    /// The app's key.
    pub consumer_key: &'a str,
    /// The app's secret.
    pub consumer_secret: &'a str,
    /// The user's token.
    pub token: &'a str,
    /// The user's token secret.
    pub token_secret: &'a str,
}

impl std::fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("consumer_key", &self.consumer_key).finish_non_exhaustive()
    }
}

/// RFC 3986 percent-encoding: everything but `A-Z a-z 0-9 - . _ ~`.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The header for `method` on `url` (without its query) with `params`
/// (the query's, or a form body's), at `timestamp` with `nonce`.
pub fn header_at(keys: &Keys<'_>, method: &str, url: &str, params: &[(&str, &str)], nonce: &str, timestamp: i64) -> String {
    let ts = timestamp.to_string();
    let oauth = [
        ("oauth_consumer_key", keys.consumer_key),
        ("oauth_nonce", nonce),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", ts.as_str()),
        ("oauth_token", keys.token),
        ("oauth_version", "1.0"),
    ];
    let mut all: Vec<(String, String)> = oauth.iter().chain(params).map(|(k, v)| (enc(k), enc(v))).collect();
    all.sort();
    let joined = all.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let base = format!("{}&{}&{}", method.to_ascii_uppercase(), enc(url), enc(&joined));
    let key = format!("{}&{}", enc(keys.consumer_secret), enc(keys.token_secret));
    let signature = match <Hmac<Sha1> as Mac>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(base.as_bytes());
            B64.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of every length.
        Err(_) => String::new(),
    };
    let mut fields: Vec<String> = oauth.iter().map(|(k, v)| format!("{k}=\"{}\"", enc(v))).collect();
    fields.push(format!("oauth_signature=\"{}\"", enc(&signature)));
    fields.sort();
    format!("OAuth {}", fields.join(", "))
}

/// The header for a request now, with a fresh nonce.
pub fn header(keys: &Keys<'_>, method: &str, url: &str, params: &[(&str, &str)]) -> String {
    let nonce = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    header_at(keys, method, url, params, &nonce, crate::model::now_ms() / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// X's documented example ("Creating a signature"): the signature it
    /// publishes for these keys, nonce, time and parameters.
    #[test]
    fn the_documented_signature() {
        let keys = Keys {
            consumer_key: "xvz1evFS4wEEPTGEFPHBog",
            consumer_secret: "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
            token: "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
            token_secret: "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
        };
        let params = [("include_entities", "true"), ("status", "Hello Ladies + Gentlemen, a signed OAuth request!")];
        let h = header_at(&keys, "post", "https://api.twitter.com/1.1/statuses/update.json", &params, "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg", 1318622958);
        assert!(h.contains(&format!("oauth_signature=\"{}\"", enc("hCtSmYh+iHYCEqBWrE7C7hYmtUk="))), "{h}");
        assert!(h.starts_with("OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\""), "{h}");
    }
}
