//! `unbox profiles`: deployment profiles, their assignments and the offline configuration file.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Paging, collect, items, note_more};
use crate::Ctx;
use crate::client::Payload;
use crate::error::{CliError, CmdResult, exit};
use crate::output::{self, Table, field};

/// The offline configuration's file name, as Windows looks for it.
const OFFLINE_FILE: &str = "AutopilotConfigurationFile.json";

/// Fields the server sets, left out of a file sent as a profile (so that the output of
/// `profiles show -o json` can be edited and sent back).
const READ_ONLY: &[&str] = &["id", "createdAt", "updatedAt"];

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// List the tenant's profiles.
    List(Paging),
    /// Show a profile and its assignments.
    Show {
        /// The profile id.
        id: Uuid,
    },
    /// Create a profile from a JSON or YAML file.
    #[command(after_help = FILE_HELP)]
    Create {
        /// The profile: JSON (`.json`) or YAML (any other name; `-` reads YAML or JSON from stdin).
        file: PathBuf,
    },
    /// Change a profile: the file is a JSON merge patch (only the fields it holds change; null
    /// resets one), JSON or YAML.
    #[command(after_help = FILE_HELP)]
    Update {
        /// The profile id.
        id: Uuid,
        /// The changes: JSON (`.json`) or YAML (any other name; `-` reads stdin).
        file: PathBuf,
        /// Send `If-Match` with this ETag: the update fails (exit 5) if the profile changed since.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// Delete a profile.
    Delete {
        /// The profile id.
        id: Uuid,
    },
    /// Assign a profile to a group, a device or all devices (or exclude them from it).
    Assign(AssignArgs),
    /// Remove one of a profile's assignments.
    Unassign {
        /// The profile id.
        profile: Uuid,
        /// The assignment id (`unbox profiles assignments PROFILE` lists them).
        assignment: Uuid,
    },
    /// List a profile's assignments.
    Assignments {
        /// The profile id.
        profile: Uuid,
    },
    /// List the devices whose effective profile this is (the stored membership).
    Devices {
        /// The profile id.
        profile: Uuid,
        #[command(flatten)]
        paging: Paging,
    },
    /// Write the profile's AutopilotConfigurationFile.json, for devices that are set up offline.
    OfflineConfiguration {
        /// The profile id.
        profile: Uuid,
        /// Where to write it (`-`: standard output).
        #[arg(long, value_name = "FILE", default_value = OFFLINE_FILE)]
        out: PathBuf,
    },
}

const FILE_HELP: &str = "The file holds the profile's fields as the API names them, e.g. in YAML:\n\n\
  displayName: Sales Autopilot\n\
  deploymentMode: userDriven        # userDriven, selfDeploying, preProvisioned\n\
  joinType: entra                   # entra or hybrid\n\
  deviceNameTemplate: SALES-%SERIAL%\n\
  oobe:\n\
  \x20 hideEula: true\n\
  \x20 hidePrivacySettings: true\n\
  \x20 userType: standard\n\
  enrollmentStatusPage:\n\
  \x20 enabled: true\n\
  \x20 timeoutMinutes: 60\n\n\
`id`, `createdAt` and `updatedAt` are ignored, so `unbox profiles show ID -o json` output can be \
edited and sent back.";

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["group", "device", "all_devices"])))]
pub struct AssignArgs {
    /// The profile id.
    profile: Uuid,
    /// Target a group.
    #[arg(long, value_name = "ID")]
    group: Option<Uuid>,
    /// Target one device (this beats group assignments).
    #[arg(long, value_name = "ID")]
    device: Option<Uuid>,
    /// Target all devices (the default profile).
    #[arg(long)]
    all_devices: bool,
    /// Exclude the target from the profile instead (not with --all-devices).
    #[arg(long)]
    exclude: bool,
}

