//! `/api/v1/products`: the affiliate catalogue, imported from a product
//! feed as CSV (`text/csv`, a header row; `features` and `tags` separated
//! by `|`) or JSON (an array of products, or `{"products": [...]}`),
//! upserted by SKU. Every row is checked first: one bad row and nothing is
//! imported, and the answer lists each bad row by line and field.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use platform::auth::Caller;
use serde_json::{json, Value};

use super::openapi::{ErrorBody, Imported, ProductList};
use super::{Access, ApiError};
use crate::store::Product;
use crate::Posting;

/// A row that cannot be imported.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RowError {
    /// Line of the file (CSV: the header is line 1), or item number (JSON, from 1).
    pub line: usize,
    /// The field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::trim).map(str::to_owned)).filter(|s| !s.is_empty()).collect(),
        Some(Value::String(s)) => s.split('|').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// One row (a JSON object, or a CSV record as one) checked into a
/// product; what is wrong with it goes to `errors`.
fn row(line: usize, v: &Value, errors: &mut Vec<RowError>) -> Product {
    let mut bad = |field: &str, message: &str| errors.push(RowError { line, field: field.into(), message: message.into() });
    let text = |k: &str| v.get(k).and_then(|x| x.as_str().map(str::trim).map(str::to_owned).or_else(|| x.as_f64().map(|n| n.to_string())));
    let number = |k: &str| -> Result<Option<f64>, ()> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| ()),
            Some(x) => x.as_f64().map(Some).ok_or(()),
        }
    };
    let sku = text("sku").unwrap_or_default();
    if sku.is_empty() || sku.len() > 100 {
        bad("sku", "a SKU of 1 to 100 characters");
    }
    let name = text("name").unwrap_or_default();
    if name.is_empty() {
        bad("name", "a name");
    }
    let url = text("url").unwrap_or_default();
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 11 {
        bad("url", "an http(s) URL");
    }
    let price = number("price").unwrap_or_else(|()| {
        bad("price", "a number");
        None
    });
    if price.is_some_and(|p| !(p.is_finite() && p >= 0.0)) {
        bad("price", "0 or more");
    }
    let currency = text("currency").filter(|c| !c.is_empty()).map(|c| c.to_uppercase());
    if currency.as_ref().is_some_and(|c| c.len() != 3 || !c.chars().all(|ch| ch.is_ascii_alphabetic())) {
        bad("currency", "a three-letter ISO 4217 code (USD, EUR)");
    }
    let commission_rate = number("commission_rate").unwrap_or_else(|()| {
        bad("commission_rate", "a number");
        None
    });
    if commission_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        bad("commission_rate", "a fraction of the price between 0 and 1 (0.08 for 8%)");
    }
    Product { id: String::new(), sku, name, url, price, currency, commission_rate, features: list(v.get("features")), tags: list(v.get("tags")) }
}

/// The rows of a feed, each with its line number.
fn rows(ctype: &str, bytes: &Bytes) -> Result<Vec<(usize, Value)>, ApiError> {
    if ctype.starts_with("text/csv") {
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(bytes.as_ref());
        let headers = reader.headers().map_err(|e| ApiError::invalid("body", format!("CSV header: {e}")))?.clone();
        let mut out = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| ApiError::invalid("body", format!("CSV: {e}")))?;
            let line = record.position().map_or(0, |p| p.line() as usize);
            let obj: serde_json::Map<String, Value> = headers.iter().zip(record.iter()).map(|(k, v)| (k.to_owned(), Value::String(v.to_owned()))).collect();
            out.push((line, Value::Object(obj)));
        }
        return Ok(out);
    }
    if !ctype.starts_with("application/json") {
        return Err(ApiError::invalid("content-type", "text/csv or application/json"));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::invalid("body", format!("not JSON: {e}")))?;
    let items = match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("products") {
            Some(Value::Array(a)) => a,
            _ => return Err(ApiError::invalid("products", "an array of products")),
        },
        _ => return Err(ApiError::invalid("body", "an array of products, or {\"products\": [...]}")),
    };
    Ok(items.into_iter().enumerate().map(|(i, v)| (i + 1, v)).collect())
}

#[utoipa::path(post, operation_id = "products_import", path = "/api/v1/products/import", tag = "products",
    request_body(content((String = "text/csv"), (Vec<Product> = "application/json")), description = "A CSV feed with a header row (features and tags separated by |), or a JSON array of products"),
    responses((status = 200, description = "Imported", body = Imported), (status = 400, description = "Bad rows, each by line and field; nothing imported", body = ErrorBody),
        (status = 401, description = "No key", body = ErrorBody), (status = 403, description = "The key may not write here", body = ErrorBody)))]
pub(super) async fn import(State(p): State<Posting>, caller: Caller, headers: HeaderMap, bytes: Bytes) -> Result<Response, ApiError> {
    let access = Access::load(&p, &caller).await?;
    access.write()?;
    if access.campaign.is_some() {
        return Err(ApiError::forbidden("a key limited to one campaign cannot import products"));
    }
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let rows = rows(&ctype, &bytes)?;
    if rows.is_empty() {
        return Err(ApiError::invalid("body", "no products in the feed"));
    }
    let mut errors = Vec::new();
    let mut products = Vec::new();
    let mut seen = HashSet::new();
    for (line, v) in &rows {
        if !v.is_object() {
            errors.push(RowError { line: *line, field: "row".into(), message: "a product object".into() });
            continue;
        }
        let product = row(*line, v, &mut errors);
        if !product.sku.is_empty() && !seen.insert(product.sku.clone()) {
            errors.push(RowError { line: *line, field: "sku".into(), message: format!("`{}` appears twice in the feed", product.sku) });
        }
        products.push(product);
    }
    if !errors.is_empty() {
        let first = &errors[0];
        let body = json!({"error": {
            "code": "invalid_rows",
            "message": format!("{} bad row(s); nothing was imported (first: line {}, {}: {})", errors.len(), first.line, first.field, first.message),
            "field": first.field,
            "rows": errors,
        }});
        return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    let (created, updated) = p.store.upsert_products(&access.owner, &products).await?;
    Ok(Json(Imported { imported: products.len() as i64, created: created as i64, updated: updated as i64 }).into_response())
}

#[utoipa::path(get, operation_id = "products_list_products", path = "/api/v1/products", tag = "products", responses((status = 200, description = "By SKU", body = ProductList), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody)))]
pub(super) async fn list_products(State(p): State<Posting>, caller: Caller) -> Result<Json<ProductList>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    let mut products = p.store.products(&access.tenant).await?;
    if let Some(c) = &access.campaign {
        // A campaign's key sees the campaign's products.
        let wanted = p.store.campaign(&access.tenant, c).await?.map(|c| c.products).unwrap_or_default();
        products.retain(|pr| wanted.contains(&pr.id));
    }
    Ok(Json(ProductList { data: products }))
}
