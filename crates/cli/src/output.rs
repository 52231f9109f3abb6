//! Printing results: JSON as the server sent it, or tables and field lists for people.

use std::io::Write;

use serde_json::Value;

use crate::error::CliError;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns and field lists, for people.
    #[default]
    Table,
    /// The API's JSON, pretty-printed, for scripts.
    Json,
}

/// Writes a value as pretty JSON and a newline.
pub fn json(out: &mut dyn Write, value: &Value) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A value as a table cell: strings as they are, times shortened, null empty.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => time(s).unwrap_or_else(|| s.clone()),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        Value::Object(_) => value.to_string(),
    }
}

/// The field at a JSON pointer (`/processingStatus/status`) as a cell.
pub fn field(value: &Value, pointer: &str) -> String {
    value.pointer(pointer).map(cell).unwrap_or_default()
}

/// An RFC 3339 time as `2025-11-21 23:55:01`, UTC.
fn time(text: &str) -> Option<String> {
    if text.len() < 20 || text.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(
        parsed
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
    )
}

/// Columns aligned on the widest cell; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn write(&self, out: &mut dyn Write) -> Result<(), CliError> {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let mut text = String::new();
            for (i, c) in cells.iter().enumerate().take(columns) {
                let c = c.replace(['\n', '\r', '\t'], " ");
                if i + 1 == columns {
                    text.push_str(&c);
                } else {
                    text.push_str(&c);
                    let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.trim_end().to_owned()
        };
        writeln!(out, "{}", line(&self.headers))?;
        for row in &self.rows {
            writeln!(out, "{}", line(row))?;
        }
        Ok(())
    }
}

/// `Label:  value` lines, labels aligned; empty values are left out.
pub fn fields(out: &mut dyn Write, pairs: &[(&str, String)]) -> Result<(), CliError> {
    let width = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    for (label, value) in pairs {
        if value.is_empty() {
            continue;
        }
        let pad = width - label.chars().count();
        writeln!(out, "{label}:{}  {value}", " ".repeat(pad))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tables_align_and_times_shorten() {
        let mut table = Table::new(&["ID", "NAME", "WHEN"]);
        table.row(vec![
            "1".into(),
            "a long name".into(),
            cell(&Value::from("2025-11-21T23:55:01.123456Z")),
        ]);
        table.row(vec!["22".into(), "b".into(), String::new()]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID  NAME         WHEN\n1   a long name  2025-11-21 23:55:01\n22  b\n"
        );
        assert_eq!(cell(&Value::from("SALES-1")), "SALES-1");
        assert_eq!(cell(&serde_json::json!(["a", "b"])), "a, b");
    }
}
