//! `unbox groups`: static and dynamic device groups, their members, and the server's rule
//! validation and evaluation.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Body, Paging, collect, items, note_more};
use crate::Ctx;
use crate::client::Payload;
use crate::error::{CliError, CmdResult, exit};
use crate::output::{self, Table, field};

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List the tenant's groups.
    List(Paging),
    /// Show a group.
    Show {
        /// The group id.
        id: Uuid,
    },
    /// Create a static group, or a dynamic one with --rule.
    Create(CreateArgs),
    /// Change a group's name, description, rule or rule processing.
    Update(UpdateArgs),
    /// Delete a group.
    Delete {
        /// The group id.
        id: Uuid,
    },
    /// List, add and remove members (adding and removing: static groups only).
    #[command(subcommand)]
    Members(MembersCommand),
    /// Check a membership rule on the server: prints its diagnostics.
    #[command(
        after_help = "Exit status: 0 when the rule is valid (warnings allowed), 2 when it is not."
    )]
    ValidateRule {
        /// The rule. It may begin with a hyphen ('-not (…)').
        #[arg(long, value_name = "RULE", allow_hyphen_values = true)]
        rule: String,
    },
    /// Evaluate a membership rule on the server against a registered device or a what-if one.
    #[command(
        after_help = "Prints the result and every sub-expression's (Graph's evaluateDynamicMembership). \
                            Exit status: 0 whatever the result; 2 when the rule is invalid."
    )]
    Evaluate(EvaluateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The group's name.
    #[arg(long, value_name = "NAME")]
    name: String,
    #[arg(long)]
    description: Option<String>,
    /// A membership rule (Entra device rule syntax): makes the group dynamic. It may begin with
    /// a hyphen ('-not (…)').
    #[arg(long, value_name = "RULE", allow_hyphen_values = true)]
    rule: Option<String>,
    /// Create the dynamic group with its rule processing paused.
    #[arg(long, requires = "rule")]
    paused: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The group id.
    id: Uuid,
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// The new membership rule (dynamic groups). It may begin with a hyphen.
    #[arg(long, value_name = "RULE", allow_hyphen_values = true)]
    rule: Option<String>,
    /// Pause the rule: the stored membership stays as it is.
    #[arg(long, conflicts_with = "resume")]
    pause: bool,
    /// Evaluate the rule again.
    #[arg(long)]
    resume: bool,
    /// Send `If-Match` with this ETag: the update fails (exit 5) if the group changed since.
    #[arg(long, value_name = "ETAG")]
    if_match: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// List a group's members (for dynamic groups, the stored membership and how fresh it is).
    List {
        /// The group id.
        group: Uuid,
        #[command(flatten)]
        paging: Paging,
    },
    /// Add devices to a static group (all or none).
    Add {
        /// The group id.
        group: Uuid,
        /// The device ids.
        #[arg(required = true, value_name = "DEVICE")]
        devices: Vec<Uuid>,
    },
    /// Remove a device from a static group.
    Remove {
        /// The group id.
        group: Uuid,
        /// The device id.
        device: Uuid,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["device_id", "device"])))]
pub struct EvaluateArgs {
    /// The rule. It may begin with a hyphen ('-not (…)').
    #[arg(long, value_name = "RULE", allow_hyphen_values = true)]
    rule: String,
    /// A registered device of the tenant.
    #[arg(long, value_name = "ID")]
    device_id: Option<Uuid>,
    /// A what-if device: a JSON object of properties named as in the rule language
    /// ({"deviceModel": "…", "devicePhysicalIds": ["…"]}); `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    device: Option<PathBuf>,
}

