//! A sealed partition's index file, `seg-<first seq>.idx`: written once when its segment is
//! complete, never changed, deleted with the segment by retention, and rebuilt from the
//! segment by `custos audit reindex`. It is derived state: the segment is the truth.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! "CUSTOSIX" | u8 version=5 | 7 zero bytes
//! sections, in this order:
//!   META       u64 first seq | u32 events | i64 oldest | i64 newest | u64 segment bytes | u32 ids end
//!   TIMES      i64 CreationTime per event
//!   PLACES     (u32 offset, u32 length) of each event's record in the segment
//!   STRINGS    u32 count | (count + 1) × u32 offsets | UTF-8 bytes: the segment's numbered strings
//!   TERMS      table: u8 field ‖ lowercase value → postings
//!   RECORDS    table: u32 big-endian record id number → postings (bit-packed: `table.rs`)
//!   WORDS      table: free-text word → postings
//!   EVENTS     table: 16-byte event id → (ordinal, 0)
//!   RETENTION  u32 count | count × (4 × (varint length | bytes) | i64 newest)
//!   POSTINGS   posting lists (`postings::Lists`), back to back
//!   GROUPS     for user, operation, entity: varint n | n × (varint length | bytes) | per event
//!              varint value number (reports count by them)
//! footer: per section (u64 offset | u64 length | u32 crc32) | u32 crc32 of those | "CUSTOSIX"
//! ```
//!
//! A table's two values for a posting list are (offset in POSTINGS, byte length), or
//! (ordinal, 0) for a list of one event, the common case for record ids. In version 5 a list
//! whose varints take 8 bytes or more is written as Elias–Fano ([`Lists::Packed`]: the
//! posting lists were the largest section, and a list of thousands of events takes about half
//! its varints' bytes); version 4 wrote every list as varints. Since version 4 the record
//! table's blocks are bit-packed ([`Entries::Numbers`]: about 3 bytes a record id where
//! version 3's prefix-compressed keys and varints took about 7, and the record table was a
//! third of the file); the other tables are as in version 3, whose block indexes are nested
//! tables ([`Layout::Nested`]). Version 2, otherwise version 3, had flat block indexes. Files
//! of versions 2 to 4 are still read (and compared by `verify` in their own version), so an
//! upgrade indexes nothing again. A file of any other version is not read:
//! the partition is indexed again from its segment (an index is derived, so its format
//! changes without a migration).

use std::borrow::Cow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use uuid::Uuid;

use crate::codec::Strings;
use crate::handles::{Handle, Handles};
use crate::partition::{Field, GroupField, MemIndex, PartitionIndex, Place, RetentionGroups};
use crate::postings::{self, Lists, get_varint, put_varint};
use crate::table::{Entries, Layout, Table, TableWriter};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"CUSTOSIX";
/// The version this build writes. It reads 2 to 4 as well ([`format_of`]); a file of any other
/// version is indexed again from its segment.
pub(crate) const VERSION: u8 = 5;
const HEADER_BYTES: u64 = 16;
const N_SECTIONS: usize = 11;
const SECTION_ENTRY_BYTES: usize = 20;
const FOOTER_BYTES: usize = N_SECTIONS * SECTION_ENTRY_BYTES + 4 + 8;
const META_BYTES: usize = 40;

#[derive(Clone, Copy)]
enum Section {
    Meta = 0,
    Times = 1,
    Places = 2,
    Strings = 3,
    Terms = 4,
    Records = 5,
    Words = 6,
    Events = 7,
    Retention = 8,
    Postings = 9,
    Groups = 10,
}

/// What the file says about its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SealedMeta {
    pub(crate) first_seq: u64,
    pub(crate) n_events: u32,
    pub(crate) oldest_us: i64,
    pub(crate) newest_us: i64,
    /// Bytes of the segment file it indexes.
    pub(crate) segment_bytes: u64,
    /// Record ids the log had numbered at the end of the segment.
    pub(crate) ids_end: u32,
}

/// The index file of the segment at `segment_path`.
pub(crate) fn index_path(segment_path: &Path) -> PathBuf {
    segment_path.with_extension("idx")
}

/// The terms table's key of `field`'s `value`.
fn term_key(field: Field, value: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + value.len());
    key.push(field as u8);
    key.extend_from_slice(value.as_bytes());
    key
}

