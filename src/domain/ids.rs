//! Prefixed, sortable, opaque ids in TypeID form: `<prefix>_` followed by the 26
//! lowercase Crockford base32 characters of a UUIDv7.
//!
//! The encoding is the TypeID spec's (the first character carries only 3 bits, so
//! it is `0`–`7`); it is a dozen lines, so it lives here rather than as a dependency.
//! Because UUIDv7 starts with the creation time and the alphabet is in ASCII order,
//! ids sort by creation time as plain strings: keyset pagination relies on that.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const ENCODED_LEN: usize = 26;

fn encode_base32(value: u128) -> String {
    (0..ENCODED_LEN)
        .map(|i| {
            let shift = 5 * (ENCODED_LEN - 1 - i);
            ALPHABET[((value >> shift) & 31) as usize] as char
        })
        .collect()
}

fn decode_base32(text: &str) -> Option<u128> {
    let bytes = text.as_bytes();
    if bytes.len() != ENCODED_LEN || bytes[0] > b'7' {
        return None;
    }
    bytes.iter().try_fold(0u128, |acc, &b| {
        let digit = ALPHABET.iter().position(|&a| a == b)? as u128;
        Some((acc << 5) | digit)
    })
}

/// Why an id string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {prefix}_ id")]
pub struct IdParseError {
    prefix: &'static str,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id; its UUIDv7 timestamp makes it sort after older ones.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn parse(text: &str) -> Result<Self, IdParseError> {
                text.strip_prefix(concat!($prefix, "_"))
                    .and_then(decode_base32)
                    .map(|v| Self(Uuid::from_u128(v)))
                    .ok_or(IdParseError { prefix: $prefix })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, encode_base32(self.0.as_u128()))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(
    /// An organization's id, `org_…`.
    OrgId,
    "org"
);
typed_id!(
    /// An audit event's id, `evt_…`; also the `webhook-id` of its deliveries.
    EventId,
    "evt"
);
typed_id!(
    /// An API key's public id, `key_…` (never the secret).
    KeyId,
    "key"
);
typed_id!(
    /// A webhook endpoint's id, `whk_…`.
    WebhookId,
    "whk"
);
typed_id!(
    /// One recorded delivery attempt, `dlv_…`.
    DeliveryId,
    "dlv"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_the_typeid_spec_example() {
        // From the TypeID spec's valid test vectors.
        let uuid = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        assert_eq!(
            OrgId::from_uuid(uuid).to_string(),
            "org_01h455vb4pex5vsknk084sn02q"
        );
    }

    #[test]
    fn refuses_wrong_prefix_length_and_overflowing_first_char() {
        assert!(OrgId::parse("evt_01h455vb4pex5vsknk084sn02q").is_err());
        assert!(OrgId::parse("org_01h455vb4pex5vsknk084sn02").is_err());
        assert!(OrgId::parse("org_81h455vb4pex5vsknk084sn02q").is_err());
        assert!(OrgId::parse("org_01h455vb4pex5vsknk084sn02u").is_err());
    }

    proptest! {
        #[test]
        fn round_trips_every_uuid(v in any::<u128>()) {
            let id = OrgId::from_uuid(Uuid::from_u128(v));
            prop_assert_eq!(OrgId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn string_order_is_numeric_order(a in any::<u128>(), b in any::<u128>()) {
            let (x, y) = (KeyId::from_uuid(Uuid::from_u128(a)), KeyId::from_uuid(Uuid::from_u128(b)));
            prop_assert_eq!(x.to_string().cmp(&y.to_string()), a.cmp(&b));
        }
    }
}
