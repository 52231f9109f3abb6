//! `unbox deployments`: the report across devices, and one device's timeline.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use uuid::Uuid;

use super::{Paging, collect, items, note_more};
use crate::Ctx;
use crate::error::{CliError, CmdResult, exit};
use crate::output::{self, Table, field};

#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// Deployments across the tenant's devices, newest first, with counts by status.
    List(ListArgs),
    /// One device's deployments and the phases it reported (its timeline).
    Show {
        /// The device id.
        device: Uuid,
        #[command(flatten)]
        paging: Paging,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "camelCase")]
pub enum Status {
    InProgress,
    Succeeded,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "inProgress",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only deployments with this status (timeouts count as failed).
    #[arg(long, value_enum)]
    status: Option<Status>,
    /// Opened at or after this time: RFC 3339 (2025-11-21T08:00:00Z), a date (2025-11-21), or
    /// an age such as 30m, 24h, 7d, 2w.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Opened before this time (same forms as --since).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// The device's serial number.
    #[arg(long)]
    serial: Option<String>,
    #[command(flatten)]
    paging: Paging,
}

/// RFC 3339, a date (midnight UTC), or an age (`30m`, `24h`, `7d`, `2w`) before now.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let amount: i64 = number.parse().map_err(|_| {
        format!("{text:?} is not a time: use RFC 3339, YYYY-MM-DD, or an age like 24h or 7d")
    })?;
    let age = match unit {
        "s" => Duration::try_seconds(amount),
        "m" => Duration::try_minutes(amount),
        "h" => Duration::try_hours(amount),
        "d" => Duration::try_days(amount),
        "w" => Duration::try_weeks(amount),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?} is not an age: use a number and s, m, h, d or w (e.g. 7d)"))?;
    Utc::now()
        .checked_sub_signed(age)
        .ok_or_else(|| format!("{text:?} is too far back"))
}

fn time_param(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl DeploymentsCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> CmdResult {
        match self {
            Self::List(args) => list(ctx, args).await,
            Self::Show { device, paging } => {
                let list = collect(
                    &mut ctx.api()?,
                    &format!("/v1/devices/{device}/deployments"),
                    &[],
                    &paging,
                )
                .await?;
                if ctx.json_output() {
                    output::json(ctx.io.out(), &list)?;
                    return Ok(exit::OK);
                }
                print_timeline(ctx.io.out(), &device.to_string(), items(&list))?;
                note_more(ctx, &list);
                Ok(exit::OK)
            }
        }
    }
}

async fn list(ctx: &mut Ctx<'_>, args: ListArgs) -> CmdResult {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(status) = args.status {
        query.push(("status", status.as_str().to_owned()));
    }
    if let Some(since) = args.since {
        query.push(("since", time_param(since)));
    }
    if let Some(until) = args.until {
        query.push(("until", time_param(until)));
    }
    if let Some(serial) = args.serial {
        query.push(("serialNumber", serial));
    }
    let list = collect(&mut ctx.api()?, "/v1/deployments", &query, &args.paging).await?;
    if ctx.json_output() {
        output::json(ctx.io.out(), &list)?;
        return Ok(exit::OK);
    }
    let mut table = Table::new(&[
        "ID",
        "DEVICE",
        "SERIAL",
        "PROFILE",
        "STATUS",
        "LAST PHASE",
        "OPENED",
        "FINISHED",
    ]);
    for d in items(&list) {
        table.row(vec![
            field(d, "/id"),
            field(d, "/deviceId"),
            field(d, "/serialNumber"),
            field(d, "/profileName"),
            status_text(d),
            field(d, "/lastPhase"),
            field(d, "/openedAt"),
            field(d, "/finishedAt"),
        ]);
    }
    table.write(ctx.io.out())?;
    if let Some(summary) = list.get("summary").filter(|s| s.is_object()) {
        writeln!(
            ctx.io.out(),
            "\n{} deployments: {} in progress, {} succeeded, {} failed",
            field(summary, "/total"),
            field(summary, "/inProgress"),
            field(summary, "/succeeded"),
            field(summary, "/failed"),
        )?;
    }
    note_more(ctx, &list);
    Ok(exit::OK)
}

/// `failed (timeout)` and the like.
fn status_text(d: &Value) -> String {
    let status = field(d, "/status");
    match d.get("failureReason").and_then(Value::as_str) {
        Some(reason) => format!("{status} ({reason})"),
        None => status,
    }
}

fn print_timeline(
    out: &mut dyn std::io::Write,
    device: &str,
    deployments: &[Value],
) -> Result<(), CliError> {
    if deployments.is_empty() {
        writeln!(out, "Device {device} has no deployments")?;
        return Ok(());
    }
    for (i, d) in deployments.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(
            out,
            "Deployment {} of profile \"{}\": {}",
            field(d, "/id"),
            field(d, "/profileName"),
            status_text(d)
        )?;
        output::fields(
            out,
            &[
                ("  Opened", field(d, "/openedAt")),
                ("  Last download", field(d, "/lastDownloadAt")),
                ("  Finished", field(d, "/finishedAt")),
                (
                    "  Times out",
                    if d.get("finishedAt").is_some_and(|f| !f.is_null()) {
                        String::new()
                    } else {
                        field(d, "/timeoutAt")
                    },
                ),
            ],
        )?;
        let events = d
            .get("events")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        if events.is_empty() {
            writeln!(out, "  (no events reported)")?;
            continue;
        }
        let mut table = Table::new(&["  TIME", "PHASE", "STATUS", "MESSAGE"]);
        for e in events {
            table.row(vec![
                format!("  {}", field(e, "/receivedAt")),
                field(e, "/phase"),
                field(e, "/status"),
                field(e, "/message"),
            ]);
        }
        table.write(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(
            time_param(parse_time("2025-11-21T08:00:00+01:00").unwrap()),
            "2025-11-21T07:00:00Z"
        );
        assert_eq!(
            time_param(parse_time("2025-11-21").unwrap()),
            "2025-11-21T00:00:00Z"
        );
        let day = parse_time("1d").unwrap();
        let age = Utc::now() - day;
        assert!(age >= Duration::hours(23) && age <= Duration::hours(25));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("3y").is_err());
    }
}
