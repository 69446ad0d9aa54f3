//! The tree read model (`tree_parents`, `tree_children` at levels 1 and 2) as a ParentSet
//! projects into it, written against [`TreeRows`] so a test can run many projections
//! concurrently, statement by statement, beside the bindings that produce them; and the API's
//! reads of it (a member's parent, children by level).
//!
//! Projections of different members' ParentSet run concurrently, so a chain C → B → A can be
//! projected at the same instant from both ends. Each projection writes its own rows before it
//! reads the other end's, so of two concurrent ones at least one sees the other's rows (a read
//! that misses a row began before that row's write finished, which itself follows the other
//! projection's write): C lands on A's level 2 either way.

use std::future::Future;

use scanloop_storage::DbError;
use scanloop_storage::paging::PageError;
use scanloop_storage::statements::Db;

use super::{ReadModels, page_error};

pub(super) const STATEMENTS: &[(&str, &str)] = &[
    (
        "set_parent",
        "INSERT INTO {ks}.tree_parents (brand_id, member_id, parent) VALUES (?, ?, ?)",
    ),
    (
        "parent",
        "SELECT parent FROM {ks}.tree_parents WHERE brand_id = ? AND member_id = ?",
    ),
    (
        "add_child",
        "INSERT INTO {ks}.tree_children (brand_id, parent, level, member_id) VALUES (?, ?, ?, ?)",
    ),
    (
        "children",
        "SELECT member_id FROM {ks}.tree_children WHERE brand_id = ? AND parent = ? AND level = ?",
    ),
    (
        "count_children",
        "SELECT COUNT(*) FROM {ks}.tree_children WHERE brand_id = ? AND parent = ? AND level = ?",
    ),
];

/// The tree rows of one brand.
pub trait TreeRows: Sync {
    fn set_parent(
        &self,
        member: &str,
        parent: &str,
    ) -> impl Future<Output = Result<(), DbError>> + Send;
    fn add_child(
        &self,
        member: &str,
        level: i32,
        child: &str,
    ) -> impl Future<Output = Result<(), DbError>> + Send;
    fn parent(&self, member: &str) -> impl Future<Output = Result<Option<String>, DbError>> + Send;
    /// The member's level-1 children.
    fn children(&self, member: &str) -> impl Future<Output = Result<Vec<String>, DbError>> + Send;
}

/// Projects `member`'s parent: the member's row and its parent's level 1 first, then level 2
/// both ways (the parent's own parent gains the member; the member's children join the parent's
/// level 2), whichever of the chain's bindings was projected first.
pub async fn project_parent_set<T: TreeRows>(
    rows: &T,
    member: &str,
    parent: &str,
) -> Result<(), DbError> {
    rows.set_parent(member, parent).await?;
    rows.add_child(parent, 1, member).await?;
    if let Some(grandparent) = rows.parent(parent).await? {
        rows.add_child(&grandparent, 2, member).await?;
    }
    for child in rows.children(member).await? {
        rows.add_child(parent, 2, &child).await?;
    }
    Ok(())
}

/// One brand's tree rows in the read model.
pub(super) struct BrandTree<'a> {
    pub(super) db: &'a Db,
    pub(super) brand: &'a str,
}

impl TreeRows for BrandTree<'_> {
    async fn set_parent(&self, member: &str, parent: &str) -> Result<(), DbError> {
        self.db
            .exec("set_parent", (self.brand, member, parent))
            .await
    }

    async fn add_child(&self, member: &str, level: i32, child: &str) -> Result<(), DbError> {
        self.db
            .exec("add_child", (self.brand, member, level, child))
            .await
    }

    async fn parent(&self, member: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("parent", (self.brand, member))
            .await?
            .and_then(|(p,)| p))
    }

    async fn children(&self, member: &str) -> Result<Vec<String>, DbError> {
        let rows: Vec<(String,)> = self.db.rows("children", (self.brand, member, 1)).await?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }
}

impl ReadModels {
    pub async fn parent(&self, brand: &str, member: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .db
            .first::<(Option<String>,)>("parent", (brand, member))
            .await?
            .and_then(|(p,)| p))
    }

    pub async fn children_page(
        &self,
        brand: &str,
        member: &str,
        level: i32,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<String>, String), PageError> {
        let (rows, next): (Vec<(String,)>, String) = scanloop_storage::paging::page(
            self.db.session(),
            self.db.statement("children").map_err(page_error)?,
            (brand, member, level),
            page_size,
            token,
        )
        .await?;
        Ok((rows.into_iter().map(|(m,)| m).collect(), next))
    }

    pub async fn count_children(
        &self,
        brand: &str,
        member: &str,
        level: i32,
    ) -> Result<u64, DbError> {
        let (n,): (i64,) = self
            .db
            .first("count_children", (brand, member, level))
            .await?
            .unwrap_or((0,));
        Ok(n.max(0) as u64)
    }
}