impl GroupsCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> CmdResult {
        match self {
            Self::List(paging) => list(ctx, &paging).await,
            Self::Show { id } => {
                let group = ctx.api()?.get(&format!("/v1/groups/{id}"), &[]).await?;
                show(ctx, &group)
            }
            Self::Create(args) => {
                let mut body = Body::new();
                body.set("displayName", args.name)
                    .opt("description", args.description);
                if let Some(rule) = args.rule {
                    body.set("membershipType", "dynamic")
                        .set("membershipRule", rule);
                    if args.paused {
                        body.set("membershipRuleProcessingState", "paused");
                    }
                } else {
                    body.set("membershipType", "static");
                }
                let group = ctx
                    .api()?
                    .json(Method::POST, "/v1/groups", Some(&body.value()))
                    .await?;
                if !ctx.json_output() {
                    writeln!(ctx.io.out(), "Created group {}", field(&group, "/id"))?;
                }
                show(ctx, &group)
            }
            Self::Update(args) => update(ctx, args).await,
            Self::Delete { id } => {
                ctx.api()?
                    .json(Method::DELETE, &format!("/v1/groups/{id}"), None)
                    .await?;
                super::done(
                    ctx,
                    &format!("Deleted group {id}"),
                    &json!({"id": id, "deleted": true}),
                )
            }
            Self::Members(command) => members(ctx, command).await,
            Self::ValidateRule { rule } => {
                let result = ctx
                    .api()?
                    .json(
                        Method::POST,
                        "/v1/groups/validate-rule",
                        Some(&json!({"membershipRule": rule})),
                    )
                    .await?;
                let valid = result.get("valid").and_then(Value::as_bool) == Some(true);
                if ctx.json_output() {
                    output::json(ctx.io.out(), &result)?;
                } else {
                    writeln!(
                        ctx.io.out(),
                        "{}",
                        if valid {
                            "The rule is valid"
                        } else {
                            "The rule is not valid"
                        }
                    )?;
                    print_diagnostics(ctx, &rule, &result)?;
                }
                Ok(if valid { exit::OK } else { exit::USAGE })
            }
            Self::Evaluate(args) => evaluate(ctx, args).await,
        }
    }
}

async fn list(ctx: &mut Ctx<'_>, paging: &Paging) -> CmdResult {
    let list = collect(&mut ctx.api()?, "/v1/groups", &[], paging).await?;
    if ctx.json_output() {
        output::json(ctx.io.out(), &list)?;
        return Ok(exit::OK);
    }
    let mut table = Table::new(&["ID", "NAME", "TYPE", "MEMBERS", "STATUS", "RULE"]);
    for g in items(&list) {
        table.row(vec![
            field(g, "/id"),
            field(g, "/displayName"),
            field(g, "/membershipType"),
            field(g, "/processingStatus/memberCount"),
            field(g, "/processingStatus/status"),
            field(g, "/membershipRule"),
        ]);
    }
    table.write(ctx.io.out())?;
    note_more(ctx, &list);
    Ok(exit::OK)
}

fn show(ctx: &mut Ctx<'_>, g: &Value) -> CmdResult {
    if ctx.json_output() {
        output::json(ctx.io.out(), g)?;
        return Ok(exit::OK);
    }
    output::fields(
        ctx.io.out(),
        &[
            ("Id", field(g, "/id")),
            ("Name", field(g, "/displayName")),
            ("Description", field(g, "/description")),
            ("Type", field(g, "/membershipType")),
            ("Rule", field(g, "/membershipRule")),
            (
                "Rule processing",
                field(g, "/membershipRuleProcessingState"),
            ),
            ("Membership", field(g, "/processingStatus/status")),
            ("Members", field(g, "/processingStatus/memberCount")),
            ("As of", field(g, "/processingStatus/asOf")),
            ("Created", field(g, "/createdAt")),
            ("Updated", field(g, "/updatedAt")),
        ],
    )?;
    Ok(exit::OK)
}

async fn update(ctx: &mut Ctx<'_>, args: UpdateArgs) -> CmdResult {
    let mut body = Body::new();
    body.opt("displayName", args.name)
        .opt("description", args.description)
        .opt("membershipRule", args.rule);
    if args.pause {
        body.set("membershipRuleProcessingState", "paused");
    }
    if args.resume {
        body.set("membershipRuleProcessingState", "on");
    }
    if body.is_empty() {
        return Err(CliError::usage(
            "nothing to update: give at least one of --name, --description, --rule, --pause, --resume",
        ));
    }
    let headers: Vec<(&str, String)> = args.if_match.map(|e| ("if-match", e)).into_iter().collect();
    let payload = body.value();
    let group = ctx
        .api()?
        .send(
            Method::PATCH,
            &format!("/v1/groups/{}", args.id),
            &[],
            Payload::Json(&payload),
            &headers,
            true,
        )
        .await?
        .json()?;
    show(ctx, &group)
}

