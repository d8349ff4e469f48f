//! Query parameters of the list endpoints, read by hand from the raw query so that
//! every bad parameter is reported at once, as problem+json (axum's `Query` stops
//! at the first and answers in plain text). Errors point at `/<parameter>`.

use std::collections::BTreeMap;

use utoipa::IntoParams;

use crate::domain::cursor::{self, CursorKind};
use crate::domain::fields::DomainName;
use crate::domain::ids::OrgId;
use crate::domain::members::UserId;
use crate::domain::problems::FieldError;
use crate::store::OrgFilter;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// The query parameters of organization lists (documentation for OpenAPI).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListParams {
    /// Page size, 1–200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only children of this organization.
    parent_id: Option<String>,
    /// Only enabled (`true`) or disabled (`false`) organizations.
    enabled: Option<bool>,
    /// Only the organization that has this domain.
    domain: Option<String>,
    /// Case-insensitive substring of the name.
    q: Option<String>,
}

/// The query parameters of event lists (documentation for OpenAPI).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// Page size, 1–200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<P> {
    pub after: Option<P>,
    pub limit: u32,
}

impl<P> Page<P> {
    /// How many rows to fetch: one more than the page, to learn whether more follow.
    pub fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// Cuts a [`Page::fetch`]-sized result to the page and makes the cursor of the
    /// next page from its last row (`None` on the last page).
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        kind: CursorKind,
        position: impl Fn(&T) -> String,
    ) -> (Vec<T>, Option<String>) {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next = rows
            .last()
            .filter(|_| more)
            .map(|row| cursor::encode(kind, &position(row)));
        (rows, next)
    }
}

pub struct Params(BTreeMap<String, String>);

impl Params {
    /// The first value of each parameter; unknown parameters are ignored.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Self(map)
    }

    fn page<P>(
        &self,
        kind: CursorKind,
        errors: &mut Vec<FieldError>,
        position: impl Fn(&str) -> Option<P>,
    ) -> Page<P> {
        self.page_at("cursor", kind, errors, position)
    }

    /// A page whose start comes from the parameter `param` (`cursor`, or `after`
    /// for the event feed).
    fn page_at<P>(
        &self,
        param: &str,
        kind: CursorKind,
        errors: &mut Vec<FieldError>,
        position: impl Fn(&str) -> Option<P>,
    ) -> Page<P> {
        let limit = match self.0.get("limit") {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(FieldError::new(
                        "/limit",
                        "out_of_range",
                        format!("must be an integer from 1 to {MAX_LIMIT}"),
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        let after = self.0.get(param).and_then(|text| {
            let decoded = cursor::decode(kind, text).and_then(|p| position(&p));
            if decoded.is_none() {
                errors.push(FieldError::new(
                    format!("/{param}"),
                    "invalid_cursor",
                    "is not a cursor this list returned",
                ));
            }
            decoded
        });
        Page { after, limit }
    }

    /// Filters and page of an organization list.
    pub fn org_list(&self) -> Result<(OrgFilter, Page<OrgId>), Vec<FieldError>> {
        let mut errors = Vec::new();
        let page = self.page(CursorKind::Organizations, &mut errors, |p| {
            OrgId::parse(p).ok()
        });
        let mut filter = OrgFilter::default();
        if let Some(text) = self.0.get("parent_id") {
            match OrgId::parse(text) {
                Ok(id) => filter.parent_id = Some(id),
                Err(_) => errors.push(FieldError::new(
                    "/parent_id",
                    "invalid_id",
                    "must be an organization id",
                )),
            }
        }
        if let Some(text) = self.0.get("enabled") {
            match text.as_str() {
                "true" => filter.enabled = Some(true),
                "false" => filter.enabled = Some(false),
                _ => errors.push(FieldError::new(
                    "/enabled",
                    "invalid_type",
                    "must be true or false",
                )),
            }
        }
        if let Some(text) = self.0.get("domain") {
            match DomainName::parse(text) {
                Ok(domain) => filter.domain = Some(domain),
                Err(e) => errors.push(e.at("/domain")),
            }
        }
        if let Some(text) = self.0.get("q") {
            if text.chars().count() > 200 || text.contains('\0') {
                errors.push(FieldError::new(
                    "/q",
                    "too_long",
                    "must be at most 200 characters",
                ));
            } else if !text.is_empty() {
                filter.name_contains = Some(text.clone());
            }
        }
        if errors.is_empty() {
            Ok((filter, page))
        } else {
            Err(errors)
        }
    }

    /// Page of a member list (positions are user ids).
    pub fn member_page(&self) -> Result<Page<UserId>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let page = self.page(CursorKind::Members, &mut errors, |p| UserId::parse(p).ok());
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(errors)
        }
    }

    /// Page of an event list (positions are sequence numbers).
    pub fn event_page(&self) -> Result<Page<i64>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let page = self.page(CursorKind::Events, &mut errors, |p| p.parse::<i64>().ok());
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(errors)
        }
    }
}

/// The query parameters of the event feed (documentation for OpenAPI).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FeedParams {
    /// Page size, 1–200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page (absent: from the beginning).
    after: Option<String>,
}

impl Params {
    /// Page of the global feed (`after`; positions are feed positions).
    pub fn feed_page(&self) -> Result<Page<i64>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let page = self.page_at("after", CursorKind::Feed, &mut errors, |p| {
            p.parse::<i64>().ok().filter(|&n| n >= 0)
        });
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(errors)
        }
    }

    /// Page of a list keyed by a typed id (webhooks, deliveries).
    pub fn id_page<P>(
        &self,
        kind: CursorKind,
        parse: impl Fn(&str) -> Option<P>,
    ) -> Result<Page<P>, Vec<FieldError>> {
        let mut errors = Vec::new();
        let page = self.page(kind, &mut errors, parse);
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_parameter_is_reported() {
        let errors = Params::parse(Some("limit=0&cursor=zzz&enabled=yes&domain=1.2.3.4"))
            .org_list()
            .unwrap_err();
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/limit", "/cursor", "/enabled", "/domain"]);
    }

    #[test]
    fn defaults_and_bounds() {
        let (_, page) = Params::parse(None).org_list().unwrap();
        assert_eq!(page.limit, 50);
        assert!(Params::parse(Some("limit=200")).org_list().is_ok());
        assert!(Params::parse(Some("limit=201")).org_list().is_err());
    }
}