/// Builds a table of posting lists, putting the lists of more than one event in `postings`.
fn posting_table<'a>(
    entries: impl Iterator<Item = (Vec<u8>, &'a [u32])>,
    postings: &mut Postings,
    layout: Layout,
) -> Vec<u8> {
    let mut table = TableWriter::default();
    for (key, list) in entries {
        postings.add(&mut table, &key, list);
    }
    table.finish(layout)
}

/// How an index file's tables are written: how they find their blocks, how the record
/// table's blocks hold their entries (every other table's are [`Entries::Prefixed`]), and how
/// posting lists are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Format {
    layout: Layout,
    records: Entries,
    lists: Lists,
}

/// The format of an index file of `version`, if this build reads it.
fn format_of(version: u8) -> Option<Format> {
    let (layout, records, lists) = match version {
        2 => (Layout::Flat, Entries::Prefixed, Lists::Varints),
        3 => (Layout::Nested, Entries::Prefixed, Lists::Varints),
        4 => (Layout::Nested, Entries::Numbers, Lists::Varints),
        5 => (Layout::Nested, Entries::Numbers, Lists::Packed),
        _ => return None,
    };
    Some(Format {
        layout,
        records,
        lists,
    })
}

/// The version of the index file `file_bytes` when this build reads it, else [`VERSION`]:
/// the version a file must be compared in with what its segment implies.
pub(crate) fn version_of(file_bytes: &[u8]) -> u8 {
    file_bytes
        .get(8)
        .copied()
        .filter(|v| format_of(*v).is_some())
        .unwrap_or(VERSION)
}

/// The version of the index file `file_bytes` when it is one this build does not read (a later
/// build's, or a damaged byte): such a file is never searched — the partition is indexed again
/// when the log is opened.
pub(crate) fn unread_version(file_bytes: &[u8]) -> Option<u8> {
    let version = *file_bytes.get(8)?;
    (file_bytes.starts_with(MAGIC) && format_of(version).is_none()).then_some(version)
}

/// The POSTINGS section being written, for a partition of `events`.
struct Postings {
    bytes: Vec<u8>,
    lists: Lists,
    events: u32,
}

impl Postings {
    /// Adds `key` to `table` with its postings: a single ordinal inline, a longer list here.
    fn add(&mut self, table: &mut TableWriter, key: &[u8], list: &[u32]) {
        if let [only] = list {
            table.add(key, u64::from(*only), 0);
        } else {
            let at = self.bytes.len();
            self.lists.encode(list, self.events, &mut self.bytes);
            table.add(key, at as u64, (self.bytes.len() - at) as u64);
        }
    }
}

/// Writes the index file of a complete segment, durably: a temporary file, fsynced, renamed
/// into place, and the folder fsynced.
pub(crate) fn write(segment_path: &Path, file_bytes: &[u8]) -> Result<()> {
    crate::files::replace_file(&index_path(segment_path), "idx.tmp", file_bytes)
}

