//! Deployment profiles: the settings admins edit, their defaults and their validation.
//!
//! The settings are one document (`ProfileSettings`): the API reads and writes it whole, a
//! `PATCH` is a JSON merge patch applied to it, and the database stores it as one JSON value.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::FieldError;
use crate::device_name;

/// Autopilot's limit, which Unbox keeps so that profiles move between the two unchanged.
pub const MAX_PROFILES_PER_TENANT: i64 = 350;
pub const MAX_DISPLAY_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 1500;
pub const MAX_ESP_MESSAGE_CHARS: usize = 1500;
/// The enrollment status page's timeout range in minutes (Intune's).
pub const ESP_TIMEOUT_RANGE: std::ops::RangeInclusive<u32> = 1..=1440;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum DeploymentMode {
    #[default]
    UserDriven,
    SelfDeploying,
    PreProvisioned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum JoinType {
    #[default]
    Entra,
    Hybrid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum UserType {
    #[default]
    Administrator,
    Standard,
}

/// Out-of-box-experience settings (Graph's `outOfBoxExperienceSetting`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct OobeSettings {
    pub hide_eula: bool,
    pub hide_privacy_settings: bool,
    pub hide_change_account_options: bool,
    pub user_type: UserType,
    pub skip_keyboard_selection: bool,
}

/// The enrollment status page shown while the device and the user are set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct EnrollmentStatusPage {
    pub enabled: bool,
    pub timeout_minutes: u32,
    pub allow_retry: bool,
    pub allow_reset: bool,
    pub allow_use_on_failure: bool,
    pub custom_error_message: Option<String>,
}

impl Default for EnrollmentStatusPage {
    fn default() -> Self {
        Self {
            enabled: false,
            timeout_minutes: 60,
            allow_retry: false,
            allow_reset: false,
            allow_use_on_failure: false,
            custom_error_message: None,
        }
    }
}

/// Hybrid join: where the connector creates the on-premises computer account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct DomainJoin {
    pub domain_name: String,
    pub organizational_unit: Option<String>,
    pub computer_name_prefix: Option<String>,
}

/// Everything an admin sets on a profile. Omitted fields take Autopilot's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ProfileSettings {
    pub display_name: String,
    pub description: Option<String>,
    pub deployment_mode: DeploymentMode,
    pub join_type: JoinType,
    pub hybrid_skip_connectivity_check: bool,
    pub device_name_template: Option<String>,
    /// A locale such as `en-US`, or `os-default`.
    pub locale: String,
    pub oobe: OobeSettings,
    pub preprovisioning_allowed: bool,
    pub enrollment_status_page: EnrollmentStatusPage,
    /// Hybrid join only.
    pub domain_join: Option<DomainJoin>,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        Self {
            display_name: String::new(),
            description: None,
            deployment_mode: DeploymentMode::default(),
            join_type: JoinType::default(),
            hybrid_skip_connectivity_check: false,
            device_name_template: None,
            locale: "os-default".to_owned(),
            oobe: OobeSettings::default(),
            preprovisioning_allowed: false,
            enrollment_status_page: EnrollmentStatusPage::default(),
            domain_join: None,
        }
    }
}

impl ProfileSettings {
    /// Every problem with these settings, each naming its field; empty when valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, message: String| errors.push(FieldError::new(field, message));

        let name_chars = self.display_name.trim().chars().count();
        if name_chars == 0 {
            fail("displayName", "is required".into());
        } else if self.display_name.chars().count() > MAX_DISPLAY_NAME_CHARS {
            fail(
                "displayName",
                format!("is longer than {MAX_DISPLAY_NAME_CHARS} characters"),
            );
        }
        if let Some(description) = &self.description
            && description.chars().count() > MAX_DESCRIPTION_CHARS
        {
            fail(
                "description",
                format!("is longer than {MAX_DESCRIPTION_CHARS} characters"),
            );
        }
        if !is_valid_locale(&self.locale) {
            fail(
                "locale",
                format!(
                    "`{}` is not a locale such as `en-US`, nor `os-default`",
                    self.locale
                ),
            );
        }
        match (&self.device_name_template, self.join_type) {
            (Some(_), JoinType::Hybrid) => fail(
                "deviceNameTemplate",
                "applies only to Entra join; hybrid join names devices with domainJoin.computerNamePrefix".into(),
            ),
            (Some(template), JoinType::Entra) => {
                if let Err(message) = device_name::validate_template(template) {
                    fail("deviceNameTemplate", message);
                }
            }
            (None, _) => {}
        }
        match (&self.domain_join, self.join_type) {
            (None, JoinType::Hybrid) => {
                fail("domainJoin", "is required for hybrid join".into());
            }
            (Some(_), JoinType::Entra) => {
                fail("domainJoin", "applies only to hybrid join".into());
            }
            (Some(join), JoinType::Hybrid) => {
                if !is_valid_domain_name(&join.domain_name) {
                    fail(
                        "domainJoin.domainName",
                        format!("`{}` is not a DNS domain name", join.domain_name),
                    );
                }
                if let Some(ou) = &join.organizational_unit
                    && !ou.trim().is_empty()
                    && !looks_like_distinguished_name(ou)
                {
                    fail(
                        "domainJoin.organizationalUnit",
                        "must be a distinguished name such as `OU=Laptops,DC=contoso,DC=com`"
                            .into(),
                    );
                }
                if let Some(prefix) = &join.computer_name_prefix
                    && (prefix.is_empty()
                        || prefix.chars().count() > 15
                        || !prefix
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-'))
                {
                    fail(
                        "domainJoin.computerNamePrefix",
                        "must be 1 to 15 letters, digits or hyphens".into(),
                    );
                }
            }
            (None, JoinType::Entra) => {}
        }
        if self.hybrid_skip_connectivity_check && self.join_type != JoinType::Hybrid {
            fail(
                "hybridSkipConnectivityCheck",
                "applies only to hybrid join".into(),
            );
        }
        if self.deployment_mode == DeploymentMode::SelfDeploying
            && self.join_type == JoinType::Hybrid
        {
            fail(
                "deploymentMode",
                "self-deploying mode supports only Entra join (as in Autopilot)".into(),
            );
        }
        let esp = &self.enrollment_status_page;
        if !ESP_TIMEOUT_RANGE.contains(&esp.timeout_minutes) {
            fail(
                "enrollmentStatusPage.timeoutMinutes",
                format!(
                    "must be between {} and {}",
                    ESP_TIMEOUT_RANGE.start(),
                    ESP_TIMEOUT_RANGE.end()
                ),
            );
        }
        if let Some(message) = &esp.custom_error_message
            && message.chars().count() > MAX_ESP_MESSAGE_CHARS
        {
            fail(
                "enrollmentStatusPage.customErrorMessage",
                format!("is longer than {MAX_ESP_MESSAGE_CHARS} characters"),
            );
        }
        errors
    }

