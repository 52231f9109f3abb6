//! The subcommands of `unbox`, one module each.
//!
//! A subcommand's `run` returns the exit code it wants (`0`, or `2` for a refused input such as
//! an invalid rule) or an error, which `main` prints on one line to stderr with exit code 1.

pub mod rules;
