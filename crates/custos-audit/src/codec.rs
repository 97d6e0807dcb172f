//! The on-disk encoding of audit records: compact, explicit and versioned.
//!
//! Record ids are numbered once for the whole log (`ids`): the first time the log sees an id it
//! is written inline and takes the next number, later records refer to the number. Low-
//! cardinality strings (users, agents, addresses, operations…) repeat within a partition, so
//! each segment numbers its own the same way. References only point backwards, so a segment
//! decodes front to back given the record ids numbered before it (its header says how many),
//! and one record decodes alone given the id table and its segment's strings.
//!
//! Layout of version 3 (integers little-endian, `varint` LEB128, `zigzag` signed varint):
//!
//! ```text
//! u8 version=3 | [16] id | zigzag creation_time_us
//! ref tenant_id
//! dstr instance | dstr instance_url | dstr workload | dstr record_type | dstr operation | dstr category
//! dstr user_id | dstr user_upn | u8 user_type | dstr caller_id | dstr client_ip | dstr user_agent
//! u8 origin | ustr correlation_id | dstr session_id | str client_request_id
//! u8 result_status | dstr error_code | dstr entity_name | u8 entity_category
//! varint n_record_ids | n × ref record id | str query | varint result_count
//! varint n_changes | n × (dstr attribute | opt str old | opt str new) | str details
//!
//! ref  = varint 0 then [16] (a new id), or varint k+1 (the id numbered k in the log)
//! dstr = varint 0 then str (a new string), or varint k+1 (the string numbered k in the segment)
//! ustr = u8 1 then [16] (a GUID in its lowercase hyphenated form), or u8 0 then str
//! str  = varint byte length, UTF-8;  opt = u8 0, or u8 1 then the value
//! ```
//!
//! Decoding treats the bytes as untrusted input: every length and reference is checked and an
//! unknown version, enum code or trailing byte is reported as corruption, never a panic.

use std::borrow::Cow;

use uuid::Uuid;

use crate::event::{AuditEvent, Change, EntityCategory, Origin, ResultStatus, UserType};
use crate::ids::{IdDict, IdTable};
use crate::{Error, Result};

/// The encoding version written by this build.
pub(crate) const CODEC_VERSION: u8 = 3;

/// Encodes the records of one segment, numbering new values as it goes: record ids in the
/// log's [`IdDict`], strings for the segment. Owned by the writer thread, the only one that
/// numbers.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    string_numbers: crate::partition::FastMap<String, u32>,
    strings_len: u32,
    /// Record ids numbered since the last [`Encoder::take_numbered`], from `first_new_id`.
    new_ids: Vec<Uuid>,
    first_new_id: u32,
    /// Strings numbered since the last [`Encoder::take_numbered`].
    new_strings: Vec<String>,
    /// The numbers an event's record ids had before it (reused between events).
    found: Vec<Option<u32>>,
}

/// What one batch numbered: record ids from `first_id` on, and the segment's new strings.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Numbered {
    pub(crate) first_id: u32,
    pub(crate) ids: Vec<Uuid>,
    pub(crate) strings: Vec<String>,
}

impl Encoder {
    /// An encoder continuing a segment whose records numbered `strings`, in a log whose
    /// records numbered `ids_len` record ids.
    pub(crate) fn resume(ids_len: usize, strings: &[String]) -> Encoder {
        Encoder {
            string_numbers: strings
                .iter()
                .enumerate()
                .map(|(n, s)| (s.clone(), n as u32))
                .collect(),
            strings_len: strings.len() as u32,
            new_ids: Vec::new(),
            first_new_id: ids_len as u32,
            new_strings: Vec::new(),
            found: Vec::new(),
        }
    }

    /// Starts a new segment: its strings are numbered from 0.
    pub(crate) fn new_segment(&mut self) {
        assert!(
            self.new_strings.is_empty(),
            "a segment ends between batches"
        );
        self.string_numbers.clear();
        self.strings_len = 0;
    }