impl ProfilesCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> CmdResult {
        match self {
            Self::List(paging) => list(ctx, &paging).await,
            Self::Show { id } => {
                let mut api = ctx.api()?;
                let profile = api.get(&format!("/v1/profiles/{id}"), &[]).await?;
                if ctx.json_output() {
                    output::json(ctx.io.out(), &profile)?;
                    return Ok(exit::OK);
                }
                print_profile(ctx, &profile)?;
                let assignments = api
                    .get(&format!("/v1/profiles/{id}/assignments"), &[])
                    .await?;
                writeln!(ctx.io.out())?;
                writeln!(ctx.io.out(), "Assignments:")?;
                if items(&assignments).is_empty() {
                    writeln!(ctx.io.out(), "  (none: `unbox profiles assign {id} …`)")?;
                } else {
                    assignment_table(items(&assignments)).write(ctx.io.out())?;
                }
                Ok(exit::OK)
            }
            Self::Create { file } => {
                let body = read_profile(ctx, &file)?;
                let profile = ctx
                    .api()?
                    .json(Method::POST, "/v1/profiles", Some(&body))
                    .await?;
                if !ctx.json_output() {
                    writeln!(ctx.io.out(), "Created profile {}", field(&profile, "/id"))?;
                }
                show(ctx, &profile)
            }
            Self::Update { id, file, if_match } => {
                let body = read_profile(ctx, &file)?;
                let headers: Vec<(&str, String)> =
                    if_match.map(|e| ("if-match", e)).into_iter().collect();
                let profile = ctx
                    .api()?
                    .send(
                        Method::PATCH,
                        &format!("/v1/profiles/{id}"),
                        &[],
                        Payload::Json(&body),
                        &headers,
                        true,
                    )
                    .await?
                    .json()?;
                show(ctx, &profile)
            }
            Self::Delete { id } => {
                ctx.api()?
                    .json(Method::DELETE, &format!("/v1/profiles/{id}"), None)
                    .await?;
                super::done(
                    ctx,
                    &format!("Deleted profile {id}"),
                    &json!({"id": id, "deleted": true}),
                )
            }
            Self::Assign(args) => assign(ctx, args).await,
            Self::Unassign {
                profile,
                assignment,
            } => {
                ctx.api()?
                    .json(
                        Method::DELETE,
                        &format!("/v1/profiles/{profile}/assignments/{assignment}"),
                        None,
                    )
                    .await?;
                super::done(
                    ctx,
                    &format!("Removed assignment {assignment} of profile {profile}"),
                    &json!({"profileId": profile, "id": assignment, "deleted": true}),
                )
            }
            Self::Assignments { profile } => {
                let list = ctx
                    .api()?
                    .get(&format!("/v1/profiles/{profile}/assignments"), &[])
                    .await?;
                if ctx.json_output() {
                    output::json(ctx.io.out(), &list)?;
                } else {
                    assignment_table(items(&list)).write(ctx.io.out())?;
                }
                Ok(exit::OK)
            }
            Self::Devices { profile, paging } => {
                let list = collect(
                    &mut ctx.api()?,
                    &format!("/v1/profiles/{profile}/devices"),
                    &[],
                    &paging,
                )
                .await?;
                if ctx.json_output() {
                    output::json(ctx.io.out(), &list)?;
                    return Ok(exit::OK);
                }
                let mut table = Table::new(&["ID", "SERIAL", "MANUFACTURER", "MODEL", "GROUP TAG"]);
                for d in items(&list) {
                    table.row(vec![
                        field(d, "/id"),
                        field(d, "/serialNumber"),
                        field(d, "/manufacturer"),
                        field(d, "/model"),
                        field(d, "/groupTag"),
                    ]);
                }
                table.write(ctx.io.out())?;
                note_more(ctx, &list);
                Ok(exit::OK)
            }
            Self::OfflineConfiguration { profile, out } => {
                offline_configuration(ctx, profile, &out).await
            }
        }
    }
}

