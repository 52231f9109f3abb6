//! Shared types and pure logic of Unbox: hardware identity (hash decoding, identity keys,
//! matching), CSV registration files, profiles and their rendering into the device's document,
//! device-name templates, profile resolution, and the API types shared by server and CLI.

pub mod hardware_hash;
pub mod identity;
pub mod registration_csv;

pub mod api;
pub mod device_name;
pub mod profile;
pub mod profile_document;
pub mod resolution;
pub mod rule_device;
