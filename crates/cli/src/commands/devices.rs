//! `unbox devices`: the device registry.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Body, Paging, collect, items, note_more};
use crate::Ctx;
use crate::error::{CliError, CmdResult, exit};
use crate::output::{self, Table, cell, field};

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List devices, filtered.
    List(ListArgs),
    /// Show one device.
    Show {
        /// The device id (ZTDId).
        id: Uuid,
    },
    /// Register one device by hardware hash or Linux identity (`unbox hwid` output).
    Register(RegisterArgs),
    /// Change a device's admin fields (only the options given; an empty value clears a field).
    Update(UpdateArgs),
    /// Deregister a device: its hardware identity becomes free for any tenant.
    Delete {
        /// The device id.
        id: Uuid,
    },
    /// Explain which profile the device gets and why: its groups, every candidate, the winner.
    Explain {
        /// The device id.
        id: Uuid,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "camelCase")]
pub enum ProfileStatus {
    AssignedInSync,
    NotAssigned,
}

impl ProfileStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::AssignedInSync => "assignedInSync",
            Self::NotAssigned => "notAssigned",
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Exact serial number (case-insensitive).
    #[arg(long)]
    serial: Option<String>,
    /// Exact group tag (case-insensitive).
    #[arg(long)]
    group_tag: Option<String>,
    /// Exact assigned user (userPrincipalName, case-insensitive).
    #[arg(long)]
    user: Option<String>,
    /// Devices with or without an effective profile.
    #[arg(long, value_enum)]
    profile_status: Option<ProfileStatus>,
    /// Free text over serial, manufacturer, model, tag, user and names.
    #[arg(long)]
    q: Option<String>,
    #[command(flatten)]
    paging: Paging,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("machine").required(true).args(["hardware_hash", "identity"])))]
pub struct RegisterArgs {
    /// The 4K hardware hash (base64), as in an Autopilot CSV file.
    #[arg(long, value_name = "BASE64")]
    hardware_hash: Option<String>,
    /// A Linux identity: the JSON `unbox hwid --format json` prints (`-` reads stdin).
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// The serial number (checked against the hash).
    #[arg(long)]
    serial: Option<String>,
    /// The Windows product key id.
    #[arg(long)]
    product_key: Option<String>,
    #[arg(long)]
    group_tag: Option<String>,
    #[arg(long)]
    purchase_order_id: Option<String>,
    /// The assigned user (userPrincipalName).
    #[arg(long)]
    user: Option<String>,
    /// The computer name the device gets (beats the profile's template).
    #[arg(long)]
    display_name: Option<String>,
    /// The device's public key as a JWK file (`unbox device keygen` prints one): the device
    /// must then prove possession of its private key when it boots.
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The device id.
    id: Uuid,
    #[arg(long)]
    group_tag: Option<String>,
    #[arg(long)]
    purchase_order_id: Option<String>,
    /// The assigned user (userPrincipalName).
    #[arg(long)]
    user: Option<String>,
    /// The computer name (1 to 15 letters, digits or hyphens).
    #[arg(long)]
    display_name: Option<String>,
    /// `Company` or `Personal`.
    #[arg(long, value_name = "OWNERSHIP")]
    ownership: Option<String>,
    #[arg(long)]
    category: Option<String>,
    #[arg(long, value_name = "BOOL")]
    account_enabled: Option<bool>,
    /// extensionAttributeN=VALUE (N from 1 to 15), or N=VALUE; repeatable. An empty value
    /// removes the attribute.
    #[arg(long = "extension-attribute", value_name = "NAME=VALUE")]
    extension_attributes: Vec<String>,
    /// Send `If-Match` with this ETag: the update fails (exit 5) if the device changed since.
    #[arg(long, value_name = "ETAG")]
    if_match: Option<String>,
}

