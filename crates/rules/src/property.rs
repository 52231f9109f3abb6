//! The device properties a rule can read (rules.md, "Device properties").

use std::fmt;

/// A device property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    /// `deviceId`: the device's registration id (its ZTDId).
    DeviceId,
    /// `objectId`: the device's registration id (its ZTDId).
    ObjectId,
    /// `displayName`: the per-device computer name, if set.
    DisplayName,
    /// `deviceManufacturer`: from the hardware identity.
    DeviceManufacturer,
    /// `deviceModel`: from the hardware identity.
    DeviceModel,
    /// `deviceOSType`: `Windows` or `Linux`.
    DeviceOsType,
    /// `deviceOSVersion`: the OS build in the hash, if known.
    DeviceOsVersion,
    /// `deviceOwnership`: `Company` or `Personal`.
    DeviceOwnership,
    /// `deviceCategory`: set by admins.
    DeviceCategory,
    /// `enrollmentProfileName`: the profile the device last downloaded; null before its first boot.
    EnrollmentProfileName,
    /// `serialNumber`.
    SerialNumber,
    /// `groupTag`.
    GroupTag,
    /// `purchaseOrderId`.
    PurchaseOrderId,
    /// `userPrincipalName`.
    UserPrincipalName,
    /// `extensionAttribute1` … `extensionAttribute15`. Only 1..=15 exist: [`Property::lookup`]
    /// never makes another, and other numbers name no property.
    ExtensionAttribute(u8),
    /// `accountEnabled`: the only boolean property.
    AccountEnabled,
    /// `devicePhysicalIds`: a collection of `[ZTDId]:…`, `[OrderID]:…`, `[PurchaseOrderId]:…`.
    DevicePhysicalIds,
    /// `systemLabels`: a collection set by admins.
    SystemLabels,
}

/// The type of a property, which decides the operators and values it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyType {
    /// A string, possibly null.
    String,
    /// `true`, `false` or null.
    Boolean,
    /// A list of strings, never null.
    Collection,
}

/// The number of properties, [`Property::ALL`]`.len()`.
pub const PROPERTY_COUNT: usize = 32;

const EXTENSION_ATTRIBUTE_NAMES: [&str; 15] = [
    "extensionAttribute1",
    "extensionAttribute2",
    "extensionAttribute3",
    "extensionAttribute4",
    "extensionAttribute5",
    "extensionAttribute6",
    "extensionAttribute7",
    "extensionAttribute8",
    "extensionAttribute9",
    "extensionAttribute10",
    "extensionAttribute11",
    "extensionAttribute12",
    "extensionAttribute13",
    "extensionAttribute14",
    "extensionAttribute15",
];

impl Property {
    /// Every property, in the order of rules.md's table.
    pub const ALL: [Property; PROPERTY_COUNT] = [
        Property::DeviceId,
        Property::ObjectId,
        Property::DisplayName,
        Property::DeviceManufacturer,
        Property::DeviceModel,
        Property::DeviceOsType,
        Property::DeviceOsVersion,
        Property::DeviceOwnership,
        Property::DeviceCategory,
        Property::EnrollmentProfileName,
        Property::SerialNumber,
        Property::GroupTag,
        Property::PurchaseOrderId,
        Property::UserPrincipalName,
        Property::ExtensionAttribute(1),
        Property::ExtensionAttribute(2),
        Property::ExtensionAttribute(3),
        Property::ExtensionAttribute(4),
        Property::ExtensionAttribute(5),
        Property::ExtensionAttribute(6),
        Property::ExtensionAttribute(7),
        Property::ExtensionAttribute(8),
        Property::ExtensionAttribute(9),
        Property::ExtensionAttribute(10),
        Property::ExtensionAttribute(11),
        Property::ExtensionAttribute(12),
        Property::ExtensionAttribute(13),
        Property::ExtensionAttribute(14),
        Property::ExtensionAttribute(15),
        Property::AccountEnabled,
        Property::DevicePhysicalIds,
        Property::SystemLabels,
    ];