async fn members(ctx: &mut Ctx<'_>, command: MembersCommand) -> CmdResult {
    match command {
        MembersCommand::List { group, paging } => {
            let list = collect(
                &mut ctx.api()?,
                &format!("/v1/groups/{group}/members"),
                &[],
                &paging,
            )
            .await?;
            if ctx.json_output() {
                output::json(ctx.io.out(), &list)?;
                return Ok(exit::OK);
            }
            let mut table = Table::new(&["DEVICE", "SERIAL", "DISPLAY NAME", "ADDED"]);
            for m in items(&list) {
                table.row(vec![
                    field(m, "/deviceId"),
                    field(m, "/serialNumber"),
                    field(m, "/displayName"),
                    field(m, "/addedAt"),
                ]);
            }
            table.write(ctx.io.out())?;
            if let Some(status) = list.get("processingStatus") {
                let as_of = field(status, "/asOf");
                ctx.io.note(&format!(
                    "membership: {}{}",
                    field(status, "/status"),
                    if as_of.is_empty() {
                        String::new()
                    } else {
                        format!(" as of {as_of}")
                    }
                ));
            }
            note_more(ctx, &list);
            Ok(exit::OK)
        }
        MembersCommand::Add { group, devices } => {
            let added = ctx
                .api()?
                .json(
                    Method::POST,
                    &format!("/v1/groups/{group}/members"),
                    Some(&json!({"deviceIds": devices})),
                )
                .await?;
            let count = added
                .get("deviceIds")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let already = devices.len().saturating_sub(count);
            let mut message = format!("Added {count} device(s) to group {group}");
            if already > 0 {
                message.push_str(&format!(" ({already} already members)"));
            }
            super::done(ctx, &message, &added)
        }
        MembersCommand::Remove { group, device } => {
            ctx.api()?
                .json(
                    Method::DELETE,
                    &format!("/v1/groups/{group}/members/{device}"),
                    None,
                )
                .await?;
            super::done(
                ctx,
                &format!("Removed device {device} from group {group}"),
                &json!({"groupId": group, "deviceId": device, "removed": true}),
            )
        }
    }
}

/// Diagnostics as `error at 1..23: message`, with the rule's text there.
fn print_diagnostics(ctx: &mut Ctx<'_>, rule: &str, result: &Value) -> Result<(), CliError> {
    for d in result
        .get("diagnostics")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        let start = d.get("start").and_then(Value::as_u64).unwrap_or(0);
        let end = d.get("end").and_then(Value::as_u64).unwrap_or(start);
        let text = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| rule.get(s..e))
            .filter(|t| !t.is_empty())
            .map(|t| format!(" `{t}`"))
            .unwrap_or_default();
        writeln!(
            ctx.io.out(),
            "  {} at {start}..{end}{text}: {}",
            field(d, "/severity"),
            field(d, "/message")
        )?;
    }
    Ok(())
}

async fn evaluate(ctx: &mut Ctx<'_>, args: EvaluateArgs) -> CmdResult {
    let mut body = json!({"membershipRule": args.rule});
    if let Some(id) = args.device_id {
        body["deviceId"] = json!(id);
    }
    if let Some(path) = &args.device {
        body["device"] = super::read_json(ctx, path)?;
    }
    let result = ctx
        .api()?
        .json(
            Method::POST,
            "/v1/groups/evaluate-dynamic-membership",
            Some(&body),
        )
        .await?;
    if ctx.json_output() {
        output::json(ctx.io.out(), &result)?;
        return Ok(exit::OK);
    }
    let outcome = result
        .get("membershipRuleEvaluationResult")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    writeln!(
        ctx.io.out(),
        "The rule is {} for this device",
        if outcome { "true" } else { "false" }
    )?;
    if let Some(details) = result.get("membershipRuleEvaluationDetails") {
        print_details(ctx.io.out(), details, 1)?;
    }
    Ok(exit::OK)
}

/// An evaluation tree, one expression a line, indented by depth.
pub fn print_details(
    out: &mut dyn std::io::Write,
    details: &Value,
    depth: usize,
) -> Result<(), CliError> {
    let result = details
        .get("expressionResult")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let property = details
        .get("propertyToEvaluate")
        .filter(|p| !p.is_null())
        .map(|p| {
            format!(
                "  ({} = {})",
                field(p, "/propertyName"),
                p.get("propertyValue")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "null".to_owned())
            )
        })
        .unwrap_or_default();
    writeln!(
        out,
        "{}{:<5}  {}{property}",
        "  ".repeat(depth),
        if result { "true" } else { "false" },
        field(details, "/expression"),
    )?;
    for child in details
        .get("expressionEvaluationDetails")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        print_details(out, child, depth + 1)?;
    }
    Ok(())
}
