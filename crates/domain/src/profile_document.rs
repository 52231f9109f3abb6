//! Renders a profile into the `AutopilotConfigurationFile.json` document a device receives
//! (api.md, "The profile document"; reference/autopilot.md, "The profile file").

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::profile::{DeploymentMode, JoinType, ProfileSettings, UserType};

pub const DOCUMENT_VERSION: u32 = 2049;

/// OOBE bits (reference/autopilot.md). 1, 128 and 512 are never set.
pub mod oobe_bits {
    pub const USER_NOT_ADMIN: u32 = 2;
    pub const SKIP_PRIVACY: u32 = 4;
    pub const SKIP_OEM_REGISTRATION: u32 = 8;
    pub const SKIP_EULA: u32 = 16;
    pub const TPM_ATTESTATION: u32 = 32;
    pub const ENTRA_DEVICE_AUTH: u32 = 64;
    pub const SKIP_UPGRADE_SCREEN: u32 = 256;
    pub const SKIP_KEYBOARD: u32 = 1024;
}

/// `CloudAssignedOobeConfig` for these settings, as Microsoft's converter computes it.
pub fn oobe_config(settings: &ProfileSettings) -> u32 {
    use oobe_bits::*;
    let oobe = &settings.oobe;
    let mut bits = SKIP_OEM_REGISTRATION | SKIP_UPGRADE_SCREEN;
    if oobe.user_type == UserType::Standard {
        bits |= USER_NOT_ADMIN;
    }
    if oobe.hide_privacy_settings {
        bits |= SKIP_PRIVACY;
    }
    if oobe.hide_eula {
        bits |= SKIP_EULA;
    }
    if settings.deployment_mode == DeploymentMode::SelfDeploying {
        bits |= TPM_ATTESTATION | ENTRA_DEVICE_AUTH;
    }
    if oobe.skip_keyboard_selection {
        bits |= SKIP_KEYBOARD;
    }
    bits
}

/// The tenant facts a document carries.
#[derive(Debug, Clone, Copy)]
pub struct TenantFacts<'a> {
    pub id: Uuid,
    pub domain: &'a str,
}

/// What only the online download adds to a document.
#[derive(Debug, Clone, Copy)]
pub struct OnlineFacts<'a> {
    pub deployment_id: Uuid,
    pub device_id: Uuid,
    /// Already expanded; ignored for hybrid join, which sends no name.
    pub device_name: Option<&'a str>,
    pub downloaded_at: DateTime<Utc>,
}

/// A rendered document, to serialize: [`online_document`] gives it without building a JSON
/// tree first (the device call serializes it straight into its response).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Document<'a> {
    version: u32,
    #[serde(rename = "Comment_File")]
    comment_file: String,
    cloud_assigned_tenant_id: Uuid,
    cloud_assigned_tenant_domain: &'a str,
    cloud_assigned_oobe_config: u32,
    cloud_assigned_domain_join_method: u8,
    cloud_assigned_forced_enrollment: u8,
    cloud_assigned_aad_server_data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud_assigned_device_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud_assigned_language: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud_assigned_region: Option<&'a str>,
    #[serde(
        rename = "HybridJoinSkipDCConnectivityCheck",
        skip_serializing_if = "Option::is_none"
    )]
    hybrid_join_skip_dc_connectivity_check: Option<u8>,
    cloud_assigned_autopilot_update_disabled: u8,
    cloud_assigned_autopilot_update_timeout: u32,
    ztd_correlation_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    ztd_registration_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment_profile_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_download_date: Option<String>,
}

/// `CloudAssignedAadServerData`, a JSON document in a string (fields in alphabetical order, as
/// the converter writes them).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServerData<'a> {
    zero_touch_config: ZeroTouchConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ZeroTouchConfig<'a> {
    cloud_assigned_tenant_domain: &'a str,
    cloud_assigned_tenant_upn: &'a str,
    forced_enrollment: u8,
}

