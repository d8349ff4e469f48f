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

/// Every prefix has three letters, so every id's text has this length.
const TEXT_LEN: usize = 4 + ENCODED_LEN;

/// `prefix_` and the base32 digits, on the stack. Ids are written into every
/// answer and every stored row; built with `format!` and a `String` collected a
/// `char` at a time, each cost ~1,400 instructions (bench/README.md, session 18).
struct IdText([u8; TEXT_LEN]);

impl IdText {
    fn new(prefix: &'static str, value: u128) -> Self {
        let mut text = [b'_'; TEXT_LEN];
        text[..3].copy_from_slice(prefix.as_bytes());
        for (i, digit) in text[4..].iter_mut().enumerate() {
            let shift = 5 * (ENCODED_LEN - 1 - i);
            *digit = ALPHABET[((value >> shift) & 31) as usize];
        }
        Self(text)
    }

    fn as_str(&self) -> &str {
        // Only ASCII letters, digits and `_` are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Each ASCII byte's digit value, `NOT_A_DIGIT` for bytes outside the alphabet.
const NOT_A_DIGIT: u8 = u8::MAX;
const DIGITS: [u8; 256] = {
    let mut digits = [NOT_A_DIGIT; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        digits[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    digits
};

fn decode_base32(text: &str) -> Option<u128> {
    let bytes = text.as_bytes();
    if bytes.len() != ENCODED_LEN || bytes[0] > b'7' {
        return None;
    }
    bytes
        .iter()
        .try_fold(0u128, |acc, &b| match DIGITS[usize::from(b)] {
            NOT_A_DIGIT => None,
            digit => Some((acc << 5) | u128::from(digit)),
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

        // `IdText` has room for three letters.
        const _: () = assert!($prefix.len() == 3);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(IdText::new($prefix, self.0.as_u128()).as_str())
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
                s.serialize_str(IdText::new($prefix, self.0.as_u128()).as_str())
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
        fn serializes_as_its_text(v in any::<u128>()) {
            let id = EventId::from_uuid(Uuid::from_u128(v));
            prop_assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
            prop_assert_eq!(serde_json::from_str::<EventId>(&format!("\"{id}\"")).unwrap(), id);
        }

        #[test]
        fn refuses_any_byte_outside_the_alphabet(v in any::<u128>(), at in 0..ENCODED_LEN, byte in any::<u8>()) {
            prop_assume!(!ALPHABET.contains(&byte));
            let mut text = OrgId::from_uuid(Uuid::from_u128(v)).to_string().into_bytes();
            text[4 + at] = byte;
            let text = String::from_utf8_lossy(&text);
            prop_assert!(OrgId::parse(&text).is_err());
        }

        #[test]
        fn string_order_is_numeric_order(a in any::<u128>(), b in any::<u128>()) {
            let (x, y) = (KeyId::from_uuid(Uuid::from_u128(a)), KeyId::from_uuid(Uuid::from_u128(b)));
            prop_assert_eq!(x.to_string().cmp(&y.to_string()), a.cmp(&b));
        }
    }
}
