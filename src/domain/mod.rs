//! The pure heart of orgd: organizations, their field rules, patches and diffs,
//! the hierarchy rules, who may change what, and the audit events a change makes.
//!
//! Nothing here knows about HTTP or SQL; every function is deterministic given its
//! inputs (the clock and random ids are passed in by the caller or made at the edge),
//! which is what lets the property tests and the fuzzers drive it directly.

pub mod access;
pub mod apikey;
pub mod cursor;
pub mod event;
pub mod fields;
pub mod hierarchy;
pub mod ids;
pub mod members;
pub mod org;
pub mod patch;
pub mod problems;
pub mod secrets_key;
pub mod time;
pub mod webhook;
