//! The subcommands of `unbox`, one module per area.
//!
//! A command returns the exit code it wants (`0`; `2` for an invalid rule; `6` for an import
//! with failed rows) or a [`CliError`](crate::error::CliError), which `run` prints as one line
//! on stderr and whose code becomes the exit code.

pub mod auth;
pub mod deployments;
pub mod device;
pub mod devices;
pub mod groups;
pub mod hwid;
pub mod imports;
pub mod partner;
pub mod profiles;
pub mod rules;

use std::path::Path;

use clap::Args;
use serde_json::Value;

use crate::Ctx;
use crate::client::Api;
use crate::error::CliError;

/// The largest page the API serves.
const MAX_PAGE: usize = 1000;
/// Items listed when neither `--limit` nor `--all` is given.
const DEFAULT_LIMIT: usize = 100;

/// How much of a list to fetch.
#[derive(Debug, Clone, Args)]
pub struct Paging {
    /// List at most N items (default 100); pages are followed until there are N.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    pub limit: Option<usize>,

    /// List every item, following `nextCursor` to the last page.
    #[arg(long)]
    pub all: bool,

    /// Start after this cursor (the `nextCursor` a previous listing printed).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
}

/// Fetches pages of a list until the limit or the end. Returns the first page's object (so
/// that fields beside `items`, such as `summary` or `processingStatus`, are kept) with `items`
/// holding every item fetched and `nextCursor` where a further listing would start.
pub async fn collect(
    api: &mut Api,
    path: &str,
    query: &[(&str, String)],
    paging: &Paging,
) -> Result<Value, CliError> {
    let want = if paging.all {
        usize::MAX
    } else {
        paging.limit.unwrap_or(DEFAULT_LIMIT)
    };
    if want == 0 {
        return Err(CliError::usage("--limit must be at least 1"));
    }
    let mut items: Vec<Value> = Vec::new();
    let mut cursor = paging.cursor.clone();
    let mut first: Option<Value> = None;
    loop {
        let size = (want - items.len()).min(MAX_PAGE);
        let mut q: Vec<(&str, String)> = query.to_vec();
        q.push(("limit", size.to_string()));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page = api.get(path, &q).await?;
        let page_items = page
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| CliError::failure(format!("the answer of {path} is not a list")))?;
        items.extend(page_items);
        cursor = page
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if first.is_none() {
            first = Some(page);
        }
        if cursor.is_none() || items.len() >= want {
            break;
        }
    }
    let mut result = first.unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(map) = &mut result {
        map.insert("items".into(), Value::Array(items));
        map.insert(
            "nextCursor".into(),
            cursor.map_or(Value::Null, Value::String),
        );
    }
    Ok(result)
}

/// The items of a collected list.
pub fn items(list: &Value) -> &[Value] {
    list.get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// After a table: says on stderr how to see more, when there is more.
pub fn note_more(ctx: &Ctx<'_>, list: &Value) {
    if let Some(cursor) = list.get("nextCursor").and_then(Value::as_str) {
        ctx.io.note(&format!(
            "there are more: list them with --all, or continue with --cursor {cursor}"
        ));
    }
}

/// Reads a file, or standard input for `-`.
pub fn read_input(ctx: &mut Ctx<'_>, path: &Path) -> Result<Vec<u8>, CliError> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        ctx.io
            .input()
            .read_to_end(&mut bytes)
            .map_err(|e| CliError::failure(format!("cannot read standard input: {e}")))?;
        Ok(bytes)
    } else {
        std::fs::read(path)
            .map_err(|e| CliError::failure(format!("cannot read {}: {e}", path.display())))
    }
}

/// Reads a JSON file (or `-`).
pub fn read_json(ctx: &mut Ctx<'_>, path: &Path) -> Result<Value, CliError> {
    let bytes = read_input(ctx, path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CliError::failure(format!("{} is not JSON: {e}", path.display())))
}

/// A JSON object with only the fields that were given (a merge patch or a create body).
#[derive(Debug, Default)]
pub struct Body(serde_json::Map<String, Value>);

impl Body {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` when the option was given.
    pub fn opt(&mut self, name: &str, value: Option<impl Into<Value>>) -> &mut Self {
        if let Some(value) = value {
            self.0.insert(name.to_owned(), value.into());
        }
        self
    }

    pub fn set(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn value(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

/// Prints `message` for people, or `value` for scripts.
pub fn done(ctx: &mut Ctx<'_>, message: &str, value: &Value) -> crate::error::CmdResult {
    if ctx.json_output() {
        crate::output::json(ctx.io.out(), value)?;
    } else {
        writeln!(ctx.io.out(), "{message}")?;
    }
    Ok(crate::error::exit::OK)
}