fn document<'a>(
    profile_id: Uuid,
    settings: &'a ProfileSettings,
    tenant: TenantFacts<'a>,
    online: Option<OnlineFacts<'a>>,
) -> Document<'a> {
    let hybrid = settings.join_type == JoinType::Hybrid;
    let forced = u8::from(settings.oobe.hide_change_account_options);
    let server_data = serde_json::to_string(&ServerData {
        zero_touch_config: ZeroTouchConfig {
            cloud_assigned_tenant_domain: tenant.domain,
            cloud_assigned_tenant_upn: "",
            forced_enrollment: forced,
        },
    })
    .unwrap_or_default();
    let language = settings
        .oobe
        .skip_keyboard_selection
        .then_some(settings.locale.as_str());
    let device_name = if hybrid {
        None
    } else {
        match online {
            Some(online) => online.device_name,
            None => settings.device_name_template.as_deref(),
        }
    };
    Document {
        version: DOCUMENT_VERSION,
        comment_file: format!("Profile {}", settings.display_name),
        cloud_assigned_tenant_id: tenant.id,
        cloud_assigned_tenant_domain: tenant.domain,
        cloud_assigned_oobe_config: oobe_config(settings),
        cloud_assigned_domain_join_method: u8::from(hybrid),
        cloud_assigned_forced_enrollment: forced,
        cloud_assigned_aad_server_data: server_data,
        cloud_assigned_device_name: device_name,
        cloud_assigned_language: language,
        cloud_assigned_region: language,
        hybrid_join_skip_dc_connectivity_check: hybrid
            .then_some(u8::from(settings.hybrid_skip_connectivity_check)),
        cloud_assigned_autopilot_update_disabled: 1,
        cloud_assigned_autopilot_update_timeout: 1_800_000,
        // Offline files correlate by profile, as Microsoft's converter does.
        ztd_correlation_id: online.map_or(profile_id, |o| o.deployment_id),
        ztd_registration_id: online.map(|o| o.device_id),
        deployment_profile_name: online.map(|_| settings.display_name.as_str()),
        policy_download_date: online
            .map(|o| o.downloaded_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
    }
}

/// The document a device downloads online, ready to serialize.
pub fn online_document<'a>(
    profile_id: Uuid,
    settings: &'a ProfileSettings,
    tenant: TenantFacts<'a>,
    online: OnlineFacts<'a>,
) -> Document<'a> {
    document(profile_id, settings, tenant, Some(online))
}

/// The offline `AutopilotConfigurationFile.json`: ASCII only (non-ASCII escaped as `\uXXXX`),
/// one profile, the device-name template unexpanded.
pub fn render_offline(
    profile_id: Uuid,
    settings: &ProfileSettings,
    tenant: TenantFacts<'_>,
) -> String {
    let text = serde_json::to_string_pretty(&document(profile_id, settings, tenant, None))
        .unwrap_or_default();
    escape_non_ascii(&text)
}

