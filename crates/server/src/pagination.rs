//! Cursor pagination: `?limit=&cursor=` → `{"items", "nextCursor"}`. The cursor is opaque to
//! clients (base64url of the last key); a `limit` above the maximum is clamped, not refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use unbox_domain::api::Page;
use utoipa::IntoParams;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page: default 100, at most 1,000 (larger values are clamped).
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT))
    }

    /// The key the previous page ended at, parsed as `K`.
    pub fn after<K: std::str::FromStr>(&self) -> Result<Option<K>, ApiError> {
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        let invalid =
            || ApiError::bad_request("InvalidCursor", "the cursor is not one this list gave out");
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        text.parse().map(Some).map_err(|_| invalid())
    }
}

pub fn encode_cursor(key: &impl ToString) -> String {
    URL_SAFE_NO_PAD.encode(key.to_string())
}

/// Builds a page from `limit + 1` fetched rows: the extra row only tells that more exist.
pub fn page<R, T, K: ToString>(
    mut rows: Vec<R>,
    limit: i64,
    key: impl Fn(&R) -> K,
    item: impl FnMut(R) -> T,
) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| encode_cursor(&key(last)))
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(item).collect(),
        next_cursor,
    }
}
