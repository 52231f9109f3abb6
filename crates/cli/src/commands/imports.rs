//! `unbox import FILE`: bulk registration, with a progress bar while the job runs, and
//! `unbox imports`: the jobs and their rows. The partner's `unbox partner import` shares the
//! upload and the wait.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::{Paging, collect, items, note_more};
use crate::Ctx;
use crate::client::{Api, Payload};
use crate::error::{CliError, CmdResult, exit};
use crate::output::{self, Table, field};

/// How the file is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// An Autopilot CSV file (`text/csv`, any encoding the server reads).
    Csv,
    /// A JSON batch `{"devices": [...]}` (`application/json`).
    Json,
}

/// What `import` and `partner import` share.
#[derive(Debug, Clone, Args)]
pub struct UploadArgs {
    /// The file: an Autopilot CSV file, or a JSON batch `{"devices": [...]}` (by its `.json`
    /// extension, or --format).
    pub file: PathBuf,
    /// Report what every row would do and register nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The file's format (default: JSON for `.json` files, else CSV).
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Send this Idempotency-Key: the same key with the same file gives the same job (safe to
    /// retry), with another file it is refused.
    #[arg(long, value_name = "KEY", allow_hyphen_values = true)]
    pub idempotency_key: Option<String>,
    /// Print the accepted job and exit without waiting for it.
    #[arg(long)]
    pub no_wait: bool,
    /// How often to ask for the job's progress, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub poll_interval: u64,
    /// Give up waiting after this many seconds (the job goes on; see `unbox imports show`).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Waits for the job with a progress bar on stderr, then prints the result and the rows \
                        that failed (with --output json: the final job; its rows are in \
                        `unbox imports items ID`).\n\n\
                        Exit status: 0 when the job is complete (every row registered, or would be in a \
                        dry run), 6 when it finished with failed rows (partial or error); the other \
                        codes as for every command."
)]
pub struct ImportArgs {
    #[command(flatten)]
    upload: UploadArgs,
}

#[derive(Debug, Subcommand)]
pub enum ImportsCommand {
    /// List the tenant's import jobs, newest first.
    List(Paging),
    /// Show an import job.
    Show {
        /// The import id.
        id: Uuid,
    },
    /// List an import's rows (their outcome, error code and name, the device they registered).
    Items {
        /// The import id.
        id: Uuid,
        /// Only the rows that failed.
        #[arg(long)]
        failed: bool,
        #[command(flatten)]
        paging: Paging,
    },
}

pub async fn import(args: ImportArgs, ctx: &mut Ctx<'_>) -> CmdResult {
    let mut api = ctx.api()?;
    upload_and_wait(ctx, &mut api, "/v1/imports", "/v1/imports", &args.upload).await
}

impl ImportsCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> CmdResult {
        match self {
            Self::List(paging) => {
                let list = collect(&mut ctx.api()?, "/v1/imports", &[], &paging).await?;
                if ctx.json_output() {
                    output::json(ctx.io.out(), &list)?;
                    return Ok(exit::OK);
                }
                let mut table = Table::new(&[
                    "ID",
                    "STATUS",
                    "ROWS",
                    "SUCCEEDED",
                    "FAILED",
                    "DRY RUN",
                    "SOURCE",
                    "CREATED",
                ]);
                for job in items(&list) {
                    table.row(vec![
                        field(job, "/id"),
                        field(job, "/status"),
                        field(job, "/total"),
                        field(job, "/succeeded"),
                        field(job, "/failed"),
                        field(job, "/dryRun"),
                        field(job, "/source"),
                        field(job, "/createdAt"),
                    ]);
                }
                table.write(ctx.io.out())?;
                note_more(ctx, &list);
                Ok(exit::OK)
            }
            Self::Show { id } => {
                let job = ctx.api()?.get(&format!("/v1/imports/{id}"), &[]).await?;
                if ctx.json_output() {
                    output::json(ctx.io.out(), &job)?;
                } else {
                    print_job(ctx, &job)?;
                }
                Ok(exit::OK)
            }
            Self::Items { id, failed, paging } => {
                let query = if failed {
                    vec![("status", "error".to_owned())]
                } else {
                    Vec::new()
                };
                let list = collect(
                    &mut ctx.api()?,
                    &format!("/v1/imports/{id}/items"),
                    &query,
                    &paging,
                )
                .await?;
                if ctx.json_output() {
                    output::json(ctx.io.out(), &list)?;
                } else {
                    item_table(items(&list)).write(ctx.io.out())?;
                    note_more(ctx, &list);
                }
                Ok(exit::OK)
            }
        }
    }
}

