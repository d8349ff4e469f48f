//! Timestamps as the API shows them: RFC 3339, UTC, exactly millisecond precision.
//!
//! Times are truncated to milliseconds when they are made, so what is stored, what
//! is compared and what is sent are the same value.

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serializer};

/// Now, truncated to the millisecond.
pub fn now() -> Timestamp {
    let ms = Timestamp::now().as_millisecond();
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// `2026-11-23T06:21:28.123Z`.
pub fn format(ts: Timestamp) -> String {
    ts.strftime(FORMAT).to_string()
}

/// Written straight into the output, without a `String` in between.
pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&ts.strftime(FORMAT))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// The same, for optional timestamps (`deleted_at`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => s.collect_str(&ts.strftime(FORMAT)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_with_milliseconds_and_z() {
        let ts = jiff::Timestamp::from_millisecond(1_700_000_000_007).unwrap();
        assert_eq!(super::format(ts), "2023-11-14T22:13:20.007Z");
    }
}
