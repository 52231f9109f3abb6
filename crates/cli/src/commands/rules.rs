//! `unbox rules check|eval`: the membership-rule language, offline.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use unbox_rules::{Diagnostic, Explanation, JsonDevice, check};

use crate::Ctx;
use crate::error::{CmdResult, exit};

/// Exit code for a rule that is not valid.
const INVALID_RULE: u8 = exit::USAGE;

/// Check and evaluate device membership rules (Entra dynamic-group syntax), offline.
#[derive(Debug, Args)]
pub struct RulesCommand {
    #[command(subcommand)]
    action: RulesAction,
}

#[derive(Debug, Subcommand)]
enum RulesAction {
    /// Check a rule and print its diagnostics as JSON.
    #[command(
        after_help = "Prints {\"valid\": bool, \"diagnostics\": [{\"severity\", \"message\", \"start\", \"end\"}]} \
                            (start and end are byte offsets into the rule).\n\n\
                            Exit status: 0 when the rule is valid (warnings allowed), 2 when it is not."
    )]
    Check(CheckArgs),
    /// Evaluate a rule against one device and print the result as JSON.
    #[command(
        after_help = "Prints {\"valid\": true, \"result\": bool, \"diagnostics\": [warnings]} for a valid rule, \
                            or {\"valid\": false, \"diagnostics\": [...]} (the error first) for an invalid one.\n\n\
                            Exit status: 0 when the rule is valid (whatever its result), 2 when the rule is invalid, \
                            1 when the device file cannot be read or is not a device (the reason is on stderr; \
                            the device file is read before the rule is checked)."
    )]
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The rule, e.g. '(device.devicePhysicalIds -any (_ -eq "[OrderID]:Sales"))'. It may begin
    /// with a hyphen ('-not (…)').
    #[arg(long, value_name = "RULE", allow_hyphen_values = true)]
    rule: String,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// The rule. It may begin with a hyphen ('-not (…)').
    #[arg(long, value_name = "RULE", allow_hyphen_values = true)]
    rule: String,

    /// A JSON object of device properties named as in the rule language
    /// ({"deviceModel": "…", "accountEnabled": true, "devicePhysicalIds": ["…"]}); an absent
    /// property is null. `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    device: PathBuf,

    /// Add "explanation": the result of every sub-expression, in the shape of Graph's
    /// evaluateDynamicMembership.
    #[arg(long)]
    explain: bool,
}

#[derive(Debug, Serialize)]
struct CheckOutput<'a> {
    valid: bool,
    diagnostics: &'a [Diagnostic],
}

#[derive(Debug, Serialize)]
struct EvalOutput<'a> {
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<bool>,
    diagnostics: &'a [Diagnostic],
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<Explanation>,
}

impl RulesCommand {
    /// Runs offline; the output is JSON whatever `--output` says.
    pub fn run(self, ctx: &mut Ctx<'_>) -> CmdResult {
        match self.action {
            RulesAction::Check(args) => run_check(ctx, &args),
            RulesAction::Eval(args) => run_eval(ctx, &args),
        }
    }
}

fn run_check(ctx: &mut Ctx<'_>, args: &CheckArgs) -> CmdResult {
    let checked = check(&args.rule);
    print_json(
        ctx,
        &CheckOutput {
            valid: checked.is_valid(),
            diagnostics: &checked.diagnostics,
        },
    )?;
    Ok(exit_code(checked.is_valid()))
}

fn run_eval(ctx: &mut Ctx<'_>, args: &EvalArgs) -> CmdResult {
    let device = read_device(ctx, &args.device)?;
    let checked = check(&args.rule);
    let (result, explanation) = match &checked.rule {
        Some(rule) => (
            Some(rule.evaluate(&device)),
            args.explain.then(|| rule.explain(&device)),
        ),
        None => (None, None),
    };
    print_json(
        ctx,
        &EvalOutput {
            valid: checked.is_valid(),
            result,
            diagnostics: &checked.diagnostics,
            explanation,
        },
    )?;
    Ok(exit_code(checked.is_valid()))
}

fn exit_code(valid: bool) -> u8 {
    if valid { exit::OK } else { INVALID_RULE }
}

fn read_device(ctx: &mut Ctx<'_>, path: &Path) -> anyhow::Result<JsonDevice> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        ctx.io
            .input()
            .read_to_string(&mut text)
            .context("cannot read the device from standard input")?;
        text
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read device file {}", path.display()))?
    };
    JsonDevice::from_json(&text)
        .map_err(|reason| anyhow::anyhow!("device file {}: {reason}", path.display()))
}

fn print_json(ctx: &mut Ctx<'_>, value: &impl Serialize) -> CmdResult {
    let out = ctx.io.out();
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(exit::OK)
}