fn content_type(args: &UploadArgs) -> &'static str {
    let format = args.format.unwrap_or_else(|| {
        let json = args
            .file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if json {
            FileFormat::Json
        } else {
            FileFormat::Csv
        }
    });
    match format {
        FileFormat::Csv => "text/csv",
        FileFormat::Json => "application/json",
    }
}

fn is_final(status: &str) -> bool {
    matches!(status, "complete" | "partial" | "error")
}

/// Uploads the file to `post_path`, waits for the job at `{jobs_path}/{id}`, prints the
/// outcome and the failed rows.
pub async fn upload_and_wait(
    ctx: &mut Ctx<'_>,
    api: &mut Api,
    post_path: &str,
    jobs_path: &str,
    args: &UploadArgs,
) -> CmdResult {
    if !args.file.is_file() {
        return Err(CliError::failure(format!(
            "cannot read {}: not a file",
            args.file.display()
        )));
    }
    let mut query = Vec::new();
    if args.dry_run {
        query.push(("dryRun", "true".to_owned()));
    }
    let mut headers = Vec::new();
    if let Some(key) = &args.idempotency_key {
        headers.push(("idempotency-key", key.clone()));
    }
    // A spinner while the file goes up (large files take a while).
    let uploading = indicatif::ProgressBar::with_draw_target(None, ctx.io.progress_target());
    if ctx.io.progress {
        let size = std::fs::metadata(&args.file).map_or(0, |m| m.len());
        uploading.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        uploading.set_message(format!(
            "uploading {} ({})",
            args.file.display(),
            indicatif::HumanBytes(size)
        ));
        uploading.enable_steady_tick(Duration::from_millis(120));
    }
    let accepted = api
        .send(
            Method::POST,
            post_path,
            &query,
            Payload::File {
                path: &args.file,
                content_type: content_type(args),
            },
            &headers,
            true,
        )
        .await;
    uploading.finish_and_clear();
    let accepted = accepted?;
    let job = accepted.json()?;
    let id = job
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| CliError::failure("the server accepted the file but named no job"))?
        .to_owned();
    let location = accepted
        .header("location")
        .filter(|l| l.starts_with('/'))
        .map_or_else(|| format!("{jobs_path}/{id}"), str::to_owned);
    if args.no_wait {
        if ctx.json_output() {
            output::json(ctx.io.out(), &job)?;
        } else {
            writeln!(
                ctx.io.out(),
                "Import {id} accepted ({}); follow it with `unbox imports show {id}`",
                field(&job, "/status")
            )?;
        }
        return Ok(exit::OK);
    }
    let job = wait(ctx, api, &location, job, args).await?;
    report(ctx, api, &location, &job, &args.file).await
}

/// Polls the job until it is finished, drawing its progress on stderr.
async fn wait(
    ctx: &mut Ctx<'_>,
    api: &mut Api,
    location: &str,
    mut job: Value,
    args: &UploadArgs,
) -> Result<Value, CliError> {
    let bar = indicatif::ProgressBar::with_draw_target(None, ctx.io.progress_target());
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {pos}/{len} rows ({elapsed})",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    if ctx.io.progress {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    let interval = Duration::from_millis(args.poll_interval.max(10));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let status = field(&job, "/status");
        let total = job.get("total").and_then(Value::as_u64).unwrap_or(0);
        let processed = job
            .get("processed")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| {
                job.get("succeeded").and_then(Value::as_u64).unwrap_or(0)
                    + job.get("failed").and_then(Value::as_u64).unwrap_or(0)
            });
        bar.set_length(total);
        bar.set_position(processed);
        bar.set_message(format!("import {status}"));
        bar.tick();
        if is_final(&status) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bar.abandon();
            return Err(CliError::failure(format!(
                "the import did not finish within {} s (it is {status}); it goes on: see `unbox imports show {}`",
                args.timeout,
                field(&job, "/id")
            )));
        }
        tokio::time::sleep(interval).await;
        job = api.get(location, &[]).await?;
    }
    bar.finish_and_clear();
    Ok(job)
}