    /// What was numbered since the last call, now that the batch that numbered it is durable.
    pub(crate) fn take_numbered(&mut self) -> Numbered {
        let numbered = Numbered {
            first_id: self.first_new_id,
            ids: std::mem::take(&mut self.new_ids),
            strings: std::mem::take(&mut self.new_strings),
        };
        self.first_new_id += numbered.ids.len() as u32;
        numbered
    }

    /// Forgets what `batches` numbered (taken by [`Encoder::take_numbered`], oldest first) and
    /// whatever was numbered after them: those batches were not made durable.
    pub(crate) fn forget(&mut self, batches: &[Numbered], ids: &mut IdDict) {
        let Some(first) = batches.first() else {
            return;
        };
        ids.truncate(first.first_id as usize);
        self.first_new_id = first.first_id;
        self.new_ids.clear();
        let strings = batches.iter().flat_map(|batch| &batch.strings);
        for string in strings.chain(&self.new_strings) {
            self.string_numbers.remove(string);
        }
        self.new_strings.clear();
        self.strings_len = self.string_numbers.len() as u32;
    }

    fn id(&mut self, id: Uuid, ids: &mut IdDict, out: &mut Vec<u8>) -> u32 {
        self.id_found(id, None, ids, out)
    }

    /// [`Encoder::id`] for an id whose number a batched lookup may have `found` already; one it
    /// did not find is looked up again (an earlier id of the same event may have numbered it).
    fn id_found(
        &mut self,
        id: Uuid,
        found: Option<u32>,
        ids: &mut IdDict,
        out: &mut Vec<u8>,
    ) -> u32 {
        match found.or_else(|| ids.number(&id)) {
            Some(n) => {
                put_varint(out, u64::from(n) + 1);
                n
            }
            None => {
                self.new_ids.push(id);
                put_varint(out, 0);
                out.extend_from_slice(id.as_bytes());
                ids.push(id)
            }
        }
    }

    fn string(&mut self, text: &str, out: &mut Vec<u8>) {
        match self.string_numbers.get(text) {
            Some(n) => put_varint(out, u64::from(*n) + 1),
            None => {
                self.string_numbers
                    .insert(text.to_string(), self.strings_len);
                self.strings_len += 1;
                self.new_strings.push(text.to_string());
                put_varint(out, 0);
                put_str(out, text);
            }
        }
    }

    /// Appends the encoding of `event` to `out`, numbering its new values; `record_numbers`
    /// gets the number of each of its record ids, in order.
    pub(crate) fn encode(
        &mut self,
        event: &AuditEvent,
        ids: &mut IdDict,
        out: &mut Vec<u8>,
        record_numbers: &mut Vec<u32>,
    ) {
        out.push(CODEC_VERSION);
        out.extend_from_slice(event.id.as_bytes());
        put_varint(out, zigzag(event.creation_time_us));
        self.id(event.tenant_id, ids, out);
        for text in [
            &event.instance,
            &event.instance_url,
            &event.workload,
            &event.record_type,
            &event.operation,
            &event.category,
            &event.user_id,
            &event.user_upn,
        ] {
            self.string(text, out);
        }
        out.push(event.user_type.code());
        for text in [&event.caller_id, &event.client_ip, &event.user_agent] {
            self.string(text, out);
        }
        out.push(event.origin.code());
        put_uuid_str(out, &event.correlation_id);
        self.string(&event.session_id, out);
        put_str(out, &event.client_request_id);
        out.push(event.result_status.code());
        self.string(&event.error_code, out);
        self.string(&event.entity_name, out);
        out.push(event.entity_category.code());
        put_varint(out, event.record_ids.len() as u64);
        record_numbers.clear();
        let mut found = std::mem::take(&mut self.found);
        ids.numbers_of(&event.record_ids, &mut found);
        for (record_id, number) in event.record_ids.iter().zip(&found) {
            record_numbers.push(self.id_found(*record_id, *number, ids, out));
        }
        self.found = found;
        put_str(out, &event.query);
        put_varint(out, event.result_count);
        put_varint(out, event.changes.len() as u64);
        for change in &event.changes {
            self.string(&change.attribute, out);
            put_opt_str(out, change.old.as_deref());
            put_opt_str(out, change.new.as_deref());
        }
        put_str(out, &event.details);
    }
}

