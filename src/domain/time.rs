//! Timestamps as the API shows them: RFC 3339, UTC, exactly millisecond precision.
//!
//! Times are truncated to milliseconds when they are made, so what is stored, what
//! is compared and what is sent are the same value.

use jiff::fmt::temporal::DateTimePrinter;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serializer};

/// Now, truncated to the millisecond.
pub fn now() -> Timestamp {
    let ms = Timestamp::now().as_millisecond();
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// RFC 3339 in UTC, always three fractional digits. jiff's RFC 3339 printer rather
/// than `strftime("%Y-%m-%dT%H:%M:%S%.3fZ")`, which reads its format string again
/// on every call: ~1,800 instructions a timestamp, five timestamps in every PATCH
/// (bench/README.md, session 18).
const PRINTER: DateTimePrinter = DateTimePrinter::new().precision(Some(3));

/// `2026-11-23T06:21:28.123Z`.
pub fn format(ts: Timestamp) -> String {
    let mut text = String::with_capacity(24);
    // Printing into a `String` cannot fail.
    let _ = PRINTER.print_timestamp(&ts, &mut text);
    text
}

pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*ts))
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
            Some(ts) => super::serialize(ts, s),
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
    use proptest::prelude::*;

    #[test]
    fn formats_with_milliseconds_and_z() {
        let ts = jiff::Timestamp::from_millisecond(1_700_000_000_007).unwrap();
        assert_eq!(super::format(ts), "2023-11-14T22:13:20.007Z");
        let whole_second = jiff::Timestamp::from_millisecond(1_700_000_000_000).unwrap();
        assert_eq!(super::format(whole_second), "2023-11-14T22:13:20.000Z");
    }

    proptest! {
        /// The format as it was written with `strftime` before session 18, for
        /// every millisecond from year 1 to 9999; and it reads back as the same time.
        #[test]
        fn matches_the_strftime_format_and_parses_back(
            ms in -62_135_596_800_000_i64..=253_402_300_799_999,
        ) {
            let ts = jiff::Timestamp::from_millisecond(ms).unwrap();
            let text = super::format(ts);
            prop_assert_eq!(&text, &ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
            prop_assert_eq!(text.parse::<jiff::Timestamp>().unwrap(), ts);
        }
    }
}
