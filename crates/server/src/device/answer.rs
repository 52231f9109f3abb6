//! The profile call's answer: [`ProfileResponseBody`] (what the OpenAPI document describes as
//! `DeviceProfileResponse`), and [`AnswerTemplate`], the same JSON rendered once per profile and
//! tenant with holes where each download's own values go.
//!
//! In a boot storm nearly every answer is the same 2 KB but for a deployment id, a device id, a
//! name, a time and a token; serializing the whole document field by field (escaping every
//! string, formatting the numbers and the embedded server-data document) was a tenth of the
//! call's own work. The template is made by serializing the body itself, with sentinel values
//! that cannot occur elsewhere, and cutting it where the sentinels are: the two renderings
//! cannot drift apart, and a test holds them to the same bytes.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use unbox_domain::api::Branding;
use unbox_domain::profile::{DomainJoin, EnrollmentStatusPage, JoinType, ProfileSettings};
use unbox_domain::profile_document::{
    Document, OnlineFacts, TenantFacts as DocumentTenant, online_document,
};
use uuid::Uuid;

use crate::device::cache::TenantFacts;

/// The profile call's answer, borrowed from the cache and serialized straight into the response.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileResponseBody<'a> {
    profile: Document<'a>,
    deployment: DeploymentHandleBody<'a>,
    branding: &'a Branding,
    enrollment_status_page: &'a EnrollmentStatusPage,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain_join: Option<&'a DomainJoin>,
}

#[derive(Serialize)]
struct DeploymentHandleBody<'a> {
    id: Uuid,
    token: &'a str,
}

/// What one download puts into the answer: the document's online facts and the deployment's
/// token.
#[derive(Debug, Clone, Copy)]
pub struct Download<'a> {
    pub facts: OnlineFacts<'a>,
    /// A compact JWS: base64url and dots, nothing a JSON string escapes.
    pub token: &'a str,
}

/// The answer for a profile, tenant and download.
pub fn body<'a>(
    profile_id: Uuid,
    settings: &'a ProfileSettings,
    tenant: &'a TenantFacts,
    download: Download<'a>,
) -> ProfileResponseBody<'a> {
    ProfileResponseBody {
        profile: online_document(
            profile_id,
            settings,
            DocumentTenant {
                id: tenant.id,
                domain: &tenant.domain,
            },
            download.facts,
        ),
        deployment: DeploymentHandleBody {
            id: download.facts.deployment_id,
            token: download.token,
        },
        branding: &tenant.branding,
        enrollment_status_page: &settings.enrollment_status_page,
        domain_join: if settings.join_type == JoinType::Hybrid {
            settings.domain_join.as_ref()
        } else {
            None
        },
    }
}

/// Where a download's own value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hole {
    DeploymentId,
    DeviceId,
    /// The name as a JSON string, quotes included.
    DeviceName,
    /// `PolicyDownloadDate`'s time, inside its quotes.
    DownloadedAt,
    Token,
}

/// One rendering: `text`, with each hole's value to be written at its offset.
#[derive(Debug)]
struct Cut {
    text: String,
    holes: Vec<(usize, Hole)>,
}

/// A profile and tenant's answer, rendered once. Two cuts: with a device name and without one.
#[derive(Debug)]
pub struct AnswerTemplate {
    named: Cut,
    unnamed: Cut,
}

/// The sentinels: random per process (the ids, the token, the name) or found by the key that
/// precedes them (the time), so that nothing an administrator writes into a profile can be
/// taken for one. A string's quotes inside a JSON string are escaped, so `"Key":"` occurs only
/// where the serializer wrote it.
struct Sentinels {
    deployment_id: Uuid,
    device_id: Uuid,
    device_name: String,
    token: String,
    downloaded_at: DateTime<Utc>,
}

impl Sentinels {
    fn new() -> Self {
        let word = || Uuid::new_v4().simple().to_string();
        Self {
            deployment_id: Uuid::new_v4(),
            device_id: Uuid::new_v4(),
            device_name: format!("unboxname{}", word()),
            token: format!("unboxtoken{}", word()),
            downloaded_at: DateTime::UNIX_EPOCH,
        }
    }
}

const DOWNLOAD_DATE_KEY: &str = "\"PolicyDownloadDate\":\"";

impl AnswerTemplate {
    pub fn new(profile_id: Uuid, settings: &ProfileSettings, tenant: &TenantFacts) -> Self {
        let sentinels = Sentinels::new();
        Self {
            named: Cut::new(profile_id, settings, tenant, &sentinels, true),
            unnamed: Cut::new(profile_id, settings, tenant, &sentinels, false),
        }
    }

    /// Appends the answer for `download` to `out`: the same bytes as serializing [`body`].
    pub fn render(&self, download: &Download<'_>, out: &mut Vec<u8>) {
        let facts = &download.facts;
        let cut = if facts.device_name.is_some() {
            &self.named
        } else {
            &self.unnamed
        };
        let mut from = 0;
        for &(at, hole) in &cut.holes {
            out.extend_from_slice(&cut.text.as_bytes()[from..at]);
            match hole {
                Hole::DeploymentId => push_uuid(out, facts.deployment_id),
                Hole::DeviceId => push_uuid(out, facts.device_id),
                Hole::DeviceName => push_json_string(out, facts.device_name.unwrap_or("")),
                Hole::DownloadedAt => out.extend_from_slice(
                    facts
                        .downloaded_at
                        .to_rfc3339_opts(SecondsFormat::Secs, true)
                        .as_bytes(),
                ),
                Hole::Token => {
                    debug_assert!(!download.token.contains(['"', '\\']));
                    out.extend_from_slice(download.token.as_bytes());
                }
            }
            from = at;
        }
        out.extend_from_slice(&cut.text.as_bytes()[from..]);
    }
}

