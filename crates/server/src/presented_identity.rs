//! The hardware identity a request presents: a Windows hash or a Linux identity, decoded,
//! validated and normalised, with its keys.

use unbox_db::devices::Claim;
use unbox_domain::hardware_hash::{self, HardwareHash, HashError};
use unbox_domain::identity::{Identity, IdentityKeys};

use crate::error::ApiError;

#[derive(Debug)]
pub struct Presented {
    /// For a lookup ([`for_lookup`]) of a hash, only the values its strong keys are made of.
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
    presented(hardware_hash, identity, Purpose::Registration)
}

/// [`from_request`] for a device looking itself up, with the same validation and errors.
/// Only what a lookup needs is kept: no decoded hash and no OS version, and a hash's identity
/// holds just the values of its strong keys (manufacturer, model, serial, TPM digest).
pub fn for_lookup(
    hardware_hash: Option<&str>,
    identity: Option<&Identity>,
) -> Result<Presented, ApiError> {
    presented(hardware_hash, identity, Purpose::Lookup)
}

#[derive(PartialEq)]
enum Purpose {
    Registration,
    Lookup,
}

fn presented(
    hardware_hash: Option<&str>,
    identity: Option<&Identity>,
    purpose: Purpose,
) -> Result<Presented, ApiError> {
    match (hardware_hash, identity) {
        (Some(text), None) if purpose == Purpose::Lookup => {
            let values = hardware_hash::decode_for_lookup(text).map_err(|e| invalid_hash(&e))?;
            let os_type = values.os_type.as_str();
            let identity = Identity::from_lookup_values(values);
            let keys = identity.strong_keys();
            Ok(Presented {
                os_type,
                os_version: None,
                identity,
                keys,
                hash: None,
            })
        }
        (Some(text), None) => {
            let hash = hardware_hash::decode(text).map_err(|e| invalid_hash(&e))?;
            let identity = Identity::from_hash(&hash);
            let keys = identity.strong_keys();
            Ok(Presented {
                os_type: hash.os_type().as_str(),
                os_version: hash.os_version().map(str::to_owned),
                identity,
                keys,
                hash: Some(hash),
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
