//! Page arithmetic for page-numbered lists.

/// A requested page: `number` from 1, `size` items per page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub number: u64,
    pub size: u64,
}

impl PageRequest {
    /// Rows to skip, or `None` when the page lies beyond any representable offset (it is
    /// certainly past the end of the data).
    pub fn offset(&self) -> Option<i64> {
        self.number
            .checked_sub(1)?
            .checked_mul(self.size)
            .and_then(|o| i64::try_from(o).ok())
    }

    pub fn limit(&self) -> i64 {
        i64::try_from(self.size).unwrap_or(i64::MAX)
    }
}

/// Where a page sits among all pages, for first/last/prev/next links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLinks {
    pub first: u64,
    pub last: u64,
    pub prev: Option<u64>,
    pub next: Option<u64>,
}

impl PageLinks {
    /// `last` is at least 1, so an empty list still has a first and last page. A page past
    /// the end has no `next`, and its `prev` points at the last page that holds data.
    pub fn new(page: PageRequest, total: u64) -> Self {
        let size = page.size.max(1);
        let last = total.div_ceil(size).max(1);
        let prev = (page.number > 1).then(|| (page.number - 1).min(last));
        let next = (page.number < last).then(|| page.number + 1);
        Self {
            first: 1,
            last,
            prev,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn links(number: u64, size: u64, total: u64) -> PageLinks {
        PageLinks::new(PageRequest { number, size }, total)
    }

    #[test]
    fn examples() {
        assert_eq!(
            links(1, 50, 0),
            PageLinks {
                first: 1,
                last: 1,
                prev: None,
                next: None
            }
        );
        assert_eq!(
            links(2, 50, 120),
            PageLinks {
                first: 1,
                last: 3,
                prev: Some(1),
                next: Some(3)
            }
        );
        assert_eq!(
            links(3, 50, 150),
            PageLinks {
                first: 1,
                last: 3,
                prev: Some(2),
                next: None
            }
        );
        assert_eq!(
            links(9, 50, 120),
            PageLinks {
                first: 1,
                last: 3,
                prev: Some(3),
                next: None
            }
        );
        assert_eq!(
            PageRequest {
                number: u64::MAX,
                size: 250
            }
            .offset(),
            None
        );
        assert_eq!(
            PageRequest {
                number: 3,
                size: 50
            }
            .offset(),
            Some(100)
        );
    }

    proptest! {
        #[test]
        fn walking_next_visits_every_row_exactly_once(total in 0u64..5_000, size in 1u64..=250) {
            let mut page = 1;
            let mut seen = 0u64;
            let mut pages = 0u64;
            loop {
                let req = PageRequest { number: page, size };
                let offset = req.offset().unwrap() as u64;
                seen += total.saturating_sub(offset).min(size);
                pages += 1;
                match PageLinks::new(req, total).next {
                    Some(n) => { prop_assert_eq!(n, page + 1); page = n; }
                    None => break,
                }
            }
            prop_assert_eq!(seen, total);
            prop_assert_eq!(pages, links(1, size, total).last);
        }

        #[test]
        fn links_are_consistent_for_any_input(number in 1u64.., size in 1u64..=250, total in 0u64..u64::MAX / 2) {
            let l = links(number, size, total);
            prop_assert!(l.last >= 1);
            prop_assert!(l.last * size >= total);
            prop_assert!((l.last - 1) * size < total.max(1));
            if let Some(p) = l.prev { prop_assert!(p >= 1 && p < number && p <= l.last); }
            if let Some(n) = l.next { prop_assert!(n == number + 1 && n <= l.last); }
            prop_assert_eq!(l.prev.is_none(), number == 1);
        }
    }
}
