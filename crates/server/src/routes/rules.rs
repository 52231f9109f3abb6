//! The membership-rule endpoints: validate a rule, and evaluate one against a registered or a
//! what-if device, with Graph's `evaluateDynamicMembership` details.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use unbox_domain::rule_device::RuleDevice;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Authorized, scope};
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidateRule {
    pub membership_rule: String,
}

/// One diagnostic: `start` and `end` are byte offsets into the rule's UTF-8 text.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleDiagnostic {
    /// `error` or `warning`.
    pub severity: String,
    pub message: String,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleValidation {
    pub valid: bool,
    #[schema(value_type = Vec<RuleDiagnostic>)]
    pub diagnostics: Vec<unbox_rules::Diagnostic>,
}

/// Checks a membership rule: `valid`, and every error and warning with its span.
#[utoipa::path(post, path = "/v1/groups/validate-rule", tag = "groups", security(("bearer" = ["groups.read"])),
    request_body = ValidateRule,
    responses((status = 200, body = RuleValidation)))]
pub async fn validate_rule(
    _caller: Authorized<scope::GroupsRead>,
    Json(body): Json<ValidateRule>,
) -> ApiResult<Json<RuleValidation>> {
    let checked = unbox_rules::check(&body.membership_rule);
    Ok(Json(RuleValidation {
        valid: checked.rule.is_some(),
        diagnostics: checked.diagnostics,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvaluateRule {
    pub membership_rule: String,
    /// A registered device of the tenant…
    pub device_id: Option<Uuid>,
    /// …or a what-if device: its properties named as in the rule language (absent is null).
    #[schema(value_type = Option<Object>)]
    pub device: Option<serde_json::Value>,
}

/// Evaluates a rule against a registered device (`deviceId`) or a what-if one (`device`), in
/// the shape of Microsoft Graph's `evaluateDynamicMembership`. An invalid rule is a 400 carrying
/// the same `diagnostics` as validation.
#[utoipa::path(post, path = "/v1/groups/evaluate-dynamic-membership", tag = "groups", security(("bearer" = ["groups.read"])),
    request_body = EvaluateRule,
    responses(
        (status = 200, description = "`{membershipRuleEvaluationResult, membershipRuleEvaluationDetails}`", body = serde_json::Value),
        (status = 400, description = "`InvalidMembershipRule`, with `diagnostics`", body = unbox_domain::api::Problem),
        (status = 404, body = unbox_domain::api::Problem)))]
pub async fn evaluate_rule(
    State(state): State<AppState>,
    caller: Authorized<scope::GroupsRead>,
    Json(body): Json<EvaluateRule>,
) -> ApiResult<Json<serde_json::Value>> {
    let checked = unbox_rules::check(&body.membership_rule);
    let Some(rule) = checked.rule else {
        return Err(ApiError::bad_request(
            "InvalidMembershipRule",
            problem_detail(&checked.diagnostics),
        )
        .with("diagnostics", &checked.diagnostics));
    };
    let explanation = match (body.device_id, body.device) {
        (Some(id), None) => {
            let mut conn = state.pool.acquire().await?;
            let row = unbox_db::devices::get(&mut conn, caller.tenant_id, id)
                .await?
                .ok_or_else(|| ApiError::not_found("device"))?;
            rule.explain(&RuleDevice::new(row.rule_fields()))
        }
        (None, Some(device)) => {
            let device = unbox_rules::JsonDevice::from_value(&device)
                .map_err(|message| ApiError::invalid_field("device", message))?;
            rule.explain(&device)
        }
        _ => {
            return Err(ApiError::invalid_field(
                "deviceId",
                "give either deviceId or device",
            ));
        }
    };
    Ok(Json(
        serde_json::to_value(explanation).map_err(ApiError::internal)?,
    ))
}

fn problem_detail(diagnostics: &[unbox_rules::Diagnostic]) -> String {
    diagnostics
        .iter()
        .find(|d| d.severity == unbox_rules::Severity::Error)
        .map_or_else(
            || "the membership rule is invalid".to_owned(),
            |d| d.message.clone(),
        )
}