/// Escapes every non-ASCII character of JSON text as `\uXXXX` (UTF-16, surrogate pairs).
/// Safe on serde_json's output: non-ASCII only ever occurs inside strings.
pub fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::profile::{DomainJoin, OobeSettings};

    fn settings() -> ProfileSettings {
        ProfileSettings {
            display_name: "Sales".into(),
            ..Default::default()
        }
    }

    #[test]
    fn oobe_bits_follow_the_converter() {
        let mut s = settings();
        assert_eq!(oobe_config(&s), 8 + 256);
        s.oobe = OobeSettings {
            hide_eula: true,
            hide_privacy_settings: true,
            user_type: UserType::Standard,
            ..Default::default()
        };
        assert_eq!(oobe_config(&s), 286);
        s.oobe.skip_keyboard_selection = true;
        assert_eq!(oobe_config(&s), 1310);
        s.deployment_mode = DeploymentMode::SelfDeploying;
        assert_eq!(oobe_config(&s), 1310 + 32 + 64);
        // 1, 128 and 512 are never set, whatever the settings.
        assert_eq!(oobe_config(&s) & (1 | 128 | 512), 0);
    }

    fn rendered(
        profile_id: Uuid,
        settings: &ProfileSettings,
        tenant: TenantFacts<'_>,
        online: OnlineFacts<'_>,
    ) -> serde_json::Value {
        serde_json::to_value(online_document(profile_id, settings, tenant, online)).unwrap()
    }

    fn tenant() -> TenantFacts<'static> {
        TenantFacts {
            id: Uuid::nil(),
            domain: "contoso.com",
        }
    }

    #[test]
    fn online_document_has_every_key() {
        let mut s = settings();
        s.oobe.hide_change_account_options = true;
        s.oobe.skip_keyboard_selection = true;
        s.locale = "en-GB".into();
        let deployment_id = Uuid::from_u128(1);
        let device_id = Uuid::from_u128(2);
        let doc = rendered(
            Uuid::from_u128(3),
            &s,
            tenant(),
            OnlineFacts {
                deployment_id,
                device_id,
                device_name: Some("SALES-123"),
                downloaded_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            },
        );
        assert_eq!(doc["Version"], 2049);
        assert_eq!(doc["Comment_File"], "Profile Sales");
        assert_eq!(doc["CloudAssignedForcedEnrollment"], 1);
        assert_eq!(doc["CloudAssignedDomainJoinMethod"], 0);
        assert_eq!(doc["CloudAssignedDeviceName"], "SALES-123");
        assert_eq!(doc["CloudAssignedLanguage"], "en-GB");
        assert_eq!(doc["CloudAssignedRegion"], "en-GB");
        assert_eq!(doc["ZtdCorrelationId"], deployment_id.to_string());
        assert_eq!(doc["ZtdRegistrationId"], device_id.to_string());
        assert_eq!(doc["DeploymentProfileName"], "Sales");
        assert_eq!(doc["PolicyDownloadDate"], "2023-11-14T22:13:20Z");
        assert!(doc.get("HybridJoinSkipDCConnectivityCheck").is_none());
        let server_data: serde_json::Value =
            serde_json::from_str(doc["CloudAssignedAadServerData"].as_str().unwrap()).unwrap();
        assert_eq!(server_data["ZeroTouchConfig"]["ForcedEnrollment"], 1);
        assert_eq!(
            server_data["ZeroTouchConfig"]["CloudAssignedTenantDomain"],
            "contoso.com"
        );
    }

    #[test]
    fn hybrid_sends_no_name_and_the_connectivity_flag() {
        let mut s = settings();
        s.join_type = JoinType::Hybrid;
        s.hybrid_skip_connectivity_check = true;
        s.domain_join = Some(DomainJoin {
            domain_name: "corp.contoso.com".into(),
            ..Default::default()
        });
        let doc = rendered(
            Uuid::nil(),
            &s,
            tenant(),
            OnlineFacts {
                deployment_id: Uuid::nil(),
                device_id: Uuid::nil(),
                device_name: Some("IGNORED"),
                downloaded_at: Utc::now(),
            },
        );
        assert_eq!(doc["CloudAssignedDomainJoinMethod"], 1);
        assert_eq!(doc["HybridJoinSkipDCConnectivityCheck"], 1);
        assert!(doc.get("CloudAssignedDeviceName").is_none());
        assert!(doc.get("CloudAssignedLanguage").is_none());
    }

    #[test]
    fn offline_file_is_ascii_and_keeps_the_template() {
        let mut s = settings();
        s.display_name = "Ventes Québec 🚀".into();
        s.device_name_template = Some("QC-%SERIAL%".into());
        let text = render_offline(Uuid::from_u128(9), &s, tenant());
        assert!(text.is_ascii());
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["Comment_File"], "Profile Ventes Québec 🚀");
        assert_eq!(doc["CloudAssignedDeviceName"], "QC-%SERIAL%");
        assert_eq!(doc["ZtdCorrelationId"], Uuid::from_u128(9).to_string());
        assert!(doc.get("ZtdRegistrationId").is_none());
        assert!(doc.get("PolicyDownloadDate").is_none());
    }
}
