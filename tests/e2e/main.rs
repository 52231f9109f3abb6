//! End-to-end tests: the real server on a real PostgreSQL (a fresh database per test),
//! driven over HTTP. One binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod deployments;
mod device_protocol;
mod devices;
mod dynamic_groups;
mod export;
mod external_issuer;
mod imports;
mod isolation;
mod openapi;
mod ops;
mod partners;
mod problems;
mod profiles;
mod proof;
mod rate_limit;
mod walkthrough;
