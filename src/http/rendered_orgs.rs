//! The JSON body of `GET /v1/organizations/{org}` as last rendered for each of the
//! store's kept copies, so a GET answered from a copy (`store/org_copies.rs`) does
//! not serialize the same organization again.
//!
//! Serializing was the largest part of such a GET that was orgd's own work
//! (about 2.5 µs of ~27 µs of CPU, bench/README.md, session 15). A rendering is
//! reused only for the very copy it was made from: it is found by id and kept with
//! a weak reference to that copy, and used only if the organization being answered
//! is that same allocation (`Weak::as_ptr`). A copy is never changed in place
//! (a write replaces it), and while the weak reference lives the allocation is not
//! freed, so no other organization can take its address. When the store drops or
//! replaces its copy, the next GET renders the new one. Nothing here decides what
//! is fresh; the store's copies do.
//!
//! Only organizations the store keeps are rendered into here (`Arc::strong_count`
//! above one: the store holds one reference): one read from the database and not
//! kept would only evict a rendering that is used.
//!
//! Bounded least-recently-used map (hashlink's, as in `recent_orgs.rs`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::Bytes;
use hashlink::LruCache;

use crate::domain::ids::OrgId;
use crate::domain::org::Organization;

pub struct RenderedOrgs {
    kept: Mutex<LruCache<OrgId, Rendered>>,
}

struct Rendered {
    copy: Weak<Organization>,
    body: Bytes,
}

impl RenderedOrgs {
    /// Keeps at most `capacity` renderings: as many as the store keeps copies. A
    /// rendering is ~0.7–1 KB; the weak reference keeps at most the copy's
    /// allocation (not its strings) after the store has let it go.
    pub fn new(capacity: usize) -> Self {
        Self {
            kept: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The body for `org`: the rendering of this very copy if one is kept, else
    /// `render(org)`, kept if the store keeps the copy.
    pub fn body<E>(
        &self,
        org: &Arc<Organization>,
        render: impl FnOnce(&Organization) -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        if let Some(kept) = self.lock().get(&org.id) {
            if std::ptr::eq(kept.copy.as_ptr(), Arc::as_ptr(org)) {
                return Ok(kept.body.clone());
            }
        }
        let body = render(org)?;
        if Arc::strong_count(org) > 1 {
            self.lock().insert(
                org.id,
                Rendered {
                    copy: Arc::downgrade(org),
                    body: body.clone(),
                },
            );
        }
        Ok(body)
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<OrgId, Rendered>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::convert::Infallible;

    use super::*;
    use crate::domain::fields::{OrgName, Slug};
    use crate::domain::time;

    fn org() -> Organization {
        Organization::new(
            OrgId::generate(),
            Slug::parse("acme").unwrap(),
            OrgName::parse("Acme").unwrap(),
            time::now(),
        )
    }

    /// Renders `org` by its version, counting the renders.
    fn answer(rendered: &RenderedOrgs, org: &Arc<Organization>, renders: &Cell<usize>) -> Bytes {
        rendered
            .body(org, |o| {
                renders.set(renders.get() + 1);
                Ok::<_, Infallible>(Bytes::from(format!("v{}", o.version)))
            })
            .unwrap()
    }

    #[test]
    fn a_kept_copy_is_rendered_once() {
        let rendered = RenderedOrgs::new(16);
        let copy = Arc::new(org());
        let _store_holds = Arc::clone(&copy);
        let renders = Cell::new(0);
        assert_eq!(answer(&rendered, &copy, &renders), "v1");
        assert_eq!(answer(&rendered, &copy, &renders), "v1");
        assert_eq!(renders.get(), 1);
    }

    #[test]
    fn a_new_copy_of_the_same_organization_is_rendered_again() {
        let rendered = RenderedOrgs::new(16);
        let first = Arc::new(org());
        let _store_holds = Arc::clone(&first);
        let renders = Cell::new(0);
        answer(&rendered, &first, &renders);
        let mut changed = (*first).clone();
        changed.version = 2;
        let second = Arc::new(changed);
        let _store_holds_new = Arc::clone(&second);
        assert_eq!(answer(&rendered, &second, &renders), "v2");
        assert_eq!(renders.get(), 2);
        // The same content in a new allocation is not trusted either.
        let again = Arc::new((*second).clone());
        let _held = Arc::clone(&again);
        answer(&rendered, &again, &renders);
        assert_eq!(renders.get(), 3);
    }

    #[test]
    fn a_copy_the_store_does_not_keep_is_not_kept() {
        let rendered = RenderedOrgs::new(16);
        let read_once = Arc::new(org());
        let renders = Cell::new(0);
        answer(&rendered, &read_once, &renders);
        answer(&rendered, &read_once, &renders);
        assert_eq!(renders.get(), 2);
        assert_eq!(rendered.lock().len(), 0);
    }

    #[test]
    fn a_rendering_that_fails_is_not_kept() {
        let rendered = RenderedOrgs::new(16);
        let copy = Arc::new(org());
        let _store_holds = Arc::clone(&copy);
        assert!(rendered.body(&copy, |_| Err("no")).is_err());
        assert_eq!(rendered.lock().len(), 0);
    }
}
