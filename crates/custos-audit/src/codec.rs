//! The on-disk encoding of one audit record: compact, explicit and versioned.
//!
//! Layout of version 1 (all integers little-endian, `varint` is LEB128, `str` is a varint byte
//! length followed by UTF-8, `opt` is a 0/1 byte followed by the value when 1):
//!
//! ```text
//! u8 version=1 | [16] id | i64 creation_time_us | [16] tenant_id
//! str instance | str instance_url | str workload | str record_type | str operation | str category
//! str user_id | str user_upn | u8 user_type | str caller_id | str client_ip | str user_agent
//! u8 origin | str correlation_id | str session_id | str client_request_id
//! u8 result_status | str error_code | str entity_name | u8 entity_category
//! varint n_record_ids | n × [16] record id | str query | varint result_count
//! varint n_changes | n × (str attribute | opt str old | opt str new) | str details
//! ```
//!
//! Decoding treats the bytes as untrusted input: every length is bounds-checked and an unknown
//! version, enum code or trailing byte is reported as corruption, never a panic.

use uuid::Uuid;

use crate::event::{AuditEvent, Change, EntityCategory, Origin, ResultStatus, UserType};
use crate::{Error, Result};

/// The encoding version written by this build.
pub const CODEC_VERSION: u8 = 1;

/// Appends the encoding of `event` to `out`.
pub fn encode_event(event: &AuditEvent, out: &mut Vec<u8>) {
    out.push(CODEC_VERSION);
    out.extend_from_slice(event.id.as_bytes());
    out.extend_from_slice(&event.creation_time_us.to_le_bytes());
    out.extend_from_slice(event.tenant_id.as_bytes());
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
        put_str(out, text);
    }
    out.push(event.user_type.code());
    for text in [&event.caller_id, &event.client_ip, &event.user_agent] {
        put_str(out, text);
    }
    out.push(event.origin.code());
    for text in [
        &event.correlation_id,
        &event.session_id,
        &event.client_request_id,
    ] {
        put_str(out, text);
    }
    out.push(event.result_status.code());
    put_str(out, &event.error_code);
    put_str(out, &event.entity_name);
    out.push(event.entity_category.code());
    put_varint(out, event.record_ids.len() as u64);
    for record_id in &event.record_ids {
        out.extend_from_slice(record_id.as_bytes());
    }
    put_str(out, &event.query);
    put_varint(out, event.result_count);
    put_varint(out, event.changes.len() as u64);
    for change in &event.changes {
        put_str(out, &change.attribute);
        put_opt_str(out, change.old.as_deref());
        put_opt_str(out, change.new.as_deref());
    }
    put_str(out, &event.details);
}

/// Decodes one record produced by [`encode_event`].
pub fn decode_event(bytes: &[u8]) -> Result<AuditEvent> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u8()?;
    if version != CODEC_VERSION {
        return Err(Error::Corrupted(format!(
            "unknown record version {version}"
        )));
    }
    let id = r.uuid()?;
    let creation_time_us = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let tenant_id = r.uuid()?;
    let instance = r.str()?;
    let instance_url = r.str()?;
    let workload = r.str()?;
    let record_type = r.str()?;
    let operation = r.str()?;
    let category = r.str()?;
    let user_id = r.str()?;
    let user_upn = r.str()?;
    let user_type = r.code(UserType::from_code, "user type")?;
    let caller_id = r.str()?;
    let client_ip = r.str()?;
    let user_agent = r.str()?;
    let origin = r.code(Origin::from_code, "origin")?;
    let correlation_id = r.str()?;
    let session_id = r.str()?;
    let client_request_id = r.str()?;
    let result_status = r.code(ResultStatus::from_code, "result status")?;
    let error_code = r.str()?;
    let entity_name = r.str()?;
    let entity_category = r.code(EntityCategory::from_code, "entity category")?;
    let n_record_ids = r.len(16)?;
    let mut record_ids = Vec::with_capacity(n_record_ids);
    for _ in 0..n_record_ids {
        record_ids.push(r.uuid()?);
    }
    let query = r.str()?;
    let result_count = r.varint()?;
    let n_changes = r.len(3)?;
    let mut changes = Vec::with_capacity(n_changes);
    for _ in 0..n_changes {
        let attribute = r.str()?;
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
    Ok(AuditEvent {
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
    })
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
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

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
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

    fn code<T>(&mut self, from_code: fn(u8) -> Option<T>, what: &str) -> Result<T> {
        let code = self.u8()?;
        from_code(code).ok_or_else(|| Error::Corrupted(format!("unknown {what} code {code}")))
    }
}

#[cfg(test)]
pub(crate) mod tests;