/// The bytes of the index file of a complete segment in `version` (one this build reads),
/// from its in-memory index. The same segment always gives the same bytes, so `verify` can
/// compare a file with what its segment implies.
pub(crate) fn encode(
    index: &MemIndex,
    strings: &[String],
    segment_bytes: u64,
    first_seq: u64,
    ids_end: u32,
    version: u8,
) -> Vec<u8> {
    let Format {
        layout,
        records,
        lists,
    } = format_of(version).expect("a version this build reads");
    let n_events = index.times.len() as u32;
    let (oldest, newest) = index.time_range.unwrap_or((0, 0));
    let mut sections: Vec<Vec<u8>> = vec![Vec::new(); N_SECTIONS];

    let meta = &mut sections[Section::Meta as usize];
    meta.extend_from_slice(&first_seq.to_le_bytes());
    meta.extend_from_slice(&n_events.to_le_bytes());
    meta.extend_from_slice(&oldest.to_le_bytes());
    meta.extend_from_slice(&newest.to_le_bytes());
    meta.extend_from_slice(&segment_bytes.to_le_bytes());
    meta.extend_from_slice(&ids_end.to_le_bytes());

    sections[Section::Times as usize] = index.times.iter().flat_map(|t| t.to_le_bytes()).collect();
    sections[Section::Places as usize] = index
        .places
        .iter()
        .flat_map(|p| [p.offset.to_le_bytes(), p.len.to_le_bytes()])
        .flatten()
        .collect();

    let text = &mut sections[Section::Strings as usize];
    text.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    let mut end = 0u32;
    text.extend_from_slice(&end.to_le_bytes());
    for string in strings {
        end += string.len() as u32;
        text.extend_from_slice(&end.to_le_bytes());
    }
    for string in strings {
        text.extend_from_slice(string.as_bytes());
    }

    let mut postings = Postings {
        bytes: Vec::new(),
        lists,
        events: n_events,
    };
    let terms = index
        .sorted_terms()
        .into_iter()
        .map(|(field, value, list)| (term_key(field, value), list));
    sections[Section::Terms as usize] = posting_table(terms, &mut postings, layout);
    let mut table = TableWriter::new(records);
    index.records.for_each(|number, list| {
        postings.add(&mut table, &number.to_be_bytes(), list);
    });
    sections[Section::Records as usize] = table.finish(layout);
    sections[Section::Words as usize] = posting_table(
        index
            .sorted_words()
            .into_iter()
            .map(|(word, list)| (word.as_bytes().to_vec(), list)),
        &mut postings,
        layout,
    );
    let mut events: Vec<(&Uuid, &u32)> = index.event_ids.iter().collect();
    events.sort_unstable();
    let mut table = TableWriter::default();
    for (id, ordinal) in events {
        table.add(id.as_bytes(), u64::from(*ordinal), 0);
    }
    sections[Section::Events as usize] = table.finish(layout);

    let retention = index.retention_groups().expect("in memory");
    let groups = &mut sections[Section::Retention as usize];
    groups.extend_from_slice(&(retention.len() as u32).to_le_bytes());
    for (key, newest) in &retention {
        for part in key {
            put_varint(groups, part.len() as u64);
            groups.extend_from_slice(part.as_bytes());
        }
        groups.extend_from_slice(&newest.to_le_bytes());
    }
    sections[Section::Postings as usize] = postings.bytes;

    let groups = &mut sections[Section::Groups as usize];
    for group in &index.groups {
        put_varint(groups, group.values.len() as u64);
        for value in &group.values {
            put_varint(groups, value.len() as u64);
            groups.extend_from_slice(value.as_bytes());
        }
        for number in &group.column {
            put_varint(groups, u64::from(*number));
        }
    }

    let mut file_bytes = Vec::with_capacity(sections.iter().map(Vec::len).sum::<usize>() + 256);
    file_bytes.extend_from_slice(MAGIC);
    file_bytes.push(version);
    file_bytes.extend_from_slice(&[0; 7]);
    let mut footer = Vec::with_capacity(FOOTER_BYTES);
    for section in &sections {
        footer.extend_from_slice(&(file_bytes.len() as u64).to_le_bytes());
        footer.extend_from_slice(&(section.len() as u64).to_le_bytes());
        footer.extend_from_slice(&crc32fast::hash(section).to_le_bytes());
        file_bytes.extend_from_slice(section);
    }
    let footer_crc = crc32fast::hash(&footer);
    file_bytes.extend_from_slice(&footer);
    file_bytes.extend_from_slice(&footer_crc.to_le_bytes());
    file_bytes.extend_from_slice(MAGIC);
    file_bytes
}

/// An open index file; each table's block index is read into memory the first time a search
/// needs that table (a record's search never reads the words' or the events' — on a large
/// partition a third of what the four weigh, and most of a partition's resident memory),
/// everything else when asked. What is kept goes when the budget of open files closes the file
/// (`handles.rs`), and is read again when next needed.
pub(crate) struct SealedIndex {
    file: Arc<Handle>,
    meta: SealedMeta,
    /// How its tables are written (by its version).
    format: Format,
    /// (offset, length, crc32) of each section.
    sections: [(u64, u64, u32); N_SECTIONS],
}

/// What a sealed index keeps of its file once read, for as long as the file stays open
/// ([`Handle::kept`]): closed by the budget of open files, it goes, and is read again.
#[derive(Default)]
struct IndexState {
    /// The tables of [`TABLES`], once opened.
    tables: [OnceLock<Table>; TABLES.len()],
    strings: OnceLock<Arc<StringTable>>,
}

/// A table of a sealed index, with the state that holds it.
struct TableRef {
    state: Arc<IndexState>,
    slot: usize,
}

impl std::ops::Deref for TableRef {
    type Target = Table;