/// Reads a profile file: JSON for `.json`, else YAML (which also reads JSON).
fn read_profile(ctx: &mut Ctx<'_>, path: &Path) -> Result<Value, CliError> {
    let bytes = super::read_input(ctx, path)?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut value: Value = if json {
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::failure(format!("{} is not JSON: {e}", path.display())))?
    } else {
        serde_norway::from_slice(&bytes)
            .map_err(|e| CliError::failure(format!("{} is not YAML: {e}", path.display())))?
    };
    let Value::Object(map) = &mut value else {
        return Err(CliError::failure(format!(
            "{} must hold an object of profile fields (displayName, deploymentMode, …)",
            path.display()
        )));
    };
    for name in READ_ONLY {
        map.remove(*name);
    }
    Ok(value)
}

async fn list(ctx: &mut Ctx<'_>, paging: &Paging) -> CmdResult {
    let list = collect(&mut ctx.api()?, "/v1/profiles", &[], paging).await?;
    if ctx.json_output() {
        output::json(ctx.io.out(), &list)?;
        return Ok(exit::OK);
    }
    let mut table = Table::new(&["ID", "NAME", "MODE", "JOIN", "NAME TEMPLATE", "CREATED"]);
    for p in items(&list) {
        table.row(vec![
            field(p, "/id"),
            field(p, "/displayName"),
            field(p, "/deploymentMode"),
            field(p, "/joinType"),
            field(p, "/deviceNameTemplate"),
            field(p, "/createdAt"),
        ]);
    }
    table.write(ctx.io.out())?;
    note_more(ctx, &list);
    Ok(exit::OK)
}

fn show(ctx: &mut Ctx<'_>, profile: &Value) -> CmdResult {
    if ctx.json_output() {
        output::json(ctx.io.out(), profile)?;
    } else {
        print_profile(ctx, profile)?;
    }
    Ok(exit::OK)
}