/// Decodes the next record of a segment read front to back, numbering the values it defines:
/// record ids in `ids` (the log's), strings in `strings` (the segment's). Returns the event
/// and the number of each of its record ids.
pub(crate) fn decode_next(
    bytes: &[u8],
    ids: &mut impl Numbering,
    strings: &mut Vec<String>,
) -> Result<(AuditEvent, Vec<u32>)> {
    let decoded = decode(bytes, ids.table(), strings.as_slice(), true)?;
    for id in decoded.ids_seen {
        ids.learn(id);
    }
    strings.extend(decoded.strings_seen);
    Ok((decoded.event, decoded.record_numbers))
}

/// Where a front-to-back read numbers the record ids it meets: the table alone (to verify) or
/// the table with its way back from id to number (to index and write on).
pub(crate) trait Numbering {
    fn table(&self) -> &IdTable;
    /// Numbers `id` (the next number).
    fn learn(&mut self, id: Uuid);
}

impl Numbering for IdTable {
    fn table(&self) -> &IdTable {
        self
    }

    fn learn(&mut self, id: Uuid) {
        self.push(id);
    }
}

impl Numbering for IdDict {
    fn table(&self) -> &IdTable {
        &self.table
    }

    fn learn(&mut self, id: Uuid) {
        self.push(id);
    }
}

/// A segment's numbered strings, as a record's references look them up: the list a live
/// partition grows, or a sealed partition's table read from its index file.
pub(crate) trait Strings {
    fn len(&self) -> usize;
    /// String number `n` (`None` past the last), or why it cannot be read.
    fn get(&self, n: usize) -> Result<Option<Cow<'_, str>>>;
}

impl Strings for [String] {
    fn len(&self) -> usize {
        <[String]>::len(self)
    }

    fn get(&self, n: usize) -> Result<Option<Cow<'_, str>>> {
        Ok(<[String]>::get(self, n).map(|s| Cow::Borrowed(s.as_str())))
    }
}

/// Decodes one record alone, given the log's ids and its segment's strings up to (at least) it.
pub(crate) fn decode_event<S: Strings + ?Sized>(
    bytes: &[u8],
    ids: &IdTable,
    strings: &S,
) -> Result<AuditEvent> {
    Ok(decode(bytes, ids, strings, false)?.event)
}

struct Decoded {
    event: AuditEvent,
    record_numbers: Vec<u32>,
    ids_seen: Vec<Uuid>,
    strings_seen: Vec<String>,
}

