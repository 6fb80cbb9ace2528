//! Helpers for connectors that write in batches.

use std::collections::HashSet;
use std::future::Future;
use std::hash::Hash;

use crate::{ErrorKind, Result};

/// Results of a batch write: `(position in the caller's list, result)`.
pub type Indexed<O> = Vec<(usize, Result<O>)>;

/// Writes `chunk` (items with their positions) with `write`. When the vendor refuses the whole
/// batch for its content (`Validation` or `Conflict`: one invalid record can refuse them all),
/// each item is written alone, so one bad record fails alone; any other error (unavailable,
/// rate limited, unauthorized) is each item's error.
pub async fn or_one_by_one<'a, T, O, F, Fut>(chunk: &'a [(usize, T)], write: F) -> Indexed<O>
where
    F: Fn(&'a [(usize, T)]) -> Fut,
    Fut: Future<Output = Result<Indexed<O>>>,
{
    match write(chunk).await {
        Ok(r) => r,
        Err(e)
            if chunk.len() > 1
                && matches!(e.kind(), ErrorKind::Validation | ErrorKind::Conflict) =>
        {
            tracing::warn!(
                connector = e.connector().unwrap_or(""),
                error = %e,
                n = chunk.len(),
                "the vendor refused a batch; writing its items one by one"
            );
            let mut out = Vec::with_capacity(chunk.len());
            for one in chunk.chunks(1) {
                match write(one).await {
                    Ok(r) => out.extend(r),
                    Err(e) => out.push((one[0].0, Err(e))),
                }
            }
            out
        }
        Err(e) => chunk.iter().map(|(i, _)| (*i, Err(e.detached()))).collect(),
    }
}

/// Splits `items` into rounds in which no key repeats — a vendor batch may not name one record
/// twice (HubSpot: "Duplicate IDs found in batch input") — keeping the order within each
/// round: the first occurrence of every key is in the first round, the second in the second...
pub fn rounds_by_key<T, K: Eq + Hash>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<Vec<T>> {
    let mut rounds: Vec<(HashSet<K>, Vec<T>)> = Vec::new();
    for item in items {
        let k = key(&item);
        match rounds.iter_mut().find(|(keys, _)| !keys.contains(&k)) {
            Some((keys, round)) => {
                keys.insert(k);
                round.push(item);
            }
            None => rounds.push((HashSet::from([k]), vec![item])),
        }
    }
    rounds.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// Refuses a batch holding item 2 as a whole (validation), or fails with `other`.
    async fn write(items: &[(usize, u32)], other: Option<ErrorKind>) -> Result<Indexed<u32>> {
        if let Some(kind) = other {
            return Err(Error::new(kind, "down"));
        }
        if items.iter().any(|(_, v)| *v == 2) {
            return Err(Error::validation("item 2 is invalid"));
        }
        Ok(items.iter().map(|(i, v)| (*i, Ok(v * 10))).collect())
    }

    #[tokio::test]
    async fn a_refused_batch_is_written_one_by_one_and_other_errors_fail_each_item() {
        let chunk = [(0, 1), (1, 2), (2, 3)];
        let out = or_one_by_one(&chunk, |c| write(c, None)).await;
        let oks: Vec<(usize, Option<u32>)> = out
            .iter()
            .map(|(i, r)| (*i, r.as_ref().ok().copied()))
            .collect();
        assert_eq!(oks, [(0, Some(10)), (1, None), (2, Some(30))]);
        let out = or_one_by_one(&chunk, |c| write(c, Some(ErrorKind::Unavailable))).await;
        assert_eq!(out.len(), 3);
        assert!(
            out.iter()
                .all(|(_, r)| matches!(r.as_ref().unwrap_err().kind(), ErrorKind::Unavailable))
        );
    }

    #[test]
    fn rounds_never_repeat_a_key_and_keep_order() {
        let r = rounds_by_key(vec!["a", "b", "A", "c", "a", "a"], |s| s.to_lowercase());
        assert_eq!(
            r,
            vec![vec!["a", "b", "c"], vec!["A"], vec!["a"], vec!["a"]]
        );
        assert!(rounds_by_key(Vec::<&str>::new(), |s| s.to_string()).is_empty());
    }
}