    /// Pre-provisioned profiles always allow pre-provisioning; others say so explicitly.
    pub fn allows_preprovisioning(&self) -> bool {
        self.preprovisioning_allowed || self.deployment_mode == DeploymentMode::PreProvisioned
    }
}

/// `os-default`, or a BCP 47 tag of the shape Windows uses (`en-US`, `zh-Hans-CN`, `sr-Latn-RS`).
pub fn is_valid_locale(locale: &str) -> bool {
    if locale == "os-default" {
        return true;
    }
    let mut parts = locale.split('-');
    let Some(language) = parts.next() else {
        return false;
    };
    if !(2..=3).contains(&language.len()) || !language.chars().all(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    !rest.is_empty()
        && rest.len() <= 2
        && rest
            .iter()
            .all(|p| (2..=4).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn is_valid_domain_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn looks_like_distinguished_name(dn: &str) -> bool {
    dn.split(',').all(|rdn| {
        rdn.split_once('=').is_some_and(|(key, value)| {
            !key.trim().is_empty()
                && key.trim().chars().all(|c| c.is_ascii_alphabetic())
                && !value.trim().is_empty()
        })
    })
}

/// RFC 7396 JSON merge patch: objects merge recursively, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target_fields) = target {
        for (key, value) in patch_fields {
            if value.is_null() {
                target_fields.remove(key);
            } else {
                merge_patch(
                    target_fields.entry(key.clone()).or_insert(Value::Null),
                    value,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn named(name: &str) -> ProfileSettings {
        ProfileSettings {
            display_name: name.into(),
            ..Default::default()
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn defaults_are_autopilots() {
        let s: ProfileSettings = serde_json::from_value(json!({"displayName": "Sales"})).unwrap();
        assert_eq!(s.locale, "os-default");
        assert_eq!(s.oobe.user_type, UserType::Administrator);
        assert_eq!(s.deployment_mode, DeploymentMode::UserDriven);
        assert_eq!(s.join_type, JoinType::Entra);
        assert!(s.validate().is_empty());
    }

    #[test]
    fn limits_on_names_and_descriptions_count_characters() {
        assert!(named(&"é".repeat(200)).validate().is_empty());
        assert_eq!(fields(&named(&"é".repeat(201)).validate()), ["displayName"]);
        assert_eq!(fields(&named("  ").validate()), ["displayName"]);
        let mut s = named("x");
        s.description = Some("d".repeat(1500));
        assert!(s.validate().is_empty());
        s.description = Some("d".repeat(1501));
        assert_eq!(fields(&s.validate()), ["description"]);
    }

    #[test]
    fn hybrid_needs_a_domain_and_takes_no_template() {
        let mut s = named("Hybrid");
        s.join_type = JoinType::Hybrid;
        assert_eq!(fields(&s.validate()), ["domainJoin"]);
        s.domain_join = Some(DomainJoin {
            domain_name: "corp.contoso.com".into(),
            organizational_unit: Some("OU=Laptops,DC=corp,DC=contoso,DC=com".into()),
            computer_name_prefix: Some("CORP-".into()),
        });
        assert!(s.validate().is_empty());
        s.device_name_template = Some("X-%SERIAL%".into());
        assert_eq!(fields(&s.validate()), ["deviceNameTemplate"]);
        s.device_name_template = None;
        s.domain_join.as_mut().unwrap().domain_name = "not a domain".into();
        s.domain_join.as_mut().unwrap().organizational_unit = Some("Laptops".into());
        assert_eq!(
            fields(&s.validate()),
            ["domainJoin.domainName", "domainJoin.organizationalUnit"]
        );
    }

    #[test]
    fn templates_and_locales_are_checked() {
        let mut s = named("x");
        s.device_name_template = Some("%SERIAL%%SERIAL%!".into());
        assert_eq!(fields(&s.validate()), ["deviceNameTemplate"]);
        s.device_name_template = Some("SALES-%RAND:4%".into());
        assert!(s.validate().is_empty());
        s.locale = "english".into();
        assert_eq!(fields(&s.validate()), ["locale"]);
        s.locale = "en-US".into();
        assert!(s.validate().is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<ProfileSettings, _> =
            serde_json::from_value(json!({"displayName": "x", "oobe": {"hideEULA": true}}));
        assert!(r.is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1], "e": "x"});
        merge_patch(
            &mut doc,
            &json!({"a": {"b": null, "z": 3}, "d": [2], "e": null}),
        );
        assert_eq!(doc, json!({"a": {"c": 2, "z": 3}, "d": [2]}));
    }
}
