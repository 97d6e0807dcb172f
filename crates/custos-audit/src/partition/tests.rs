use super::*;

/// Values in ASCII and not, with capitals, a final sigma (which `str::to_lowercase` treats
/// apart from `char::to_lowercase`), a titlecase letter (lowered though not uppercase) and a
/// letter that lowercases to two chars.
const SAMPLES: [&str; 10] = [
    "",
    "retrievemultiple",
    "RetrieveMultiple",
    "USER@EXAMPLE.COM",
    "ΟΔΟΣ",
    "οδος",
    "ǅemal",
    "İstanbul",
    "straße",
    "Ärger-Übung 42",
];

#[test]
fn terms_and_words_are_lowercased_char_by_char_as_before() {
    // What the index files written so far hold: each char lowercased, when any is uppercase.
    let before = |text: &str| {
        if text.chars().any(char::is_uppercase) {
            text.chars()
                .flat_map(char::to_lowercase)
                .collect::<String>()
        } else {
            text.to_string()
        }
    };
    let mut scratch = String::new();
    for text in SAMPLES {
        assert_eq!(lowercase(text, &mut scratch), before(text), "{text}");
    }
}

#[test]
fn group_values_are_told_apart_as_str_to_lowercase_tells_them() {
    let mut column = GroupColumn::default();
    let mut scratch = String::new();
    for text in SAMPLES {
        column.push(text, &mut scratch);
    }
    // The values as first seen, one per distinct `str::to_lowercase`.
    let mut distinct: Vec<String> = Vec::new();
    let mut expected_column = Vec::new();
    for text in SAMPLES {
        let key = text.to_lowercase();
        let number = match distinct.iter().position(|d| d.to_lowercase() == key) {
            Some(number) => number,
            None => {
                distinct.push(text.to_string());
                distinct.len() - 1
            }
        };
        expected_column.push(number as u32);
    }
    assert_eq!(column.values, distinct);
    assert_eq!(column.column, expected_column);
    // The final sigma groups the capitals with the lowercase spelling.
    assert_eq!(column.column[4], column.column[5]);
}

#[test]
fn a_retention_group_ending_in_a_capital_sigma_is_one_group_with_its_newest_time() {
    let mut index = MemIndex::default();
    // Times out of order: the newest is neither the first nor the last.
    let times = [5, 90, 20, 70, 10];
    for (i, (time, upn)) in times
        .into_iter()
        .zip([
            "ΝΊΚΟΣ@X.GR",
            "νίκος@x.gr",
            "ΝΊΚΟΣ@X.GR",
            "Νίκος@X.gr",
            "ΝΊΚΟΣ@X.GR",
        ])
        .enumerate()
    {
        let mut event = crate::event::sample_event(0);
        event.id = Uuid::from_u128(i as u128 + 1);
        event.creation_time_us = time;
        event.user_upn = upn.into();
        index.insert(
            Place {
                offset: 16,
                len: 10,
            },
            &event,
            &[],
        );
    }
    let groups = index.retention_groups().unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let (key, newest) = groups.iter().next().unwrap();
    assert_eq!(key[2], "νίκος@x.gr");
    assert_eq!(*newest, 90);
    let entries: usize = index.retention.values().map(Vec::len).sum();
    assert_eq!(entries, 1, "one entry held, not one per event");
}

proptest::proptest! {
    /// Words sorted by their leading bytes first come out in the order of `str`'s own, whatever
    /// their lengths, shared prefixes and bytes (including the zeros a short word is padded
    /// with, and words of more than the 24 bytes a map key holds in place).
    #[test]
    fn words_sort_as_strings_sort(
        words in proptest::collection::vec("[a\\x00-\\x02é0-9]{0,30}", 0..60),
    ) {
        let mut index = MemIndex::default();
        let mut scratch = String::new();
        for (ordinal, word) in words.iter().enumerate() {
            post_lowercase(&mut index.words, word, &mut scratch, ordinal as u32);
        }
        let sorted: Vec<&str> = index.sorted_words().into_iter().map(|(word, _)| word).collect();
        let mut expected: Vec<&str> = index.words.keys().map(|word| word.as_str()).collect();
        expected.sort_unstable();
        proptest::prop_assert_eq!(sorted, expected);
    }
}
