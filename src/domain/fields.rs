//! The organization's field types, each made only through `parse()`, so holding
//! one is proof that its rule was checked ("parse, don't validate").
//!
//! Values read back from the store are trusted: they were parsed on the way in.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::problems::Invalid;

/// Reject NUL anywhere: PostgreSQL's text and jsonb types cannot hold it, and no
/// organization field needs it, so both stores see the same accepted inputs.
fn check_no_nul(text: &str) -> Result<(), Invalid> {
    if text.contains('\0') {
        return Err(Invalid::new(
            "invalid_character",
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

fn check_max_chars(text: &str, max: usize) -> Result<(), Invalid> {
    if text.chars().count() > max {
        return Err(Invalid::new(
            "too_long",
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// URL-safe handle, unique among live organizations; usable in place of the id.
    Slug
);

impl Slug {
    pub const MAX_LEN: usize = 63;

    /// `^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`, spelled out (no regex engine needed
    /// for one character class).
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let bytes = text.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && bytes.iter().all(|b| alnum(b) || *b == b'-')
            && bytes.first().is_some_and(alnum)
            && bytes.last().is_some_and(alnum);
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(Invalid::new(
                "invalid_slug",
                "must be 1-63 lowercase letters, digits or inner hyphens",
            ))
        }
    }

    /// A slug made from a display name (`"Acme Ltd."` → `acme-ltd`), transliterating
    /// non-ASCII letters; `None` when nothing usable is left (a name of only symbols).
    pub fn from_name(name: &str) -> Option<Self> {
        let slug = slug::slugify(name);
        let mut cut: String = slug.chars().take(Self::MAX_LEN).collect();
        while cut.ends_with('-') {
            cut.pop();
        }
        Self::parse(&cut).ok()
    }

    /// This slug with a suffix, still within the length limit; used when the slug
    /// made from a name is already taken.
    pub fn with_suffix(&self, suffix: &str) -> Option<Self> {
        let room = Self::MAX_LEN.saturating_sub(suffix.len() + 1);
        let mut base: String = self.0.chars().take(room).collect();
        while base.ends_with('-') {
            base.pop();
        }
        Self::parse(&format!("{base}-{suffix}")).ok()
    }
}

string_newtype!(
    /// The organization's display name: trimmed, 1–200 characters, no control characters.
    OrgName
);

impl OrgName {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(Invalid::new("too_short", "must not be empty"));
        }
        check_max_chars(trimmed, 200)?;
        if trimmed.chars().any(char::is_control) {
            return Err(Invalid::new(
                "invalid_character",
                "must not contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

string_newtype!(
    /// Free text with a length limit (alias name, description, address lines).
    Text
);

impl Text {
    pub fn parse(text: &str, max_chars: usize) -> Result<Self, Invalid> {
        check_no_nul(text)?;
        check_max_chars(text, max_chars)?;
        Ok(Self(text.to_owned()))
    }
}

string_newtype!(
    /// A DNS host name in lowercase ASCII (IDNA-normalized), never an IP address.
    DomainName
);

impl DomainName {
    pub const MAX_LEN: usize = 253;

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let invalid = |why: &str| Invalid::new("invalid_domain", why.to_owned());
        let text = text.trim();
        let host = text.strip_suffix('.').unwrap_or(text);
        let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
        if unbracketed.parse::<IpAddr>().is_ok() {
            return Err(invalid("must be a host name, not an IP address"));
        }
        // UTS 46 with STD3 rules: maps case and full-width forms, encodes to punycode,
        // and refuses characters that may not appear in a host name.
        let ascii =
            idna::domain_to_ascii_strict(host).map_err(|_| invalid("is not a valid host name"))?;
        if ascii.is_empty() || ascii.len() > Self::MAX_LEN {
            return Err(invalid("must be 1-253 characters once encoded"));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid("must contain at least one dot"));
        }
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !labels.iter().all(label_ok) {
            return Err(invalid("has an empty, over-long or malformed label"));
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid("must not end in a numeric label"));
        }
        Ok(Self(ascii))
    }
}

string_newtype!(
    /// An absolute URL (WHATWG-normalized), `https` only or `http`/`https` per field.
    WebUrl
);

impl WebUrl {
    pub const MAX_LEN: usize = 2048;

    /// For `logo_url`: loaded by browsers inside the customer's pages, so never `http`.
    pub fn parse_https(text: &str) -> Result<Self, Invalid> {
        Self::parse_with(text, &["https"])
    }

    /// For `website`.
    pub fn parse_web(text: &str) -> Result<Self, Invalid> {
        Self::parse_with(text, &["http", "https"])
    }

    fn parse_with(text: &str, schemes: &[&str]) -> Result<Self, Invalid> {
        if text.len() > Self::MAX_LEN {
            return Err(Invalid::new("too_long", "must be at most 2048 characters"));
        }
        let url = url::Url::parse(text)
            .map_err(|e| Invalid::new("invalid_url", format!("is not an absolute URL ({e})")))?;
        if !schemes.contains(&url.scheme()) {
            return Err(Invalid::new(
                "invalid_url",
                format!("must use {}", schemes.join(" or ")),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Invalid::new("invalid_url", "must have a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid::new("invalid_url", "must not carry credentials"));
        }
        let normalized = url.to_string();
        if normalized.len() > Self::MAX_LEN {
            return Err(Invalid::new("too_long", "must be at most 2048 characters"));
        }
        Ok(Self(normalized))
    }
}

string_newtype!(
    /// A phone number in E.164 (`+14155550123`), checked against libphonenumber's metadata.
    Phone
);

impl Phone {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if text.len() > 64 {
            return Err(Invalid::new(
                "invalid_phone",
                "is too long to be a phone number",
            ));
        }
        // No default region: without a country calling code a number is ambiguous.
        let number = phonenumber::parse(None, text).map_err(|_| {
            Invalid::new(
                "invalid_phone",
                "is not a phone number in international form (start with + and the country code)",
            )
        })?;
        if !phonenumber::is_valid(&number) {
            return Err(Invalid::new("invalid_phone", "is not a valid phone number"));
        }
        Ok(Self(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }
}

string_newtype!(
    /// ISO 3166-1 alpha-2 country code, upper-case.
    CountryCode
);

impl CountryCode {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let code = isocountry::CountryCode::for_alpha2_caseless(text)
            .map_err(|_| Invalid::new("invalid_country", "must be an ISO 3166-1 alpha-2 code"))?;
        Ok(Self(code.alpha2().to_owned()))
    }
}

string_newtype!(
    /// An IANA time-zone name, as the bundled tz database spells it.
    TimeZoneName
);

impl TimeZoneName {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let invalid = || Invalid::new("invalid_time_zone", "must be an IANA time zone name");
        if text.len() > 64 || text.is_empty() {
            return Err(invalid());
        }
        let tz = jiff::tz::db().get(text).map_err(|_| invalid())?;
        Ok(Self(tz.iana_name().unwrap_or(text).to_owned()))
    }
}

string_newtype!(
    /// A billing system's subscription reference: 1–128 printable ASCII characters.
    SubscriptionId
);

impl SubscriptionId {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if text.is_empty() || text.len() > 128 {
            return Err(Invalid::new("invalid_length", "must be 1-128 characters"));
        }
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(Invalid::new("invalid_character", "must be printable ASCII"));
        }
        Ok(Self(text.to_owned()))
    }
}

string_newtype!(
    /// An application the organization may use: 1–128 characters, no control characters.
    AppId
);

impl AppId {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if text.is_empty() {
            return Err(Invalid::new("too_short", "must not be empty"));
        }
        check_max_chars(text, 128)?;
        if text.chars().any(char::is_control) {
            return Err(Invalid::new(
                "invalid_character",
                "must not contain control characters",
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

/// Checks free JSON (metadata, policy limits) for NUL characters in keys and strings.
pub fn check_json_text(value: &serde_json::Value) -> Result<(), Invalid> {
    match value {
        serde_json::Value::String(s) => check_no_nul(s),
        serde_json::Value::Array(items) => items.iter().try_for_each(check_json_text),
        serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_no_nul(k)?;
            check_json_text(v)
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slug_from_name_examples() {
        assert_eq!(Slug::from_name("Acme Ltd.").unwrap().as_str(), "acme-ltd");
        assert_eq!(
            Slug::from_name("  Société Générale ").unwrap().as_str(),
            "societe-generale"
        );
        assert!(Slug::from_name("!!!").is_none());
        let long = "x".repeat(100);
        assert_eq!(Slug::from_name(&long).unwrap().as_str().len(), 63);
    }

    #[test]
    fn slug_rules() {
        for ok in ["a", "a1", "acme-ltd", &"a".repeat(63)] {
            assert!(Slug::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains_are_idna_normalized_and_never_ips() {
        assert_eq!(
            DomainName::parse("Example.COM").unwrap().as_str(),
            "example.com"
        );
        assert_eq!(
            DomainName::parse("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            DomainName::parse("example.com.").unwrap().as_str(),
            "example.com"
        );
        for bad in [
            "localhost",
            "1.2.3.4",
            "[::1]",
            "::1",
            "exa mple.com",
            "a..b",
            "-a.com",
            "a.123",
            "",
        ] {
            assert!(DomainName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phone_numbers_become_e164() {
        assert_eq!(
            Phone::parse("+1 (415) 555-2671").unwrap().as_str(),
            "+14155552671"
        );
        assert_eq!(
            Phone::parse("+44 20 7946 0958").unwrap().as_str(),
            "+442079460958"
        );
        assert!(Phone::parse("555-0123").is_err());
        assert!(Phone::parse("+1 555").is_err());
    }

    #[test]
    fn urls_countries_and_time_zones() {
        assert!(WebUrl::parse_https("http://acme.com/logo.png").is_err());
        assert!(WebUrl::parse_https("https://acme.com/logo.png").is_ok());
        assert!(WebUrl::parse_web("http://acme.com").is_ok());
        assert!(WebUrl::parse_web("ftp://acme.com").is_err());
        assert!(WebUrl::parse_web("acme.com").is_err());
        assert!(WebUrl::parse_web("https://user:pw@acme.com").is_err());
        assert_eq!(CountryCode::parse("us").unwrap().as_str(), "US");
        assert!(CountryCode::parse("XX").is_err());
        assert_eq!(
            TimeZoneName::parse("Europe/Berlin").unwrap().as_str(),
            "Europe/Berlin"
        );
        assert!(TimeZoneName::parse("Mars/Olympus").is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(OrgName::parse("  Acme  ").unwrap().as_str(), "Acme");
        assert!(OrgName::parse("   ").is_err());
        assert!(OrgName::parse("a\u{7}b").is_err());
        assert!(OrgName::parse(&"é".repeat(200)).is_ok());
        assert!(OrgName::parse(&"é".repeat(201)).is_err());
    }

    proptest! {
        #[test]
        fn any_slug_from_a_name_is_a_valid_slug(name in "\\PC{0,300}") {
            if let Some(slug) = Slug::from_name(&name) {
                prop_assert!(Slug::parse(slug.as_str()).is_ok());
            }
        }

        #[test]
        fn domain_normalization_is_idempotent(host in "[a-zA-Z0-9-]{1,20}(\\.[a-zA-Z0-9-]{1,20}){1,3}") {
            if let Ok(d) = DomainName::parse(&host) {
                prop_assert_eq!(DomainName::parse(d.as_str()).unwrap(), d.clone());
                prop_assert_eq!(d.as_str().to_ascii_lowercase(), d.as_str());
            }
        }

        #[test]
        fn suffixed_slugs_stay_valid(base in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", suffix in "[a-z0-9]{1,8}") {
            if let Ok(slug) = Slug::parse(&base) {
                prop_assert!(slug.with_suffix(&suffix).is_some());
            }
        }
    }
}