    /// The canonical camelCase name, as in rules.md (`deviceOSType`, `extensionAttribute3`).
    /// An `ExtensionAttribute` outside 1..=15 is named `extensionAttribute`.
    pub fn name(&self) -> &'static str {
        match self {
            Property::DeviceId => "deviceId",
            Property::ObjectId => "objectId",
            Property::DisplayName => "displayName",
            Property::DeviceManufacturer => "deviceManufacturer",
            Property::DeviceModel => "deviceModel",
            Property::DeviceOsType => "deviceOSType",
            Property::DeviceOsVersion => "deviceOSVersion",
            Property::DeviceOwnership => "deviceOwnership",
            Property::DeviceCategory => "deviceCategory",
            Property::EnrollmentProfileName => "enrollmentProfileName",
            Property::SerialNumber => "serialNumber",
            Property::GroupTag => "groupTag",
            Property::PurchaseOrderId => "purchaseOrderId",
            Property::UserPrincipalName => "userPrincipalName",
            Property::ExtensionAttribute(number) => usize::from(*number)
                .checked_sub(1)
                .and_then(|index| EXTENSION_ATTRIBUTE_NAMES.get(index))
                .copied()
                .unwrap_or("extensionAttribute"),
            Property::AccountEnabled => "accountEnabled",
            Property::DevicePhysicalIds => "devicePhysicalIds",
            Property::SystemLabels => "systemLabels",
        }
    }

    /// The property named `name`, compared case-insensitively (`DEVICEmodel` is `deviceModel`).
    pub fn lookup(name: &str) -> Option<Property> {
        Property::ALL
            .into_iter()
            .find(|property| property.name().eq_ignore_ascii_case(name))
    }

    /// The property's type.
    pub fn property_type(&self) -> PropertyType {
        match self {
            Property::AccountEnabled => PropertyType::Boolean,
            Property::DevicePhysicalIds | Property::SystemLabels => PropertyType::Collection,
            _ => PropertyType::String,
        }
    }

    /// The property's position in [`Property::ALL`]; `None` for an `ExtensionAttribute`
    /// outside 1..=15.
    #[inline]
    pub fn index(&self) -> Option<usize> {
        // A plain match, not a search: devices call this on every property read.
        let index = match self {
            Property::DeviceId => 0,
            Property::ObjectId => 1,
            Property::DisplayName => 2,
            Property::DeviceManufacturer => 3,
            Property::DeviceModel => 4,
            Property::DeviceOsType => 5,
            Property::DeviceOsVersion => 6,
            Property::DeviceOwnership => 7,
            Property::DeviceCategory => 8,
            Property::EnrollmentProfileName => 9,
            Property::SerialNumber => 10,
            Property::GroupTag => 11,
            Property::PurchaseOrderId => 12,
            Property::UserPrincipalName => 13,
            Property::ExtensionAttribute(number @ 1..=15) => 13 + usize::from(*number),
            Property::ExtensionAttribute(_) => return None,
            Property::AccountEnabled => 29,
            Property::DevicePhysicalIds => 30,
            Property::SystemLabels => 31,
        };
        Some(index)
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Property {
    type Err = String;

    /// Case-insensitive, as [`Property::lookup`].
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Property::lookup(name).ok_or_else(|| format!("`{name}` is not a device property"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_position_in_all() {
        for (position, property) in Property::ALL.iter().enumerate() {
            assert_eq!(property.index(), Some(position), "{property}");
        }
        assert_eq!(Property::ExtensionAttribute(0).index(), None);
        assert_eq!(Property::ExtensionAttribute(16).index(), None);
    }

    #[test]
    fn lookup_is_case_insensitive_and_round_trips() {
        for property in Property::ALL {
            assert_eq!(Property::lookup(property.name()), Some(property));
            assert_eq!(
                Property::lookup(&property.name().to_ascii_uppercase()),
                Some(property)
            );
        }
        assert_eq!(
            Property::lookup("devicePhysicalIDs"),
            Some(Property::DevicePhysicalIds)
        );
        assert_eq!(Property::lookup("extensionAttribute16"), None);
        assert_eq!(Property::lookup("department"), None);
    }
}