impl DevicesCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> CmdResult {
        match self {
            Self::List(args) => list(args, ctx).await,
            Self::Show { id } => {
                let device = ctx.api()?.get(&format!("/v1/devices/{id}"), &[]).await?;
                print_device(ctx, &device)
            }
            Self::Register(args) => register(args, ctx).await,
            Self::Update(args) => update(args, ctx).await,
            Self::Delete { id } => {
                ctx.api()?
                    .json(Method::DELETE, &format!("/v1/devices/{id}"), None)
                    .await?;
                super::done(
                    ctx,
                    &format!("Deleted device {id}"),
                    &json!({"id": id, "deleted": true}),
                )
            }
            Self::Explain { id } => {
                let explanation = ctx
                    .api()?
                    .get(&format!("/v1/devices/{id}/assignment"), &[])
                    .await?;
                if ctx.json_output() {
                    output::json(ctx.io.out(), &explanation)?;
                } else {
                    print_explanation(ctx.io.out(), &explanation)?;
                }
                Ok(exit::OK)
            }
        }
    }
}

async fn list(args: ListArgs, ctx: &mut Ctx<'_>) -> CmdResult {
    let mut query: Vec<(&str, String)> = Vec::new();
    for (name, value) in [
        ("serialNumber", args.serial),
        ("groupTag", args.group_tag),
        ("userPrincipalName", args.user),
        (
            "profileStatus",
            args.profile_status.map(|s| s.as_str().to_owned()),
        ),
        ("q", args.q),
    ] {
        if let Some(value) = value {
            query.push((name, value));
        }
    }
    let list = collect(&mut ctx.api()?, "/v1/devices", &query, &args.paging).await?;
    if ctx.json_output() {
        output::json(ctx.io.out(), &list)?;
        return Ok(exit::OK);
    }
    let mut table = Table::new(&[
        "ID",
        "SERIAL",
        "MANUFACTURER",
        "MODEL",
        "OS",
        "GROUP TAG",
        "USER",
        "PROFILE",
        "LAST CONTACT",
    ]);
    for device in items(&list) {
        table.row(vec![
            field(device, "/id"),
            field(device, "/serialNumber"),
            field(device, "/manufacturer"),
            field(device, "/model"),
            field(device, "/deviceOSType"),
            field(device, "/groupTag"),
            field(device, "/userPrincipalName"),
            field(device, "/deploymentProfileAssignmentStatus"),
            field(device, "/lastContactedAt"),
        ]);
    }
    table.write(ctx.io.out())?;
    note_more(ctx, &list);
    Ok(exit::OK)
}

fn print_device(ctx: &mut Ctx<'_>, device: &Value) -> CmdResult {
    if ctx.json_output() {
        output::json(ctx.io.out(), device)?;
        return Ok(exit::OK);
    }
    let attributes = device
        .get("extensionAttributes")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", cell(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let key = match device.get("hasDeviceKey").and_then(Value::as_bool) {
        Some(true) => "registered (the device must prove it)".to_owned(),
        _ => String::new(),
    };
    output::fields(
        ctx.io.out(),
        &[
            ("Id", field(device, "/id")),
            ("Serial number", field(device, "/serialNumber")),
            ("Manufacturer", field(device, "/manufacturer")),
            ("Model", field(device, "/model")),
            ("OS", field(device, "/deviceOSType")),
            ("Group tag", field(device, "/groupTag")),
            ("Purchase order", field(device, "/purchaseOrderId")),
            ("User", field(device, "/userPrincipalName")),
            ("Display name", field(device, "/displayName")),
            ("Assigned name", field(device, "/assignedDeviceName")),
            ("Ownership", field(device, "/deviceOwnership")),
            ("Category", field(device, "/deviceCategory")),
            ("Account enabled", field(device, "/accountEnabled")),
            ("Extension attributes", attributes),
            ("Enrollment state", field(device, "/enrollmentState")),
            (
                "Enrollment profile",
                field(device, "/enrollmentProfileName"),
            ),
            (
                "Profile status",
                field(device, "/deploymentProfileAssignmentStatus"),
            ),
            ("Profile", field(device, "/deploymentProfileId")),
            (
                "Profile assigned",
                field(device, "/deploymentProfileAssignedAt"),
            ),
            ("Device key", key),
            ("Last contacted", field(device, "/lastContactedAt")),
            ("Created", field(device, "/createdAt")),
            ("Updated", field(device, "/updatedAt")),
        ],
    )?;
    Ok(exit::OK)
}

