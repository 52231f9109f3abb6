//! The hardware identity a request presents: a Windows hash or a Linux identity, decoded,
//! validated and normalised, with its keys.

use unbox_db::devices::Claim;
use unbox_domain::hardware_hash::{self, HardwareHash, HashError};
use unbox_domain::identity::{Identity, IdentityKeys};

use crate::error::ApiError;

#[derive(Debug)]
pub struct Presented {
    pub identity: Identity,
    /// What the identity is looked up and matched by: its strong keys (the medium and weak
    /// ones decide nothing, so they are not worked out here).
    pub keys: IdentityKeys,
    pub hash: Option<HardwareHash>,
    pub os_type: &'static str,
    pub os_version: Option<String>,
}

impl Presented {
    pub fn claims(&self) -> Vec<Claim> {
        self.keys
            .strong_claims()
            .into_iter()
            .map(|(kind, key)| Claim {
                kind: kind.as_str().to_owned(),
                key,
            })
            .collect()
    }
}

pub fn invalid_hash(error: &HashError) -> ApiError {
    ApiError::unprocessable(HashError::NAME, error.to_string()).with("errorCode", HashError::CODE)
}

/// Decodes `hardwareHash` or normalises `identity` (exactly one must be given).
pub fn from_request(
    hardware_hash: Option<&str>,
    identity: Option<&Identity>,
) -> Result<Presented, ApiError> {
    presented(hardware_hash, identity, KeepHash::Yes)
}

/// [`from_request`] for a device looking itself up: the decoded hash is not kept (its
/// values move into the identity rather than being copied there).
pub fn for_lookup(
    hardware_hash: Option<&str>,
    identity: Option<&Identity>,
) -> Result<Presented, ApiError> {
    presented(hardware_hash, identity, KeepHash::No)
}

#[derive(PartialEq)]
enum KeepHash {
    Yes,
    No,
}

fn presented(
    hardware_hash: Option<&str>,
    identity: Option<&Identity>,
    keep: KeepHash,
) -> Result<Presented, ApiError> {
    match (hardware_hash, identity) {
        (Some(text), None) => {
            let hash = hardware_hash::decode(text).map_err(|e| invalid_hash(&e))?;
            let os_type = hash.os_type().as_str();
            let os_version = hash.os_version().map(str::to_owned);
            let (identity, hash) = if keep == KeepHash::Yes {
                (Identity::from_hash(&hash), Some(hash))
            } else {
                (Identity::from_hash_owned(hash), None)
            };
            let keys = identity.strong_keys();
            Ok(Presented {
                os_type,
                os_version,
                identity,
                keys,
                hash,
            })
        }
        (None, Some(identity)) => {
            let identity = identity.normalized().map_err(|e| {
                ApiError::unprocessable("InvalidIdentity", e.to_string()).with("errorCode", 801)
            })?;
            let keys = identity.strong_keys();
            Ok(Presented {
                identity,
                keys,
                hash: None,
                os_type: "Linux",
                os_version: None,
            })
        }
        (Some(_), Some(_)) => Err(ApiError::unprocessable(
            "InvalidZtdRequestBody",
            "give either hardwareHash or identity, not both",
        )
        .with("errorCode", 801)),
        (None, None) => Err(ApiError::unprocessable(
            "InvalidZtdRequestBody",
            "give the device's hardwareHash (base64) or its identity",
        )
        .with("errorCode", 801)),
    }
}
