//! The request and response bodies of the HTTP API (api.md), shared by the server and the CLI.
//! Field names are camelCase, close to Microsoft Graph's.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::identity::Identity;
use crate::profile::ProfileSettings;

/// One invalid field of a request, in a problem document's `errors[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The field, as a dotted path into the request body (`domainJoin.domainName`).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document, as every error of the API is answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code (`DeviceNotRegistered`, `ZtdDeviceAlreadyAssigned`, …).
    pub code: String,
    /// Present on server errors: the id to quote when reporting it, also in the server's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Code-specific members, such as `deviceId` on `ZtdDeviceAlreadyAssigned`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

/// A page of a cursor-paginated list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Tokens, tenant, clients

/// The answer of `POST /oauth2/token` (RFC 6749 names).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Branding {
    /// The organisation name shown on the sign-in page.
    pub display_name: Option<String>,
    pub logo_url: Option<String>,
    pub sign_in_text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: Uuid,
    pub display_name: String,
    pub domain: String,
    pub branding: Branding,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `PATCH /v1/tenant`: a JSON merge patch of these fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantPatch {
    pub display_name: Option<String>,
    pub domain: Option<String>,
    pub branding: Option<Branding>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientCreate {
    pub display_name: String,
    /// Tenant scopes the client may be granted; `POST /oauth2/token` may narrow them.
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    /// Also the OAuth `client_id`.
    pub id: Uuid,
    pub display_name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A new client with its secret, which is shown this once and stored only hashed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCreated {
    #[serde(flatten)]
    pub client: Client,
    pub client_secret: String,
}

// ---------------------------------------------------------------------------------------------
// Devices

/// `POST /v1/devices`: one device, by hardware hash or Linux identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceCreate {
    /// The 4K hardware hash, base64 (whitespace and missing padding are repaired).
    pub hardware_hash: Option<String>,
    pub identity: Option<Identity>,
    /// Checked against the hash; the hash's serial is stored.
    pub serial_number: Option<String>,
    pub product_key: Option<String>,
    pub group_tag: Option<String>,
    pub purchase_order_id: Option<String>,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    /// A public JWK (Ed25519 or P-256) the device must prove possession of.
    #[schema(value_type = Option<Object>)]
    pub device_public_key: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AssignmentStatus {
    AssignedInSync,
    NotAssigned,
}

/// A registered device (Graph's `windowsAutopilotDeviceIdentity`, names per api.md).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The ZTDId.
    pub id: Uuid,
    pub serial_number: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub product_key: Option<String>,
    pub group_tag: Option<String>,
    pub purchase_order_id: Option<String>,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub device_ownership: String,
    pub device_category: Option<String>,
    pub account_enabled: bool,
    pub extension_attributes: BTreeMap<String, String>,
    pub system_labels: Vec<String>,
    #[serde(rename = "deviceOSType")]
    pub device_os_type: String,
    #[serde(rename = "deviceOSVersion")]
    pub device_os_version: Option<String>,
    pub enrollment_state: String,
    pub enrollment_profile_name: Option<String>,
    /// The computer name Unbox gave this device at its first download, if any.
    pub assigned_device_name: Option<String>,
    pub last_contacted_at: Option<DateTime<Utc>>,
    pub deployment_profile_assignment_status: AssignmentStatus,
    pub deployment_profile_id: Option<Uuid>,
    pub deployment_profile_assigned_at: Option<DateTime<Utc>>,
    pub has_device_key: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `PATCH /v1/devices/{id}`: a JSON merge patch of these fields (`null` clears one).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct DevicePatch {
    pub group_tag: Option<String>,
    pub purchase_order_id: Option<String>,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    /// `Company` or `Personal`.
    pub device_ownership: Option<String>,
    pub device_category: Option<String>,
    pub account_enabled: Option<bool>,
    /// `extensionAttribute1` … `extensionAttribute15`.
    pub extension_attributes: Option<BTreeMap<String, String>>,
    pub system_labels: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------------
// Profiles and assignments

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub id: Uuid,
    #[serde(flatten)]
    pub settings: ProfileSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AssignmentMode {
    Include,
    Exclude,
}

impl AssignmentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Include => "include",
            Self::Exclude => "exclude",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum AssignmentTarget {
    #[serde(rename_all = "camelCase")]
    Group {
        group_id: Uuid,
    },
    AllDevices,
    #[serde(rename_all = "camelCase")]
    Device {
        device_id: Uuid,
    },
}

impl AssignmentTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Group { .. } => "group",
            Self::AllDevices => "allDevices",
            Self::Device { .. } => "device",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignmentCreate {
    pub target: AssignmentTarget,
    pub mode: AssignmentMode,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub id: Uuid,
    pub profile_id: Uuid,
    pub target: AssignmentTarget,
    pub mode: AssignmentMode,
    pub created_at: DateTime<Utc>,
    /// Things worth knowing that did not stop the assignment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Groups

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum MembershipType {
    #[default]
    Static,
    Dynamic,
}

impl MembershipType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Dynamic => "dynamic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum ProcessingState {
    #[default]
    On,
    Paused,
}

impl ProcessingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Paused => "paused",
        }
    }
}

/// Where the group's stored membership stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingStatus {
    /// `evaluating` (a recompute is under way), `updateComplete`, or `paused` (a paused
    /// dynamic group keeps its last stored membership).
    pub status: String,
    /// The time the stored membership was last known to be complete.
    pub as_of: Option<DateTime<Utc>>,
    pub member_count: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: Uuid,
    pub display_name: String,
    pub description: Option<String>,
    pub membership_type: MembershipType,
    pub membership_rule: Option<String>,
    pub membership_rule_processing_state: ProcessingState,
    pub processing_status: ProcessingStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupCreate {
    pub display_name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub membership_type: MembershipType,
    #[serde(default)]
    pub membership_rule: Option<String>,
    #[serde(default)]
    pub membership_rule_processing_state: ProcessingState,
}

/// `PATCH /v1/groups/{id}`: a JSON merge patch of these fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct GroupPatch {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub membership_rule: Option<String>,
    pub membership_rule_processing_state: Option<ProcessingState>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MembersAdd {
    pub device_ids: Vec<Uuid>,
}

/// A page of a group's members, and how fresh the stored membership is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberPage {
    pub items: Vec<GroupMember>,
    pub next_cursor: Option<String>,
    pub processing_status: ProcessingStatus,
}

/// A member of a group, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    pub device_id: Uuid,
    pub serial_number: String,
    pub display_name: Option<String>,
    pub added_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------
// Audit log

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `client`, `partner`, `external` or `system`.
    pub actor_kind: String,
    pub actor_id: Option<String>,
    /// `device.create`, `profile.update`, …
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The device call

/// `POST /device/v1/profile`: the booting device names itself by hardware identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceProfileRequest {
    pub hardware_hash: Option<String>,
    pub identity: Option<Identity>,
    /// Proof of possession of the device's registered key.
    pub proof: Option<DeviceProof>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceProof {
    pub nonce: String,
    /// base64url of the signature over the nonce's UTF-8 bytes.
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentHandle {
    pub id: Uuid,
    /// Bearer token for `POST /device/v1/events` of this deployment only.
    pub token: String,
}

/// What a device receives: its `AutopilotConfigurationFile.json` and what OOBE shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProfileResponse {
    #[schema(value_type = Object)]
    pub profile: serde_json::Value,
    pub deployment: DeploymentHandle,
    pub branding: Branding,
    pub enrollment_status_page: crate::profile::EnrollmentStatusPage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_join: Option<crate::profile::DomainJoin>,
}