impl Cut {
    fn new(
        profile_id: Uuid,
        settings: &ProfileSettings,
        tenant: &TenantFacts,
        sentinels: &Sentinels,
        named: bool,
    ) -> Self {
        let rendered = serde_json::to_string(&body(
            profile_id,
            settings,
            tenant,
            Download {
                facts: OnlineFacts {
                    deployment_id: sentinels.deployment_id,
                    device_id: sentinels.device_id,
                    device_name: named.then_some(sentinels.device_name.as_str()),
                    downloaded_at: sentinels.downloaded_at,
                },
                token: &sentinels.token,
            },
        ))
        // Serializing borrowed strings, numbers and ids into a String cannot fail.
        .unwrap_or_default();
        let date = format!(
            "{DOWNLOAD_DATE_KEY}{}",
            sentinels
                .downloaded_at
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        // (what the text holds, what it becomes, how much of the match the hole replaces,
        // skipping its first `keep` bytes)
        let patterns: [(String, Hole, usize); 5] = [
            (sentinels.deployment_id.to_string(), Hole::DeploymentId, 0),
            (sentinels.device_id.to_string(), Hole::DeviceId, 0),
            (
                format!("\"{}\"", sentinels.device_name),
                Hole::DeviceName,
                0,
            ),
            (date, Hole::DownloadedAt, DOWNLOAD_DATE_KEY.len()),
            (sentinels.token.clone(), Hole::Token, 0),
        ];
        let mut found: Vec<(usize, usize, Hole)> = Vec::new();
        for (pattern, hole, keep) in &patterns {
            for (at, _) in rendered.match_indices(pattern.as_str()) {
                found.push((at + keep, pattern.len() - keep, *hole));
            }
        }
        found.sort_by_key(|&(at, _, _)| at);
        let mut text = String::with_capacity(rendered.len());
        let mut holes = Vec::with_capacity(found.len());
        let mut from = 0;
        for (at, len, hole) in found {
            text.push_str(&rendered[from..at]);
            holes.push((text.len(), hole));
            from = at + len;
        }
        text.push_str(&rendered[from..]);
        Self { text, holes }
    }
}

fn push_uuid(out: &mut Vec<u8>, id: Uuid) {
    let mut buffer = Uuid::encode_buffer();
    out.extend_from_slice(id.hyphenated().encode_lower(&mut buffer).as_bytes());
}

/// `text` as a JSON string, quotes included, escaped as serde_json escapes it. Names need no
/// escaping nearly always: copied as they are.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(serde_json::to_string(text).unwrap_or_default().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use unbox_domain::profile::{DomainJoin, OobeSettings};

    fn tenant() -> TenantFacts {
        TenantFacts {
            id: Uuid::new_v4(),
            domain: "contoso.example".into(),
            branding: Branding::default(),
        }
    }

    fn both(settings: &ProfileSettings, tenant: &TenantFacts, download: Download<'_>) {
        let profile_id = Uuid::new_v4();
        let template = AnswerTemplate::new(profile_id, settings, tenant);
        let mut rendered = Vec::new();
        template.render(&download, &mut rendered);
        let serialized = serde_json::to_vec(&body(profile_id, settings, tenant, download)).unwrap();
        assert_eq!(
            String::from_utf8(rendered).unwrap(),
            String::from_utf8(serialized).unwrap()
        );
    }

    fn download<'a>(name: Option<&'a str>, token: &'a str) -> Download<'a> {
        Download {
            facts: OnlineFacts {
                deployment_id: Uuid::now_v7(),
                device_id: Uuid::new_v4(),
                device_name: name,
                downloaded_at: Utc::now(),
            },
            token,
        }
    }

    #[test]
    fn the_template_renders_what_serializing_renders() {
        let plain = ProfileSettings {
            display_name: "Sales".into(),
            device_name_template: Some("S-%SERIAL%".into()),
            ..Default::default()
        };
        let tenant = tenant();
        both(&plain, &tenant, download(Some("S-ABC123"), "a.b.c"));
        both(&plain, &tenant, download(None, "a.b.c"));
        // A name that needs escaping, and profile text that looks like a hole's key.
        both(
            &plain,
            &tenant,
            download(
                Some("Ünïcode \"quoted\" \\ \u{1}"),
                "eyJhbGciOiJFZERTQSJ9.e30.c2ln",
            ),
        );
        let tricky = ProfileSettings {
            display_name: "\"PolicyDownloadDate\":\"1970-01-01T00:00:00Z".into(),
            locale: "fr-FR".into(),
            oobe: OobeSettings {
                skip_keyboard_selection: true,
                hide_change_account_options: true,
                ..Default::default()
            },
            ..Default::default()
        };
        both(&tricky, &tenant, download(Some("N"), "t"));
    }

    #[test]
    fn hybrid_join_sends_no_name_and_its_domain() {
        let hybrid = ProfileSettings {
            display_name: "Hybrid".into(),
            join_type: JoinType::Hybrid,
            domain_join: Some(DomainJoin {
                domain_name: "corp.example".into(),
                organizational_unit: Some("OU=Devices,DC=corp".into()),
                computer_name_prefix: None,
            }),
            ..Default::default()
        };
        let tenant = tenant();
        both(&hybrid, &tenant, download(Some("ignored"), "a.b.c"));
        both(&hybrid, &tenant, download(None, "a.b.c"));
    }
}
