//! Helpers for connectors that write in batches.

use std::collections::HashSet;
use std::hash::Hash;

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
