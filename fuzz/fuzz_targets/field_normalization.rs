//! Every field parser: never panics, and what it accepts is in canonical form (the
//! stored value parses back to itself), so a value read back compares equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orgd::domain::fields::{
    AppId, CountryCode, DomainName, OrgName, Phone, Slug, SubscriptionId, Text, TimeZoneName,
    WebUrl,
};

macro_rules! canonical {
    ($text:expr, $parse:expr) => {
        if let Ok(value) = $parse($text) {
            let again = $parse(value.as_str()).ok();
            assert_eq!(again.as_ref(), Some(&value), "not canonical: {:?}", $text);
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    canonical!(text, Slug::parse);
    canonical!(text, OrgName::parse);
    canonical!(text, |t| Text::parse(t, 255));
    canonical!(text, DomainName::parse);
    canonical!(text, WebUrl::parse_https);
    canonical!(text, WebUrl::parse_web);
    canonical!(text, Phone::parse);
    canonical!(text, CountryCode::parse);
    canonical!(text, TimeZoneName::parse);
    canonical!(text, SubscriptionId::parse);
    canonical!(text, AppId::parse);
    // A slug made from a display name is always a valid slug.
    if let Some(slug) = Slug::from_name(text) {
        assert_eq!(Slug::parse(slug.as_str()).ok().as_ref(), Some(&slug));
        if let Some(longer) = slug.with_suffix("2") {
            assert!(Slug::parse(longer.as_str()).is_ok());
        }
    }
});