    fn deref(&self) -> &Table {
        self.state.tables[self.slot]
            .get()
            .expect("opened before it is lent")
    }
}

impl Drop for SealedIndex {
    /// The state kept with the file holds the file's handle (its tables and strings read
    /// through it): closing the file lets both go.
    fn drop(&mut self) {
        self.file.close();
    }
}

/// A sealed segment's numbered strings, read from its index file a page at a time as records
/// need them. Reading the section whole was most of what the first search to read from a
/// partition cost: 358 kB a partition at 1,000,000 events, 741 kB at 10,000,000, of which a
/// page of events needs a few dozen strings. A page, once read, is kept.
///
/// A string is checked when it is read (its ends in order and inside the section, its bytes
/// UTF-8); a wrong but well-formed string cannot be served either, since every event read is
/// checked against its Merkle leaf.
pub(crate) struct StringTable {
    file: Arc<Handle>,
    /// Where the section starts in the file, and its length.
    at: u64,
    len: u64,
    count: usize,
    /// The section in [`STRINGS_PAGE`]-byte pieces, each read on first use.
    pages: Box<[OnceLock<Box<[u8]>>]>,
}

/// Bytes of a strings section read at a time.
const STRINGS_PAGE: u64 = 4096;

/// Damage found in the index file at `path`.
fn corrupt(path: &Path, what: &str) -> Error {
    Error::Corrupted(format!("{}: {what}", path.display()))
}

impl StringTable {
    fn corrupt(&self, what: &str) -> Error {
        corrupt(self.file.path(), what)
    }

    /// Page `k` of the section.
    fn page(&self, k: usize) -> Result<&[u8]> {
        if let Some(page) = self.pages[k].get() {
            return Ok(page);
        }
        let start = k as u64 * STRINGS_PAGE;
        let mut bytes = vec![0u8; (self.len - start).min(STRINGS_PAGE) as usize];
        self.file
            .file()?
            .read_exact_at(&mut bytes, self.at + start)
            .map_err(|e| Error::io(self.file.path(), e))?;
        Ok(self.pages[k].get_or_init(|| bytes.into_boxed_slice()))
    }

    /// Bytes `from .. from + len` of the section.
    fn bytes(&self, from: u64, len: u64) -> Result<Cow<'_, [u8]>> {
        let end = from
            .checked_add(len)
            .filter(|end| *end <= self.len)
            .ok_or_else(|| self.corrupt("string out of bounds"))?;
        if len == 0 {
            return Ok(Cow::Borrowed(&[]));
        }
        let (first, last) = (from / STRINGS_PAGE, (end - 1) / STRINGS_PAGE);
        let within = |k: u64| {
            let base = k * STRINGS_PAGE;
            (from.max(base) - base) as usize..(end.min(base + STRINGS_PAGE) - base) as usize
        };
        if first == last {
            return Ok(Cow::Borrowed(&self.page(first as usize)?[within(first)]));
        }
        let mut joined = Vec::with_capacity(len as usize);
        for k in first..=last {
            joined.extend_from_slice(&self.page(k as usize)?[within(k)]);
        }
        Ok(Cow::Owned(joined))
    }

    fn word(&self, at: u64) -> Result<u32> {
        let bytes = self.bytes(at, 4)?;
        Ok(u32::from_le_bytes(bytes.as_ref().try_into().expect("4")))
    }

    /// String `n`'s start and end in the text, read together.
    fn ends(&self, n: usize) -> Result<(u32, u32)> {
        let bytes = self.bytes(4 + n as u64 * 4, 8)?;
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        Ok((word(0), word(4)))
    }
}

impl Strings for StringTable {
    fn len(&self) -> usize {
        self.count
    }

    fn get(&self, n: usize) -> Result<Option<Cow<'_, str>>> {
        if n >= self.count {
            return Ok(None);
        }
        // The section: u32 count | (count + 1) × u32 ends | the text.
        let text_at = 4 + (self.count as u64 + 1) * 4;
        let (start, end) = self.ends(n)?;
        if start > end {
            return Err(self.corrupt("strings out of order"));
        }
        let bytes = self.bytes(text_at + u64::from(start), u64::from(end - start))?;
        let not_utf8 = || self.corrupt("string not UTF-8");
        Ok(Some(match bytes {
            Cow::Borrowed(b) => Cow::Borrowed(std::str::from_utf8(b).map_err(|_| not_utf8())?),
            Cow::Owned(b) => Cow::Owned(String::from_utf8(b).map_err(|_| not_utf8())?),
        }))
    }
}