fn decode<S: Strings + ?Sized>(
    bytes: &[u8],
    ids: &IdTable,
    strings: &S,
    learn: bool,
) -> Result<Decoded> {
    let mut r = Reader {
        bytes,
        pos: 0,
        ids,
        strings,
        learn,
        ids_seen: Vec::new(),
        strings_seen: Vec::new(),
    };
    let version = r.u8()?;
    if version != CODEC_VERSION {
        return Err(Error::Corrupted(format!(
            "unknown record version {version}"
        )));
    }
    let id = r.uuid()?;
    let creation_time_us = unzigzag(r.varint()?);
    let (tenant_id, _) = r.id()?;
    let instance = r.dstr()?;
    let instance_url = r.dstr()?;
    let workload = r.dstr()?;
    let record_type = r.dstr()?;
    let operation = r.dstr()?;
    let category = r.dstr()?;
    let user_id = r.dstr()?;
    let user_upn = r.dstr()?;
    let user_type = r.code(UserType::from_code, "user type")?;
    let caller_id = r.dstr()?;
    let client_ip = r.dstr()?;
    let user_agent = r.dstr()?;
    let origin = r.code(Origin::from_code, "origin")?;
    let correlation_id = r.uuid_str()?;
    let session_id = r.dstr()?;
    let client_request_id = r.str()?;
    let result_status = r.code(ResultStatus::from_code, "result status")?;
    let error_code = r.dstr()?;
    let entity_name = r.dstr()?;
    let entity_category = r.code(EntityCategory::from_code, "entity category")?;
    let (record_ids, record_numbers) = r.record_ids()?;
    let query = r.str()?;
    let result_count = r.varint()?;
    let n_changes = r.len(3)?;
    let mut changes = Vec::with_capacity(n_changes);
    for _ in 0..n_changes {
        let attribute = r.dstr()?;
        let old = r.opt_str()?;
        let new = r.opt_str()?;
        changes.push(Change {
            attribute,
            old,
            new,
        });
    }
    let details = r.str()?;
    if r.pos != bytes.len() {
        return Err(Error::Corrupted(format!(
            "{} trailing bytes after record",
            bytes.len() - r.pos
        )));
    }
    let Reader {
        ids_seen,
        strings_seen,
        ..
    } = r;
    let event = AuditEvent {
        id,
        creation_time_us,
        tenant_id,
        instance,
        instance_url,
        workload,
        record_type,
        operation,
        category,
        user_id,
        user_upn,
        user_type,
        caller_id,
        client_ip,
        user_agent,
        origin,
        correlation_id,
        session_id,
        client_request_id,
        result_status,
        error_code,
        entity_name,
        entity_category,
        record_ids,
        query,
        result_count,
        changes,
        details,
    };
    Ok(Decoded {
        event,
        record_numbers,
        ids_seen,
        strings_seen,
    })
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_str(out, text);
        }
    }
}

/// A GUID-shaped string in 16 bytes when it round-trips exactly, else as text.
fn put_uuid_str(out: &mut Vec<u8>, text: &str) {
    match Uuid::parse_str(text).ok().filter(|u| u.to_string() == text) {
        Some(uuid) => {
            out.push(1);
            out.extend_from_slice(uuid.as_bytes());
        }
        None => {
            out.push(0);
            put_str(out, text);
        }
    }
}

struct Reader<'a, S: ?Sized> {
    bytes: &'a [u8],
    pos: usize,
    ids: &'a IdTable,
    strings: &'a S,
    learn: bool,
    /// Values this record numbers, in order (they follow the tables' numbers).
    ids_seen: Vec<Uuid>,
    strings_seen: Vec<String>,
}

