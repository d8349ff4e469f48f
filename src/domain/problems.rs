//! Field-level problems: what is wrong with one value, and where (a JSON Pointer).
//!
//! Parsing and validation collect these instead of stopping at the first, so a
//! client learns everything wrong with its request in one round trip.

use serde::Serialize;

/// One problem with one part of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// RFC 6901 pointer into the request body (or the query parameter's name as `/name`).
    pub pointer: String,
    /// Stable snake_case code a program can branch on.
    pub code: &'static str,
    /// A sentence for the human reading the response.
    pub message: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            code,
            message: message.into(),
        }
    }
}

/// What a single value's parser says is wrong with it; the caller knows where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn at(self, pointer: impl Into<String>) -> FieldError {
        FieldError::new(pointer, self.code, self.message)
    }
}

/// Escapes one reference token for a JSON Pointer (RFC 6901 §3).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// `/parent/child`, escaping the child.
pub fn pointer(parent: &str, child: &str) -> String {
    format!("{parent}/{}", escape_token(child))
}