async fn register(args: RegisterArgs, ctx: &mut Ctx<'_>) -> CmdResult {
    let mut body = Body::new();
    body.opt("hardwareHash", args.hardware_hash);
    if let Some(path) = &args.identity {
        let identity = super::read_json(ctx, path)?;
        if !identity.is_object() {
            return Err(CliError::failure(format!(
                "{} is not an identity object",
                path.display()
            )));
        }
        body.set("identity", identity);
    }
    if let Some(path) = &args.public_key {
        let key = super::read_json(ctx, path)?;
        body.set("devicePublicKey", key);
    }
    body.opt("serialNumber", args.serial)
        .opt("productKey", args.product_key)
        .opt("groupTag", args.group_tag)
        .opt("purchaseOrderId", args.purchase_order_id)
        .opt("userPrincipalName", args.user)
        .opt("displayName", args.display_name);
    let device = ctx
        .api()?
        .json(Method::POST, "/v1/devices", Some(&body.value()))
        .await?;
    if !ctx.json_output() {
        writeln!(ctx.io.out(), "Registered device {}", field(&device, "/id"))?;
    }
    print_device(ctx, &device)
}

/// `extensionAttribute3=x` or `3=x`.
fn extension_attribute(text: &str) -> Result<(String, String), CliError> {
    let (name, value) = text.split_once('=').ok_or_else(|| {
        CliError::usage(format!(
            "--extension-attribute {text:?}: expected NAME=VALUE, e.g. extensionAttribute1=Finance"
        ))
    })?;
    let name = name.trim();
    let name = if name.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() {
        format!("extensionAttribute{name}")
    } else {
        name.to_owned()
    };
    Ok((name, value.to_owned()))
}

async fn update(args: UpdateArgs, ctx: &mut Ctx<'_>) -> CmdResult {
    let mut body = Body::new();
    body.opt("groupTag", args.group_tag)
        .opt("purchaseOrderId", args.purchase_order_id)
        .opt("userPrincipalName", args.user)
        .opt("displayName", args.display_name)
        .opt("deviceOwnership", args.ownership)
        .opt("deviceCategory", args.category)
        .opt("accountEnabled", args.account_enabled);
    if !args.extension_attributes.is_empty() {
        let mut attributes = serde_json::Map::new();
        for text in &args.extension_attributes {
            let (name, value) = extension_attribute(text)?;
            // In a merge patch, null removes a member.
            let value = if value.is_empty() {
                Value::Null
            } else {
                Value::String(value)
            };
            attributes.insert(name, value);
        }
        body.set("extensionAttributes", Value::Object(attributes));
    }
    if body.is_empty() {
        return Err(CliError::usage(
            "nothing to update: give at least one of --group-tag, --purchase-order-id, --user, \
             --display-name, --ownership, --category, --account-enabled, --extension-attribute",
        ));
    }
    let mut headers = Vec::new();
    if let Some(etag) = args.if_match {
        headers.push(("if-match", etag));
    }
    let payload = body.value();
    let answer = ctx
        .api()?
        .send(
            Method::PATCH,
            &format!("/v1/devices/{}", args.id),
            &[],
            crate::client::Payload::Json(&payload),
            &headers,
            true,
        )
        .await?;
    let device = answer.json()?;
    print_device(ctx, &device)
}