fn print_profile(ctx: &mut Ctx<'_>, p: &Value) -> Result<(), CliError> {
    let flags = |pointer: &str, names: &[(&str, &str)]| -> String {
        names
            .iter()
            .filter(|(key, _)| {
                p.pointer(&format!("{pointer}/{key}"))
                    .and_then(Value::as_bool)
                    == Some(true)
            })
            .map(|(_, label)| *label)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let oobe = flags(
        "/oobe",
        &[
            ("hideEula", "hide EULA"),
            ("hidePrivacySettings", "hide privacy settings"),
            ("hideChangeAccountOptions", "hide change-account options"),
            ("skipKeyboardSelection", "skip keyboard selection"),
        ],
    );
    let esp = if p
        .pointer("/enrollmentStatusPage/enabled")
        .and_then(Value::as_bool)
        == Some(true)
    {
        let mut text = format!(
            "on, timeout {} min",
            field(p, "/enrollmentStatusPage/timeoutMinutes")
        );
        let more = flags(
            "/enrollmentStatusPage",
            &[
                ("allowRetry", "retry"),
                ("allowReset", "reset"),
                ("allowUseOnFailure", "use on failure"),
            ],
        );
        if !more.is_empty() {
            text.push_str(&format!("; allows {more}"));
        }
        text
    } else {
        "off".to_owned()
    };
    let domain_join = if p.get("domainJoin").is_some_and(|d| !d.is_null()) {
        format!(
            "{} {} prefix {}",
            field(p, "/domainJoin/domainName"),
            field(p, "/domainJoin/organizationalUnit"),
            field(p, "/domainJoin/computerNamePrefix")
        )
    } else {
        String::new()
    };
    output::fields(
        ctx.io.out(),
        &[
            ("Id", field(p, "/id")),
            ("Name", field(p, "/displayName")),
            ("Description", field(p, "/description")),
            ("Deployment mode", field(p, "/deploymentMode")),
            ("Join type", field(p, "/joinType")),
            (
                "Skip DC connectivity check",
                field(p, "/hybridSkipConnectivityCheck"),
            ),
            ("Domain join", domain_join),
            ("Device name template", field(p, "/deviceNameTemplate")),
            ("Locale", field(p, "/locale")),
            ("User type", field(p, "/oobe/userType")),
            ("OOBE", oobe),
            (
                "Pre-provisioning allowed",
                field(p, "/preprovisioningAllowed"),
            ),
            ("Enrollment status page", esp),
            ("Created", field(p, "/createdAt")),
            ("Updated", field(p, "/updatedAt")),
        ],
    )
}

fn target_text(target: &Value) -> String {
    match target.get("kind").and_then(Value::as_str) {
        Some("group") => format!("group {}", field(target, "/groupId")),
        Some("device") => format!("device {}", field(target, "/deviceId")),
        Some("allDevices") => "all devices".to_owned(),
        _ => output::cell(target),
    }
}

fn assignment_table(list: &[Value]) -> Table {
    let mut table = Table::new(&["ID", "MODE", "TARGET", "CREATED"]);
    for a in list {
        table.row(vec![
            field(a, "/id"),
            field(a, "/mode"),
            target_text(a.get("target").unwrap_or(&Value::Null)),
            field(a, "/createdAt"),
        ]);
    }
    table
}

async fn assign(ctx: &mut Ctx<'_>, args: AssignArgs) -> CmdResult {
    let target = match (args.group, args.device, args.all_devices) {
        (Some(group), None, false) => json!({"kind": "group", "groupId": group}),
        (None, Some(device), false) => json!({"kind": "device", "deviceId": device}),
        (None, None, true) => json!({"kind": "allDevices"}),
        _ => {
            return Err(CliError::usage(
                "give one target: --group ID, --device ID or --all-devices",
            ));
        }
    };
    if args.all_devices && args.exclude {
        return Err(CliError::usage(
            "excluding all devices means nothing: remove the profile's include assignments instead",
        ));
    }
    let mode = if args.exclude { "exclude" } else { "include" };
    let body = json!({"target": target, "mode": mode});
    let assignment = ctx
        .api()?
        .json(
            Method::POST,
            &format!("/v1/profiles/{}/assignments", args.profile),
            Some(&body),
        )
        .await?;
    for warning in assignment
        .get("warnings")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        ctx.io.note(&format!("warning: {}", output::cell(warning)));
    }
    let verb = if args.exclude { "Excluded" } else { "Assigned" };
    let preposition = if args.exclude { "from" } else { "to" };
    let target = target_text(assignment.get("target").unwrap_or(&Value::Null));
    let message = if args.exclude {
        format!(
            "{verb} {target} {preposition} profile {} (assignment {})",
            args.profile,
            field(&assignment, "/id")
        )
    } else {
        format!(
            "{verb} profile {} {preposition} {target} (assignment {})",
            args.profile,
            field(&assignment, "/id")
        )
    };
    super::done(ctx, &message, &assignment)
}

async fn offline_configuration(ctx: &mut Ctx<'_>, profile: Uuid, out: &Path) -> CmdResult {
    let answer = ctx
        .api()?
        .send(
            Method::GET,
            &format!("/v1/profiles/{profile}/offline-configuration"),
            &[],
            Payload::Empty,
            &[],
            true,
        )
        .await?;
    if out.as_os_str() == "-" {
        ctx.io.out().write_all(&answer.body)?;
        if !answer.body.ends_with(b"\n") {
            writeln!(ctx.io.out())?;
        }
        return Ok(exit::OK);
    }
    std::fs::write(out, &answer.body)
        .map_err(|e| CliError::failure(format!("cannot write {}: {e}", out.display())))?;
    super::done(
        ctx,
        &format!("Wrote {} (profile {profile})", out.display()),
        &json!({"file": out.display().to_string(), "profileId": profile}),
    )
}
