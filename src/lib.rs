//! orgd: a self-hosted organization (tenant) management service.
//!
//! # Layout
//!
//! - [`domain`]: pure rules — organizations, field types, patches and diffs, the
//!   hierarchy, permissions, audit events. No HTTP, no SQL.
//! - [`store`]: persistence behind the [`store::Store`] trait (SQLite or PostgreSQL),
//!   with the outbox (feed, webhook queue, consumer cursors) in [`store::outbox`].
//! - [`events`]: the outbox's consumers, run in the background of `orgd serve`:
//!   feed numbering, webhook fan-out and delivery, the NATS JetStream sink.
//! - [`http`]: the axum API — one module per resource, problem+json errors,
//!   extractors for the caller, the body and the preconditions.
//! - [`config`]: the command line and `ORGD_*` environment.
//! - [`server`]: wiring for `orgd serve` (and for the tests, which start the same
//!   server on a random port).
//! - [`keys`]: `orgd keys …` and the bootstrap key.
//! - [`secrets_key_file`]: where the key that seals webhook secrets comes from.

pub mod auth;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod keys;
pub mod log_line;
pub mod log_writer;
pub mod secrets_key_file;
pub mod server;
pub mod store;