fn outcome_text(outcome: &str) -> &str {
    match outcome {
        "won" => "won",
        "excluded" => "excluded",
        "lowerTier" => "lower tier",
        "lostToOlder" => "lost to older",
        other => other,
    }
}

fn tier_text(tier: &str) -> &str {
    match tier {
        "device" => "device",
        "group" => "group",
        "allDevices" => "all devices",
        other => other,
    }
}

/// `group Sales`, `device`, `all devices`.
fn via_text(via: &Value) -> String {
    match via.pointer("/target/kind").and_then(Value::as_str) {
        Some("group") => {
            let name = via
                .get("groupName")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| field(via, "/target/groupId"));
            format!("group {name}")
        }
        Some("device") => "the device".to_owned(),
        Some("allDevices") => "all devices".to_owned(),
        _ => cell(via.get("target").unwrap_or(&Value::Null)),
    }
}

/// `GET /v1/devices/{id}/assignment` for people.
pub fn print_explanation(out: &mut dyn std::io::Write, e: &Value) -> Result<(), CliError> {
    let device = field(e, "/deviceId");
    match e.get("winner").filter(|w| !w.is_null()) {
        Some(winner) => writeln!(
            out,
            "Device {device} gets profile \"{}\" ({}), tier: {}, assigned {}",
            field(winner, "/profileName"),
            field(winner, "/profileId"),
            tier_text(&field(winner, "/tier")),
            field(winner, "/assignedAt"),
        )?,
        None => writeln!(out, "Device {device} gets no profile")?,
    }
    writeln!(out, "Why: {}", field(e, "/reason"))?;

    let groups = e
        .get("groups")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    writeln!(out)?;
    writeln!(out, "Groups ({}):", groups.len())?;
    if !groups.is_empty() {
        let mut table = Table::new(&["  GROUP", "ID", "WHY THE DEVICE IS IN IT"]);
        for g in groups {
            let why = match g.pointer("/reason/kind").and_then(Value::as_str) {
                Some("staticMember") => "static member".to_owned(),
                Some("pausedRuleMember") => "member when its rule was paused".to_owned(),
                Some("ruleMatched") => {
                    format!("rule matched: {}", field(g, "/reason/membershipRule"))
                }
                _ => field(g, "/reason"),
            };
            table.row(vec![
                format!("  {}", field(g, "/groupName")),
                field(g, "/groupId"),
                why,
            ]);
        }
        table.write(out)?;
    }

    let candidates = e
        .get("candidates")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    writeln!(out)?;
    writeln!(out, "Candidates ({}):", candidates.len())?;
    if !candidates.is_empty() {
        let mut table = Table::new(&["  PROFILE", "ID", "TIER", "OUTCOME", "VIA", "REASON"]);
        for c in candidates {
            let mut via: Vec<String> = c
                .get("includedBy")
                .and_then(Value::as_array)
                .map(|v| v.iter().map(via_text).collect())
                .unwrap_or_default();
            via.extend(
                c.get("excludedBy")
                    .and_then(Value::as_array)
                    .map(|v| {
                        v.iter()
                            .map(|x| format!("excluded by {}", via_text(x)))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            );
            table.row(vec![
                format!("  {}", field(c, "/profileName")),
                field(c, "/profileId"),
                tier_text(&field(c, "/tier")).to_owned(),
                outcome_text(&field(c, "/outcome")).to_owned(),
                via.join(", "),
                field(c, "/reason"),
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
    fn extension_attributes_parse() {
        assert_eq!(
            extension_attribute("3=Finance").unwrap(),
            ("extensionAttribute3".to_owned(), "Finance".to_owned())
        );
        assert_eq!(
            extension_attribute("extensionAttribute12=a=b").unwrap(),
            ("extensionAttribute12".to_owned(), "a=b".to_owned())
        );
        assert_eq!(extension_attribute("x").unwrap_err().code, exit::USAGE);
    }
}
