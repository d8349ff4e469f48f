//! Rules for where an organization may sit in the tree: under a live parent, never
//! under itself or one of its descendants, and never deeper than eight levels.
//!
//! The store gathers the facts inside the writing transaction (the new parent's
//! chain of ancestors, the height of the moving subtree) and asks this module, so
//! the rule is stated once and checked against data no concurrent writer can change.

use super::ids::OrgId;

/// A root is level 1; its deepest descendant may be at level 8.
pub const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HierarchyError {
    #[error("the parent organization does not exist or is deleted")]
    ParentNotFound,
    #[error("an organization cannot be placed under itself or one of its descendants")]
    Cycle,
    #[error("the tree would be {depth} levels deep; at most {MAX_DEPTH} are allowed")]
    TooDeep { depth: usize },
}

/// Checks placing `org` (whose subtree is `subtree_height` levels tall, 1 for a
/// leaf) under the parent whose ancestry is `parent_chain`: the parent first, then
/// its parent, up to a root. An empty chain means the parent is not a live org.
pub fn check_placement(
    org: &OrgId,
    parent_chain: &[OrgId],
    subtree_height: usize,
) -> Result<(), HierarchyError> {
    if parent_chain.is_empty() {
        return Err(HierarchyError::ParentNotFound);
    }
    if parent_chain.contains(org) {
        return Err(HierarchyError::Cycle);
    }
    let depth = parent_chain.len() + subtree_height.max(1);
    if depth > MAX_DEPTH {
        return Err(HierarchyError::TooDeep { depth });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<OrgId> {
        (0..n).map(|_| OrgId::generate()).collect()
    }

    #[test]
    fn a_leaf_fits_under_a_chain_of_seven() {
        let chain = ids(7);
        assert_eq!(check_placement(&OrgId::generate(), &chain, 1), Ok(()));
        assert_eq!(
            check_placement(&OrgId::generate(), &ids(8), 1),
            Err(HierarchyError::TooDeep { depth: 9 })
        );
    }

    #[test]
    fn a_subtree_counts_with_its_height() {
        assert_eq!(check_placement(&OrgId::generate(), &ids(4), 4), Ok(()));
        assert!(check_placement(&OrgId::generate(), &ids(4), 5).is_err());
    }

    #[test]
    fn self_and_descendants_are_cycles() {
        let chain = ids(3);
        assert_eq!(
            check_placement(&chain[0], &chain, 1),
            Err(HierarchyError::Cycle)
        );
        assert_eq!(
            check_placement(&chain[2], &chain, 1),
            Err(HierarchyError::Cycle)
        );
    }

    #[test]
    fn a_missing_parent_is_reported() {
        assert_eq!(
            check_placement(&OrgId::generate(), &[], 1),
            Err(HierarchyError::ParentNotFound)
        );
    }
}