impl<'a, S: Strings + ?Sized> Reader<'a, S> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::Corrupted(format!(
                "record truncated at byte {}",
                self.pos
            )));
        };
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::Corrupted(format!(
            "varint too long at byte {}",
            self.pos
        )))
    }

    /// A count of items each at least `item_bytes_min` long, checked against what is left.
    fn len(&mut self, item_bytes_min: usize) -> Result<usize> {
        let n = self.varint()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(item_bytes_min as u64) > left {
            return Err(Error::Corrupted(format!(
                "count {n} exceeds the record at byte {}",
                self.pos
            )));
        }
        Ok(n as usize)
    }

    fn str(&mut self) -> Result<String> {
        let n = self.len(1)?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::Corrupted(format!("invalid utf-8 before byte {}", self.pos)))
    }

    fn opt_str(&mut self) -> Result<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            flag => Err(Error::Corrupted(format!("invalid option flag {flag}"))),
        }
    }

    fn uuid(&mut self) -> Result<Uuid> {
        Ok(Uuid::from_bytes(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }

    fn uuid_str(&mut self) -> Result<String> {
        match self.u8()? {
            0 => self.str(),
            1 => Ok(self.uuid()?.to_string()),
            flag => Err(Error::Corrupted(format!("invalid id flag {flag}"))),
        }
    }

    /// Resolves reference `k`: numbers first cover what was numbered before this record, then
    /// what this record numbered itself (only while learning; reading alone, the tables hold
    /// both).
    fn reference<T: Clone>(
        &self,
        k: u64,
        known: Option<T>,
        n_known: usize,
        seen: &[T],
        what: &str,
    ) -> Result<T> {
        let k = k as usize;
        let found = if k < n_known {
            known
        } else if self.learn {
            seen.get(k - n_known).cloned()
        } else {
            None
        };
        found.ok_or_else(|| {
            Error::Corrupted(format!(
                "{what} reference {k} before it was defined, at byte {}",
                self.pos
            ))
        })
    }

    /// A record id and its number.
    fn id(&mut self) -> Result<(Uuid, u32)> {
        let (id, number) = match self.varint()? {
            0 => {
                let id = self.uuid()?;
                self.ids_seen.push(id);
                (id, self.ids.len() + self.ids_seen.len() - 1)
            }
            k => {
                let known = usize::try_from(k - 1).ok().and_then(|n| self.ids.get(n));
                let id = self.reference(k - 1, known, self.ids.len(), &self.ids_seen, "id")?;
                (id, (k - 1) as usize)
            }
        };
        let number = u32::try_from(number)
            .map_err(|_| Error::Corrupted(format!("id number {number} out of range")))?;
        Ok((id, number))
    }

    /// A record's list of record ids and their numbers. The numbers are read first and the ids
    /// looked up after, in a loop of independent reads: the id table is far larger than the
    /// caches and a record lists up to 5,000 ids, so the reads' cache misses overlap rather than
    /// wait on one another (a lookup per reference was 13 % of verification's samples, nearly
    /// all of it the stall on the id's load).
    fn record_ids(&mut self) -> Result<(Vec<Uuid>, Vec<u32>)> {
        let n = self.len(1)?;
        let mut numbers = Vec::with_capacity(n);
        for _ in 0..n {
            let number = match self.varint()? {
                0 => {
                    let id = self.uuid()?;
                    self.ids_seen.push(id);
                    self.ids.len() + self.ids_seen.len() - 1
                }
                k => {
                    let k = usize::try_from(k - 1).unwrap_or(usize::MAX);
                    let defined = self.ids.len() + if self.learn { self.ids_seen.len() } else { 0 };
                    if k >= defined {
                        return Err(Error::Corrupted(format!(
                            "id reference {k} before it was defined, at byte {}",
                            self.pos
                        )));
                    }
                    k
                }
            };
            numbers.push(
                u32::try_from(number)
                    .map_err(|_| Error::Corrupted(format!("id number {number} out of range")))?,
            );
        }
        let known = self.ids.len();
        let ids = numbers
            .iter()
            .map(|&number| {
                let number = number as usize;
                match self.ids.get(number) {
                    Some(id) => id,
                    None => self.ids_seen[number - known],
                }
            })
            .collect();
        Ok((ids, numbers))
    }

    fn dstr(&mut self) -> Result<String> {
        match self.varint()? {
            0 => {
                let text = self.str()?;
                self.strings_seen.push(text.clone());
                Ok(text)
            }
            k => {
                let known = match usize::try_from(k - 1) {
                    Ok(n) => self.strings.get(n)?.map(Cow::into_owned),
                    Err(_) => None,
                };
                self.reference(
                    k - 1,
                    known,
                    self.strings.len(),
                    &self.strings_seen,
                    "string",
                )
            }
        }
    }

    fn code<T>(&mut self, from_code: fn(u8) -> Option<T>, what: &str) -> Result<T> {
        let code = self.u8()?;
        from_code(code).ok_or_else(|| Error::Corrupted(format!("unknown {what} code {code}")))
    }
}

#[cfg(test)]
pub(crate) mod tests;
