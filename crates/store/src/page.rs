//! Paging through lists the store keeps newest first (run history, the audit).

/// Where the next page starts: opaque to callers, handed back from [`Page::next`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor(String);

impl Cursor {
    /// A cursor after the item at `at_ms` (milliseconds, or a sequence number) with `key`.
    pub(crate) fn after(at_ms: i64, key: &str) -> Self {
        Self(format!("{at_ms}/{key}"))
    }

    /// The position the cursor names: `(at_ms, key)`; `None` when it was not made here.
    pub(crate) fn position(&self) -> Option<(i64, &str)> {
        let (at, key) = self.0.split_once('/')?;
        Some((at.parse().ok()?, key))
    }

    /// The cursor as text (to hand to a client, e.g. in a `next` link).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A cursor from text a client handed back; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let cursor = Self(text.to_owned());
        cursor.position().is_some().then_some(cursor)
    }
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// The most items one page holds, whatever a query asks for.
pub const PAGE_MAX: usize = 500;
