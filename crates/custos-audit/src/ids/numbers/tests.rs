use proptest::prelude::*;
use uuid::Uuid;

use crate::ids::{IdDict, IdTable};

/// What a step does to the dictionary and to the model beside it.
#[derive(Debug, Clone)]
enum Step {
    /// Numbers a new id (the next of a counter), or again an id numbered before, as a record
    /// that defines an id a second time would have it.
    Push { again: Option<usize> },
    /// Forgets the ids numbered from `keep` per mille of the table on, as the writer's rewind
    /// does: never back past an id numbered twice (the writer numbers only ids without one).
    Truncate { keep: u16 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => Just(Step::Push { again: None }),
        1 => any::<usize>().prop_map(|n| Step::Push { again: Some(n) }),
        1 => (0u16..=1000).prop_map(|keep| Step::Truncate { keep }),
    ]
}

fn new_id(counter: &mut u128) -> Uuid {
    *counter += 1;
    Uuid::from_u128(counter.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

/// The number an id has in `table`: its latest.
fn latest(table: &[Uuid], id: &Uuid) -> Option<u32> {
    table.iter().rposition(|held| held == id).map(|n| n as u32)
}

proptest! {
    #[test]
    fn lookups_agree_with_the_table_through_growth_removal_and_rebuilds(
        steps in prop::collection::vec(step(), 1..400),
    ) {
        let mut dict = IdDict::default();
        let mut model: Vec<Uuid> = Vec::new();
        let mut counter = 0u128;
        let mut numbered_twice_below = 0;
        for step in steps {
            match step {
                Step::Push { again } => {
                    let id = match again {
                        Some(n) if !model.is_empty() => {
                            numbered_twice_below = model.len() + 1;
                            model[n % model.len()]
                        }
                        _ => new_id(&mut counter),
                    };
                    prop_assert_eq!(dict.push(id) as usize, model.len());
                    model.push(id);
                }
                Step::Truncate { keep } => {
                    let len = (model.len() * usize::from(keep) / 1000).max(numbered_twice_below);
                    dict.truncate(len);
                    model.truncate(len);
                }
            }
            prop_assert_eq!(dict.table.len(), model.len());
        }
        // Every id ever made, numbered or forgotten, and one never made.
        for c in 0..=counter {
            let id = new_id(&mut c.clone());
            prop_assert_eq!(dict.number(&id), latest(&model, &id), "{}", id);
        }
        // A table built at once from the same ids answers the same.
        let built = IdDict::from_table(dict.table.prefix(dict.table.len()));
        for id in &model {
            prop_assert_eq!(built.number(id), latest(&model, id));
        }
        // Looked up a group at a time, as the writer looks up an event's ids, in an order
        // with repeats: the same answers.
        let every: Vec<Uuid> = (0..=counter)
            .chain((0..=counter).rev().step_by(3))
            .map(|c| new_id(&mut c.clone()))
            .collect();
        for dict in [&dict, &built] {
            let mut batch = vec![Some(7)];
            dict.numbers_of(&every, &mut batch);
            let one_by_one: Vec<Option<u32>> = every.iter().map(|id| dict.number(id)).collect();
            prop_assert_eq!(batch, one_by_one);
        }
    }
}

#[test]
fn a_large_table_built_at_once_finds_every_id_and_no_other() {
    let mut table = IdTable::default();
    let mut counter = 0u128;
    for _ in 0..300_000 {
        table.push(new_id(&mut counter));
    }
    let dict = IdDict::from_table(table);
    for number in 0..300_000usize {
        let id = dict.table.get(number).expect("in range");
        assert_eq!(dict.number(&id), Some(number as u32));
    }
    for _ in 0..10_000 {
        assert_eq!(dict.number(&new_id(&mut counter)), None);
    }
}

proptest! {
    #[test]
    fn removing_any_ids_in_any_order_leaves_every_other_id_found(
        n in 1usize..300,
        order in prop::collection::vec(any::<usize>(), 1..300),
    ) {
        // Three quarters full at most, so that removals meet long runs of probes.
        let mut table = IdTable::default();
        let mut counter = 0u128;
        for _ in 0..n {
            table.push(new_id(&mut counter));
        }
        let mut numbers = super::Numbers::build(&table);
        let mut removed = vec![false; n];
        for pick in order {
            let number = pick % n;
            if removed[number] {
                continue;
            }
            let id = table.get(number).expect("in range");
            numbers.remove(&id, number as u32);
            removed[number] = true;
            for (other, gone) in removed.iter().enumerate() {
                let id = table.get(other).expect("in range");
                let expected = (!gone).then_some(other as u32);
                prop_assert_eq!(numbers.get(&id, &table), expected);
            }
        }
        prop_assert_eq!(numbers.len(), removed.iter().filter(|gone| !**gone).count());
    }
}