/// The sections that are tables, in the order of [`SealedIndex::tables`].
const TABLES: [Section; 4] = [
    Section::Terms,
    Section::Records,
    Section::Words,
    Section::Events,
];

impl SealedIndex {
    /// Opens the index file of the segment at `segment_path`; `Ok(None)` when there is none or
    /// it does not index exactly that segment (a different length or first seq), so the
    /// segment must be indexed again.
    pub(crate) fn open(
        handles: &Arc<Handles>,
        segment_path: &Path,
        first_seq: u64,
        segment_bytes: u64,
    ) -> Result<Option<SealedIndex>> {
        let path = index_path(segment_path);
        let file = match crate::files::open_read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let handle = Handle::adopt(handles, &path, file)?;
        let Some(index) = SealedIndex::read(handle)? else {
            return Ok(None);
        };
        if index.meta.first_seq != first_seq || index.meta.segment_bytes != segment_bytes {
            return Ok(None);
        }
        Ok(Some(index))
    }

    /// Reads the footer, the meta section and the tables' block indexes; `Ok(None)` when the
    /// footer or meta is damaged.
    fn read(handle: Arc<Handle>) -> Result<Option<SealedIndex>> {
        let file = handle.file()?;
        let path = handle.path();
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if file_len < HEADER_BYTES + FOOTER_BYTES as u64 {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_BYTES as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| Error::io(path, e))?;
        let Some(format) = format_of(header[8]).filter(|_| &header[..8] == MAGIC) else {
            return Ok(None);
        };
        let mut footer = vec![0u8; FOOTER_BYTES];
        file.read_exact_at(&mut footer, file_len - FOOTER_BYTES as u64)
            .map_err(|e| Error::io(path, e))?;
        let entries = &footer[..N_SECTIONS * SECTION_ENTRY_BYTES];
        let crc = u32::from_le_bytes(
            footer[entries.len()..entries.len() + 4]
                .try_into()
                .expect("4"),
        );
        if &footer[FOOTER_BYTES - 8..] != MAGIC || crc32fast::hash(entries) != crc {
            return Ok(None);
        }
        let mut sections = [(0u64, 0u64, 0u32); N_SECTIONS];
        for (i, entry) in entries.chunks_exact(SECTION_ENTRY_BYTES).enumerate() {
            let offset = u64::from_le_bytes(entry[..8].try_into().expect("8"));
            let len = u64::from_le_bytes(entry[8..16].try_into().expect("8"));
            let crc = u32::from_le_bytes(entry[16..].try_into().expect("4"));
            if offset.checked_add(len).is_none_or(|end| end > file_len) {
                return Ok(None);
            }
            sections[i] = (offset, len, crc);
        }
        let (meta_at, meta_len, meta_crc) = sections[Section::Meta as usize];
        let mut bytes = vec![0u8; meta_len as usize];
        file.read_exact_at(&mut bytes, meta_at)
            .map_err(|e| Error::io(path, e))?;
        if bytes.len() != META_BYTES || crc32fast::hash(&bytes) != meta_crc {
            return Ok(None);
        }
        let meta = SealedMeta {
            first_seq: u64::from_le_bytes(bytes[0..8].try_into().expect("8")),
            n_events: u32::from_le_bytes(bytes[8..12].try_into().expect("4")),
            oldest_us: i64::from_le_bytes(bytes[12..20].try_into().expect("8")),
            newest_us: i64::from_le_bytes(bytes[20..28].try_into().expect("8")),
            segment_bytes: u64::from_le_bytes(bytes[28..36].try_into().expect("8")),
            ids_end: u32::from_le_bytes(bytes[36..40].try_into().expect("4")),
        };
        Ok(Some(SealedIndex {
            file: handle,
            meta,
            format,
            sections,
        }))
    }

    pub(crate) fn meta(&self) -> SealedMeta {
        self.meta
    }

    /// Table `section`, its block index read on first use (since the file was last opened).
    fn table(&self, section: Section) -> Result<TableRef> {
        let state = self.file.kept::<IndexState>()?;
        let slot = TABLES
            .iter()
            .position(|t| *t as usize == section as usize)
            .expect("a table section");
        if state.tables[slot].get().is_none() {
            let (at, len, _) = self.sections[section as usize];
            let entries = match section {
                Section::Records => self.format.records,
                _ => Entries::Prefixed,
            };
            let table = Table::open(self.file.clone(), at, len, self.format.layout, entries)?;
            let _ = state.tables[slot].set(table);
        }
        Ok(TableRef { state, slot })
    }

