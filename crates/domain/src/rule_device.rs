//! A registered device as membership rules see it (rules.md, "Device properties").

use std::collections::BTreeMap;

use unbox_rules::{DeviceProperties, PROPERTY_COUNT, Property};
use uuid::Uuid;

/// The facts of a device that rules can read, owned and indexed for evaluation without
/// allocation.
#[derive(Debug, Clone)]
pub struct RuleDevice {
    strings: [Option<String>; PROPERTY_COUNT],
    account_enabled: bool,
    physical_ids: Vec<String>,
    system_labels: Vec<String>,
}

/// The registration fields a [`RuleDevice`] is built from.
#[derive(Debug, Clone, Default)]
pub struct RuleDeviceFields {
    pub id: Uuid,
    pub display_name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub os_type: Option<String>,
    pub os_version: Option<String>,
    pub ownership: Option<String>,
    pub category: Option<String>,
    pub enrollment_profile_name: Option<String>,
    pub serial_number: Option<String>,
    pub group_tag: Option<String>,
    pub purchase_order_id: Option<String>,
    pub user_principal_name: Option<String>,
    /// `extensionAttribute1` … `extensionAttribute15`; other keys are ignored.
    pub extension_attributes: BTreeMap<String, String>,
    pub account_enabled: bool,
    pub system_labels: Vec<String>,
}

impl RuleDevice {
    pub fn new(fields: RuleDeviceFields) -> RuleDevice {
        let mut strings: [Option<String>; PROPERTY_COUNT] = std::array::from_fn(|_| None);
        let mut set = |property: Property, value: Option<String>| {
            if let Some(index) = property.index() {
                strings[index] = value;
            }
        };
        let id = fields.id.to_string();
        set(Property::DeviceId, Some(id.clone()));
        set(Property::ObjectId, Some(id.clone()));
        set(Property::DisplayName, fields.display_name);
        set(Property::DeviceManufacturer, fields.manufacturer);
        set(Property::DeviceModel, fields.model);
        set(Property::DeviceOsType, fields.os_type);
        set(Property::DeviceOsVersion, fields.os_version);
        set(Property::DeviceOwnership, fields.ownership);
        set(Property::DeviceCategory, fields.category);
        set(
            Property::EnrollmentProfileName,
            fields.enrollment_profile_name,
        );
        set(Property::SerialNumber, fields.serial_number);
        set(Property::GroupTag, fields.group_tag.clone());
        set(Property::PurchaseOrderId, fields.purchase_order_id.clone());
        set(Property::UserPrincipalName, fields.user_principal_name);
        for (name, value) in fields.extension_attributes {
            let number = name
                .strip_prefix("extensionAttribute")
                .and_then(|n| n.parse::<u8>().ok());
            if let Some(number) = number.filter(|n| (1..=15).contains(n)) {
                set(Property::ExtensionAttribute(number), Some(value));
            }
        }
        // As Entra shows Autopilot devices: the ZTDId, and the tag and order when set.
        let mut physical_ids = vec![format!("[ZTDId]:{id}")];
        if let Some(tag) = fields.group_tag.filter(|t| !t.is_empty()) {
            physical_ids.push(format!("[OrderID]:{tag}"));
        }
        if let Some(po) = fields.purchase_order_id.filter(|p| !p.is_empty()) {
            physical_ids.push(format!("[PurchaseOrderId]:{po}"));
        }
        RuleDevice {
            strings,
            account_enabled: fields.account_enabled,
            physical_ids,
            system_labels: fields.system_labels,
        }
    }
}

impl DeviceProperties for RuleDevice {
    fn string(&self, property: Property) -> Option<&str> {
        property.index().and_then(|i| self.strings[i].as_deref())
    }

    fn boolean(&self, property: Property) -> Option<bool> {
        (property == Property::AccountEnabled).then_some(self.account_enabled)
    }

    fn collection(&self, property: Property) -> &[String] {
        match property {
            Property::DevicePhysicalIds => &self.physical_ids,
            Property::SystemLabels => &self.system_labels,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn physical_ids_and_properties_follow_the_registration() {
        let id = Uuid::from_u128(7);
        let device = RuleDevice::new(RuleDeviceFields {
            id,
            group_tag: Some("Sales".into()),
            serial_number: Some("ABC".into()),
            extension_attributes: [
                ("extensionAttribute3".to_owned(), "emea".to_owned()),
                ("bogus".to_owned(), "x".to_owned()),
            ]
            .into_iter()
            .collect(),
            account_enabled: true,
            ..Default::default()
        });
        assert_eq!(
            device.collection(Property::DevicePhysicalIds),
            [format!("[ZTDId]:{id}"), "[OrderID]:Sales".to_owned()]
        );
        assert_eq!(device.string(Property::ExtensionAttribute(3)), Some("emea"));
        assert_eq!(
            device.string(Property::DeviceId),
            Some(id.to_string().as_str())
        );
        assert_eq!(device.string(Property::PurchaseOrderId), None);
        assert_eq!(device.boolean(Property::AccountEnabled), Some(true));
        let rule = unbox_rules::check(r#"device.devicePhysicalIds -any (_ -eq "[OrderID]:Sales") -and device.extensionAttribute3 -eq "EMEA""#)
            .rule
            .unwrap();
        assert!(rule.evaluate(&device));
    }
}
