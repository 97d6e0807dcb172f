//! The threads a read shares its work with: a page's records (each decoded, written as canonical
//! JSON and hashed for its leaf check) and a count's partitions (each a few reads of posting
//! lists). One pool for the process, started on first use and kept.
//!
//! A read used to start threads of its own and join them: on this project's two-core virtual
//! machines that cost a warm count of a hot record over 180 partitions about 0.4 ms at the
//! median (1.0–1.5 against 0.63–0.80 ms on the caller's thread alone) and 2.7–4.2 ms at the
//! slowest tenth (BENCHMARKS.md, B3). The pool's threads wait asleep between reads and take items
//! one by one as they free up (rayon's work stealing), so a thread the scheduler preempts holds
//! up one item, not a fixed share of them.

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::Result;

/// The fewest threads of the pool. A count on a cold page cache waits on reads more than it
/// works, and four threads keep four reads in flight even on two cores (the first counts of
/// twenty hot records of the 1,000,000-event log, 90 partitions, after dropping the page cache:
/// 214-225 ms in all on one thread, 139-159 ms on four).
pub(crate) const FEWEST_READERS: usize = 4;

/// The pool, or `None` when its threads could not be started (the process at its limit of
/// threads): reads are then done on the caller's thread.
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(crate::cores().max(FEWEST_READERS))
            .thread_name(|i| format!("audit-read-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// `work` done on each of `items` on the pool's threads, the results in the order of `items`;
/// an error of any item is returned (which one, when several fail, is not said). With fewer than
/// two items, or no pool, on the caller's thread.
pub(crate) fn map<T: Sync, R: Send>(
    items: &[T],
    work: &(dyn Fn(&T) -> Result<R> + Sync),
) -> Result<Vec<R>> {
    match pool() {
        Some(pool) if items.len() > 1 => pool.install(|| items.par_iter().map(work).collect()),
        _ => items.iter().map(work).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn results_keep_the_items_order_and_an_error_is_returned() {
        let items: Vec<u32> = (0..1000).collect();
        let doubled = map(&items, &|i| Ok(i * 2)).unwrap();
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());

        let failed = map(&items, &|i| {
            if *i == 637 {
                Err(Error::Corrupted(format!("item {i}")))
            } else {
                Ok(*i)
            }
        });
        assert!(matches!(failed, Err(Error::Corrupted(damage)) if damage == "item 637"));
        assert!(map(&[] as &[u32], &|i| Ok(*i)).unwrap().is_empty());
    }

    #[test]
    fn items_are_shared_among_the_pools_threads() {
        let items: Vec<u32> = (0..64).collect();
        let names = map(&items, &|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            Ok(std::thread::current().name().map(str::to_string))
        })
        .unwrap();
        let mut distinct: Vec<_> = names.into_iter().flatten().collect();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() >= 2, "{distinct:?}");
        assert!(distinct.iter().all(|name| name.starts_with("audit-read-")));
    }
}