    fn read_section(&self, section: Section) -> Result<Vec<u8>> {
        let (at, len, _) = self.sections[section as usize];
        let mut bytes = vec![0u8; len as usize];
        self.file
            .file()?
            .read_exact_at(&mut bytes, at)
            .map_err(|e| Error::io(self.file.path(), e))?;
        Ok(bytes)
    }

    fn corrupt(&self, what: &str) -> Error {
        corrupt(self.file.path(), what)
    }

    /// The segment's numbered strings (the table is made once, then kept while the file is
    /// open; its strings are read as they are asked for).
    pub(crate) fn strings(&self) -> Result<Arc<StringTable>> {
        let state = self.file.kept::<IndexState>()?;
        if let Some(strings) = state.strings.get() {
            return Ok(strings.clone());
        }
        let (at, len, _) = self.sections[Section::Strings as usize];
        let mut table = StringTable {
            file: self.file.clone(),
            at,
            len,
            count: 0,
            pages: (0..len.div_ceil(STRINGS_PAGE))
                .map(|_| OnceLock::new())
                .collect(),
        };
        let count = u64::from(table.word(0)?);
        if 4 + (count + 1) * 4 > len {
            return Err(self.corrupt("strings cut short"));
        }
        table.count = count as usize;
        Ok(state.strings.get_or_init(|| Arc::new(table)).clone())
    }

    fn postings(&self, a: u64, b: u64) -> Result<Vec<u32>> {
        if b == 0 {
            return Ok(vec![
                u32::try_from(a).map_err(|_| self.corrupt("ordinal out of range"))?,
            ]);
        }
        self.format
            .lists
            .decode(&self.postings_bytes(a, b, b)?, self.meta.n_events)
    }

    /// How many events the posting list of a table's `entry` holds, counted from the encoded
    /// list, not decoded: a packed list's first bytes, or its varints' last bytes.
    fn list_count(&self, entry: Option<(u64, u64)>) -> Result<u64> {
        match entry {
            None => Ok(0),
            Some((_, 0)) => Ok(1),
            Some((a, b)) => {
                let lists = self.format.lists;
                let len = usize::try_from(b).map_err(|_| self.corrupt("posting list too long"))?;
                let head = self.postings_bytes(a, b, lists.count_bytes(len) as u64)?;
                lists
                    .count(&head, len, self.meta.n_events)
                    .filter(|n| *n <= u64::from(self.meta.n_events))
                    .ok_or_else(|| self.corrupt("posting list malformed"))
            }
        }
    }

    /// The first `take` bytes of the encoded posting list at (`a`, `b`), a list of more than
    /// one event.
    fn postings_bytes(&self, a: u64, b: u64, take: u64) -> Result<Vec<u8>> {
        let (at, len, _) = self.sections[Section::Postings as usize];
        if a.checked_add(b).is_none_or(|end| end > len) {
            return Err(self.corrupt("posting list out of bounds"));
        }
        let mut bytes = vec![0u8; take.min(b) as usize];
        self.file
            .file()?
            .read_exact_at(&mut bytes, at + a)
            .map_err(|e| Error::io(self.file.path(), e))?;
        Ok(bytes)
    }
}

impl PartitionIndex for SealedIndex {
    fn n_events(&self) -> u32 {
        self.meta.n_events
    }

    fn time_range(&self) -> Option<(i64, i64)> {
        (self.meta.n_events > 0).then_some((self.meta.oldest_us, self.meta.newest_us))
    }

    fn term(&self, field: Field, value: &str) -> Result<Vec<u32>> {
        match self.table(Section::Terms)?.get(&term_key(field, value))? {
            Some((a, b)) => self.postings(a, b),
            None => Ok(Vec::new()),
        }
    }

    fn term_count(&self, field: Field, value: &str) -> Result<u64> {
        let entry = self.table(Section::Terms)?.get(&term_key(field, value))?;
        self.list_count(entry)
    }

    fn record(&self, number: u32) -> Result<Vec<u32>> {
        match self.table(Section::Records)?.get(&number.to_be_bytes())? {
            Some((a, b)) => self.postings(a, b),
            None => Ok(Vec::new()),
        }
    }