async fn report(
    ctx: &mut Ctx<'_>,
    api: &mut Api,
    location: &str,
    job: &Value,
    file: &Path,
) -> CmdResult {
    let status = field(job, "/status");
    for warning in job
        .get("warnings")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        ctx.io.note(&format!("warning: {}", output::cell(warning)));
    }
    let code = if status == "complete" {
        exit::OK
    } else {
        exit::ROWS_FAILED
    };
    if ctx.json_output() {
        output::json(ctx.io.out(), job)?;
        return Ok(code);
    }
    writeln!(
        ctx.io.out(),
        "Import {} of {}: {status}{}: {} rows, {} succeeded, {} failed",
        field(job, "/id"),
        file.display(),
        if job.get("dryRun").and_then(Value::as_bool) == Some(true) {
            " (dry run: nothing registered)"
        } else {
            ""
        },
        field(job, "/total"),
        field(job, "/succeeded"),
        field(job, "/failed"),
    )?;
    if let Some(message) = job.get("message").and_then(Value::as_str) {
        writeln!(ctx.io.out(), "{message}")?;
    }
    let failed = job.get("failed").and_then(Value::as_u64).unwrap_or(0);
    if failed > 0 {
        let all = Paging {
            limit: None,
            all: true,
            cursor: None,
        };
        let list = collect(
            api,
            &format!("{location}/items"),
            &[("status", "error".to_owned())],
            &all,
        )
        .await?;
        writeln!(ctx.io.out())?;
        writeln!(ctx.io.out(), "Failed rows:")?;
        item_table(items(&list)).write(ctx.io.out())?;
    }
    Ok(code)
}

fn item_table(items: &[Value]) -> Table {
    let mut table = Table::new(&[
        "ROW", "SERIAL", "STATUS", "CODE", "ERROR", "MESSAGE", "DEVICE",
    ]);
    for item in items {
        let mut message = field(item, "/message");
        if let Some(warnings) = item.get("warnings").and_then(Value::as_array)
            && !warnings.is_empty()
        {
            let text: Vec<String> = warnings.iter().map(output::cell).collect();
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&format!("warning: {}", text.join("; ")));
        }
        table.row(vec![
            field(item, "/row"),
            field(item, "/serialNumber"),
            field(item, "/status"),
            field(item, "/errorCode"),
            field(item, "/errorName"),
            message,
            field(item, "/deviceId"),
        ]);
    }
    table
}

fn print_job(ctx: &mut Ctx<'_>, job: &Value) -> Result<(), CliError> {
    let warnings = job
        .get("warnings")
        .and_then(Value::as_array)
        .map(|w| w.iter().map(output::cell).collect::<Vec<_>>().join("; "))
        .unwrap_or_default();
    output::fields(
        ctx.io.out(),
        &[
            ("Id", field(job, "/id")),
            ("Status", field(job, "/status")),
            ("Rows", field(job, "/total")),
            ("Succeeded", field(job, "/succeeded")),
            ("Failed", field(job, "/failed")),
            ("Dry run", field(job, "/dryRun")),
            ("Format", field(job, "/format")),
            ("Encoding", field(job, "/encoding")),
            ("Source", field(job, "/source")),
            ("Partner", field(job, "/partnerId")),
            ("Warnings", warnings),
            ("Message", field(job, "/message")),
            ("Created", field(job, "/createdAt")),
            ("Finished", field(job, "/finishedAt")),
        ],
    )
}
