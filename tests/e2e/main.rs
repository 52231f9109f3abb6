//! End-to-end tests: the real server on a real PostgreSQL (a fresh database per test),
//! driven over HTTP. One binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod devices;
mod external_issuer;
mod isolation;
mod openapi;
mod ops;
mod problems;
mod profiles;
mod walkthrough;