    fn record_count(&self, number: u32) -> Result<u64> {
        let entry = self.table(Section::Records)?.get(&number.to_be_bytes())?;
        self.list_count(entry)
    }

    fn term_values(&self, field: Field) -> Result<Vec<String>> {
        let mut values = Vec::new();
        self.table(Section::Terms)?
            .prefix(&[field as u8], &mut |key, _, _| {
                values.push(String::from_utf8_lossy(&key[1..]).into_owned());
            })?;
        Ok(values)
    }

    fn word_prefix(&self, prefix: &str) -> Result<Vec<u32>> {
        let mut found = Vec::new();
        self.table(Section::Words)?
            .prefix(prefix.as_bytes(), &mut |_, a, b| found.push((a, b)))?;
        let lists = found
            .into_iter()
            .map(|(a, b)| self.postings(a, b))
            .collect::<Result<Vec<_>>>()?;
        Ok(postings::union(lists))
    }

    fn times(&self) -> Result<Vec<i64>> {
        let bytes = self.read_section(Section::Times)?;
        if bytes.len() != self.meta.n_events as usize * 8 {
            return Err(self.corrupt("times section of the wrong size"));
        }
        Ok(bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
            .collect())
    }

    fn place(&self, ordinal: u32) -> Result<Place> {
        if ordinal >= self.meta.n_events {
            return Err(self.corrupt("ordinal out of range"));
        }
        let (at, _, _) = self.sections[Section::Places as usize];
        let mut bytes = [0u8; 8];
        self.file
            .file()?
            .read_exact_at(&mut bytes, at + u64::from(ordinal) * 8)
            .map_err(|e| Error::io(self.file.path(), e))?;
        Ok(Place {
            offset: u32::from_le_bytes(bytes[..4].try_into().expect("4")),
            len: u32::from_le_bytes(bytes[4..].try_into().expect("4")),
        })
    }

    fn ordinal_of(&self, id: &Uuid) -> Result<Option<u32>> {
        Ok(self
            .table(Section::Events)?
            .get(id.as_bytes())?
            .map(|(a, _)| a as u32))
    }

    fn retention_groups(&self) -> Result<RetentionGroups> {
        let bytes = self.read_section(Section::Retention)?;
        let mut groups = RetentionGroups::new();
        let count = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
            .ok_or_else(|| self.corrupt("retention cut short"))?;
        let mut pos = 4;
        for _ in 0..count {
            let mut key: [String; 4] = Default::default();
            for part in &mut key {
                let len = get_varint(&bytes, &mut pos)? as usize;
                let text = bytes
                    .get(pos..pos + len)
                    .ok_or_else(|| self.corrupt("retention cut short"))?;
                *part = String::from_utf8(text.to_vec())
                    .map_err(|_| self.corrupt("retention not UTF-8"))?;
                pos += len;
            }
            let newest = bytes
                .get(pos..pos + 8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8")))
                .ok_or_else(|| self.corrupt("retention cut short"))?;
            pos += 8;
            groups.insert(key, newest);
        }
        Ok(groups)
    }

    fn group(&self, field: GroupField) -> Result<(Vec<String>, Vec<u32>)> {
        let bytes = self.read_section(Section::Groups)?;
        let mut pos = 0;
        for current in GroupField::ALL {
            let n_values = get_varint(&bytes, &mut pos)? as usize;
            let mut values = Vec::with_capacity(n_values.min(bytes.len()));
            for _ in 0..n_values {
                let len = get_varint(&bytes, &mut pos)? as usize;
                let text = bytes
                    .get(pos..pos + len)
                    .ok_or_else(|| self.corrupt("groups cut short"))?;
                values.push(
                    String::from_utf8(text.to_vec())
                        .map_err(|_| self.corrupt("group not UTF-8"))?,
                );
                pos += len;
            }
            let mut column = Vec::with_capacity(self.meta.n_events as usize);
            for _ in 0..self.meta.n_events {
                let number = get_varint(&bytes, &mut pos)?;
                if number >= n_values as u64 {
                    return Err(self.corrupt("group value out of range"));
                }
                column.push(number as u32);
            }
            if current == field {
                return Ok((values, column));
            }
        }
        unreachable!("every group field is in the section")
    }
}

#[cfg(test)]
mod tests;
