//! How a rule reads a device: the [`DeviceProperties`] trait, and [`JsonDevice`], a device
//! given as a JSON object.

use serde_json::Value;

use crate::property::{PROPERTY_COUNT, Property, PropertyType};

/// A device's properties, as a rule reads them. Implement it over your own device type; the
/// evaluator calls it for every property a comparison reads, so keep it cheap (no allocation).
pub trait DeviceProperties {
    /// The value of a string property; `None` when it is null or absent. Called only for
    /// properties whose [`PropertyType`] is `String`.
    fn string(&self, property: Property) -> Option<&str>;

    /// The value of a boolean property (`accountEnabled`); `None` when null or absent.
    fn boolean(&self, property: Property) -> Option<bool>;

    /// The elements of a collection property (`devicePhysicalIds`, `systemLabels`); a
    /// collection is never null, an absent one is empty.
    fn collection(&self, property: Property) -> &[String];
}

impl<T: DeviceProperties + ?Sized> DeviceProperties for &T {
    fn string(&self, property: Property) -> Option<&str> {
        (**self).string(property)
    }

    fn boolean(&self, property: Property) -> Option<bool> {
        (**self).boolean(property)
    }

    fn collection(&self, property: Property) -> &[String] {
        (**self).collection(property)
    }
}

/// A device given as a JSON object whose members are device properties named as in rules.md
/// (case-insensitively), as in the conformance file and the CLI's `--device` file:
///
/// ```json
/// {"deviceModel": "Latitude 7440", "accountEnabled": true, "devicePhysicalIds": ["[OrderID]:Sales"]}
/// ```
///
/// An absent member or JSON `null` is a null value (an empty collection for collections).
/// Members that name no device property are ignored, so a device record with other fields can
/// be used as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonDevice {
    /// Indexed by [`Property::index`]; only string properties are stored here.
    strings: Vec<Option<String>>,
    account_enabled: Option<bool>,
    device_physical_ids: Vec<String>,
    system_labels: Vec<String>,
}

impl JsonDevice {
    /// Reads a device from a JSON object. Fails when `value` is not an object, when a property
    /// has a value of the wrong type (a string property must be a string or null,
    /// `accountEnabled` a boolean or null, a collection an array of strings or null), or when
    /// a property is given twice under names that differ only in case.
    pub fn from_value(value: &Value) -> Result<JsonDevice, String> {
        let Value::Object(members) = value else {
            return Err(format!(
                "a device must be a JSON object of properties, not {}",
                json_type(value)
            ));
        };
        let mut device = JsonDevice {
            strings: vec![None; PROPERTY_COUNT],
            ..JsonDevice::default()
        };
        let mut seen = [false; PROPERTY_COUNT];
        for (key, value) in members {
            let Some(property) = Property::lookup(key) else {
                continue;
            };
            let Some(index) = property.index() else {
                continue;
            };
            if let Some(already) = seen.get_mut(index) {
                if *already {
                    return Err(format!(
                        "property `{}` is given twice (names are case-insensitive)",
                        property.name()
                    ));
                }
                *already = true;
            }
            let wrong_type = |expected: &str| {
                format!(
                    "property `{key}` must be {expected}, not {}",
                    json_type(value)
                )
            };
            match property.property_type() {
                PropertyType::String => {
                    let text = match value {
                        Value::Null => None,
                        Value::String(text) => Some(text.clone()),
                        _ => return Err(wrong_type("a string or null")),
                    };
                    if let Some(slot) = device.strings.get_mut(index) {
                        *slot = text;
                    }
                }
                PropertyType::Boolean => {
                    device.account_enabled = match value {
                        Value::Null => None,
                        Value::Bool(flag) => Some(*flag),
                        _ => return Err(wrong_type("true, false or null")),
                    };
                }
                PropertyType::Collection => {
                    let elements = match value {
                        Value::Null => Vec::new(),
                        Value::Array(elements) => elements
                            .iter()
                            .map(|element| match element {
                                Value::String(text) => Ok(text.clone()),
                                other => Err(format!(
                                    "property `{key}` must be an array of strings, but holds {}",
                                    json_type(other)
                                )),
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                        _ => return Err(wrong_type("an array of strings or null")),
                    };
                    if property == Property::DevicePhysicalIds {
                        device.device_physical_ids = elements;
                    } else {
                        device.system_labels = elements;
                    }
                }
            }
        }
        Ok(device)
    }

    /// Parses JSON text and reads the device it holds, as [`JsonDevice::from_value`].
    pub fn from_json(text: &str) -> Result<JsonDevice, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|error| format!("invalid JSON: {error}"))?;
        JsonDevice::from_value(&value)
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl DeviceProperties for JsonDevice {
    fn string(&self, property: Property) -> Option<&str> {
        self.strings.get(property.index()?)?.as_deref()
    }

    fn boolean(&self, property: Property) -> Option<bool> {
        match property {
            Property::AccountEnabled => self.account_enabled,
            _ => None,
        }
    }

    fn collection(&self, property: Property) -> &[String] {
        match property {
            Property::DevicePhysicalIds => &self.device_physical_ids,
            Property::SystemLabels => &self.system_labels,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn reads_properties_case_insensitively() {
        let device = JsonDevice::from_value(&json!({
            "DEVICEMODEL": "20XW",
            "displayName": null,
            "accountEnabled": false,
            "devicePhysicalIDs": ["[ZTDId]:x"],
            "extensionAttribute15": "z",
            "somethingElse": 42,
        }))
        .unwrap();
        assert_eq!(device.string(Property::DeviceModel), Some("20XW"));
        assert_eq!(device.string(Property::DisplayName), None);
        assert_eq!(device.string(Property::GroupTag), None);
        assert_eq!(device.string(Property::ExtensionAttribute(15)), Some("z"));
        assert_eq!(device.string(Property::ExtensionAttribute(16)), None);
        assert_eq!(device.boolean(Property::AccountEnabled), Some(false));
        assert_eq!(
            device.collection(Property::DevicePhysicalIds),
            ["[ZTDId]:x".to_owned()]
        );
        assert!(device.collection(Property::SystemLabels).is_empty());
    }

    #[test]
    fn refuses_wrong_types() {
        for bad in [
            json!([]),
            json!("x"),
            json!({"accountEnabled": "true"}),
            json!({"deviceModel": 7}),
            json!({"systemLabels": "a"}),
            json!({"systemLabels": ["a", 1]}),
            json!({"deviceModel": "a", "DeviceModel": "b"}),
        ] {
            assert!(JsonDevice::from_value(&bad).is_err(), "{bad}");
        }
        assert!(JsonDevice::from_json("{").is_err());
    }
}
