//! `incident_state` (schema version 5): everything a batch reads and writes of an incident
//! it has seen before, in one row.
//!
//! Version 4 kept it in three tables: `incident_counts` (count, last_seen µs),
//! `incident_attrs` (status, severity, component: where the incident's index entries are)
//! and `incident_actioned` (the fix job it got). A new incident cost an insert in each, and
//! every incident seen again a look-up in each. One row costs one of each.
//!
//! The row, little-endian, fixed offsets first so that the hot fields are read and patched
//! in place:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | format (1) |
//! | 1..9 | count |
//! | 9..17 | last seen (µs) |
//! | 17..25 | actioned: the fix job's sequence (0: escalated or sent to triage), `u64::MAX`: not actioned |
//! | 25 | status, its place in [`IncidentStatus::ALL`] |
//! | 26 | severity, its place in [`Severity::ALL`] |
//! | 27 | the incident id's length, n |
//! | 28..28+n | incident id, UTF-8 |
//! | 28+n.. | component id, UTF-8 |
//!
//! The authoritative count and last seen of an incident are here (its record keeps them as
//! created); status, severity and component are what the secondary indexes hold for it
//! (`store/index.rs`), kept with them by every transaction that changes one. The id is here
//! so that the event of an incident seen again (`incident_updated`, its count moved) is
//! written from this row alone: no look-up of the id, no decoding of the record.

use super::IncidentStatus;
use crate::attribute::Severity;

const FORMAT: u8 = 1;
const COUNT: usize = 1;
const LAST: usize = 9;
const ACTIONED: usize = 17;
const STATUS: usize = 25;
const SEVERITY: usize = 26;
const ID_LEN: usize = 27;
const ID: usize = 28;
const NOT_ACTIONED: u64 = u64::MAX;

/// The hot fields of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hot {
    pub count: u64,
    pub last_us: u64,
    /// The fix job's sequence (0: escalated or triage) once the incident turned actionable.
    pub actioned: Option<u64>,
}

/// (status, severity, component) as the indexes spell them.
pub(crate) type Names<'a> = (&'a str, &'a str, &'a str);

/// A row that is not one this version wrote.
#[derive(Debug)]
pub(crate) struct BadRow;

fn u64_at(row: &[u8], at: usize) -> Result<u64, BadRow> {
    row.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(BadRow)
}

/// Writes a row: `hot`, `names` (which must be `as_str` spellings) and the incident's id
/// (at most 255 bytes).
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    hot: Hot,
    names: Names<'_>,
    id: &str,
) -> Result<(), BadRow> {
    let id_len = u8::try_from(id.len()).map_err(|_| BadRow)?;
    let status = IncidentStatus::ALL
        .iter()
        .position(|s| s.as_str() == names.0)
        .ok_or(BadRow)?;
    let severity = Severity::ALL
        .iter()
        .position(|s| s.as_str() == names.1)
        .ok_or(BadRow)?;
    buf.clear();
    buf.push(FORMAT);
    buf.extend_from_slice(&hot.count.to_le_bytes());
    buf.extend_from_slice(&hot.last_us.to_le_bytes());
    buf.extend_from_slice(&hot.actioned.unwrap_or(NOT_ACTIONED).to_le_bytes());
    buf.push(status as u8);
    buf.push(severity as u8);
    buf.push(id_len);
    buf.extend_from_slice(id.as_bytes());
    buf.extend_from_slice(names.2.as_bytes());
    Ok(())
}

/// The hot fields of a row.
pub(crate) fn hot(row: &[u8]) -> Result<Hot, BadRow> {
    if row.first() != Some(&FORMAT) || row.len() < ID {
        return Err(BadRow);
    }
    let actioned = u64_at(row, ACTIONED)?;
    Ok(Hot {
        count: u64_at(row, COUNT)?,
        last_us: u64_at(row, LAST)?,
        actioned: (actioned != NOT_ACTIONED).then_some(actioned),
    })
}

/// (count, last seen µs) of a row: what a reader of an incident needs.
pub(crate) fn counts(row: &[u8]) -> Result<(u64, u64), BadRow> {
    hot(row).map(|h| (h.count, h.last_us))
}

/// The names of a row (status and severity as their enums spell them: `'static`).
pub(crate) fn names(row: &[u8]) -> Result<(&'static str, &'static str, &str), BadRow> {
    hot(row)?;
    let status = IncidentStatus::ALL
        .get(usize::from(row[STATUS]))
        .ok_or(BadRow)?;
    let severity = Severity::ALL
        .get(usize::from(row[SEVERITY]))
        .ok_or(BadRow)?;
    let component = row.get(ID + usize::from(row[ID_LEN])..).ok_or(BadRow)?;
    let component = std::str::from_utf8(component).map_err(|_| BadRow)?;
    Ok((status.as_str(), severity.as_str(), component))
}

/// The incident id of a row.
pub(crate) fn id(row: &[u8]) -> Result<&str, BadRow> {
    hot(row)?;
    let id = row.get(ID..ID + usize::from(row[ID_LEN])).ok_or(BadRow)?;
    std::str::from_utf8(id).map_err(|_| BadRow)
}

/// Sets the hot fields of a row (read with [`hot`]) in place.
pub(crate) fn set_hot(row: &mut [u8], hot: Hot) {
    row[COUNT..COUNT + 8].copy_from_slice(&hot.count.to_le_bytes());
    row[LAST..LAST + 8].copy_from_slice(&hot.last_us.to_le_bytes());
    row[ACTIONED..ACTIONED + 8]
        .copy_from_slice(&hot.actioned.unwrap_or(NOT_ACTIONED).to_le_bytes());
}

/// Where a reader finds incidents' authoritative (count, last seen µs).
pub(crate) trait CountsOf {
    /// (count, last seen µs) of incident `fp`, if it has them.
    fn counts_of(
        &self,
        st: &super::Store,
        fp: u64,
    ) -> Result<Option<(u64, u64)>, super::StoreError>;
}

/// (count, last seen µs) of incident `fp` from its row in `t`, if it has one.
fn row_counts(
    st: &super::Store,
    t: &impl redb::ReadableTable<u64, &'static [u8]>,
    fp: u64,
) -> Result<Option<(u64, u64)>, super::StoreError> {
    match t.get(fp).map_err(st.storage())? {
        Some(v) => counts(v.value())
            .map(Some)
            .map_err(|_| super::index::bad_row(st, fp)),
        None => Ok(None),
    }
}

/// `incident_state` in a write transaction (always this version's: a writer migrates).
impl CountsOf for redb::Table<'_, u64, &'static [u8]> {
    fn counts_of(
        &self,
        st: &super::Store,
        fp: u64,
    ) -> Result<Option<(u64, u64)>, super::StoreError> {
        row_counts(st, self, fp)
    }
}

/// The counts table of a read transaction: `incident_state`, or an older store's
/// `incident_counts` (read as it is by a read-only handle), or none.
pub(crate) enum ReadCounts {
    State(redb::ReadOnlyTable<u64, &'static [u8]>),
    Legacy(redb::ReadOnlyTable<u64, (u64, u64)>),
    Empty,
}

impl ReadCounts {
    pub(crate) fn open(
        st: &super::Store,
        txn: &redb::ReadTransaction,
    ) -> Result<ReadCounts, super::StoreError> {
        if let Some(t) = st.read_table(txn, super::schema::STATE)? {
            return Ok(ReadCounts::State(t));
        }
        Ok(match st.read_table(txn, super::schema::COUNTS)? {
            Some(t) => ReadCounts::Legacy(t),
            None => ReadCounts::Empty,
        })
    }
}

impl CountsOf for ReadCounts {
    fn counts_of(
        &self,
        st: &super::Store,
        fp: u64,
    ) -> Result<Option<(u64, u64)>, super::StoreError> {
        match self {
            ReadCounts::State(t) => row_counts(st, t, fp),
            ReadCounts::Legacy(t) => Ok(t.get(fp).map_err(st.storage())?.map(|v| v.value())),
            ReadCounts::Empty => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reads_back_and_its_hot_fields_patch_in_place() {
        let mut buf = Vec::new();
        for (actioned, status, severity, component) in [
            (None, IncidentStatus::Detected, Severity::Low, "auth"),
            (Some(0), IncidentStatus::Escalated, Severity::Critical, ""),
            (
                Some(7),
                IncidentStatus::Resolved,
                Severity::Compliance,
                "päy_svc",
            ),
        ] {
            let h = Hot {
                count: 42,
                last_us: 1_765_000_000_000_000,
                actioned,
            };
            let n = (status.as_str(), severity.as_str(), component);
            encode(&mut buf, h, n, "0123456789ab").unwrap();
            assert_eq!(hot(&buf).unwrap(), h);
            assert_eq!(counts(&buf).unwrap(), (42, 1_765_000_000_000_000));
            assert_eq!(names(&buf).unwrap(), n);
            assert_eq!(id(&buf).unwrap(), "0123456789ab");
            let moved = Hot {
                count: 43,
                last_us: 1_765_000_000_000_001,
                actioned: Some(9),
            };
            set_hot(&mut buf, moved);
            assert_eq!(hot(&buf).unwrap(), moved);
            assert_eq!(names(&buf).unwrap(), n);
            assert_eq!(id(&buf).unwrap(), "0123456789ab");
        }
        // Golden bytes: the layout is a file format.
        encode(
            &mut buf,
            Hot {
                count: 2,
                last_us: 3,
                actioned: None,
            },
            ("resolved", "high", "c"),
            "ab",
        )
        .unwrap();
        let mut want = vec![1u8];
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&[0xff; 8]);
        // `resolved` is the sixth status, `high` the third severity.
        want.extend_from_slice(&[5, 2, 2, b'a', b'b', b'c']);
        assert_eq!(buf, want);
    }

    #[test]
    fn rows_this_version_did_not_write_are_refused() {
        assert!(hot(&[]).is_err());
        assert!(hot(&[2; 30]).is_err());
        assert!(hot(&[1; 20]).is_err());
        let mut row = vec![1u8];
        row.extend_from_slice(&[0; 24]);
        row.extend_from_slice(&[99, 0, 0]);
        assert!(hot(&row).is_ok());
        assert!(names(&row).is_err(), "status 99");
        row[25] = 0;
        row[27] = 5;
        assert!(id(&row).is_err(), "an id past the row's end");
        assert!(names(&row).is_err(), "an id past the row's end");
        let mut buf = Vec::new();
        let h = Hot {
            count: 1,
            last_us: 1,
            actioned: None,
        };
        assert!(encode(&mut buf, h, ("nope", "low", "c"), "i").is_err());
        assert!(encode(&mut buf, h, ("detected", "low", "c"), &"i".repeat(256)).is_err());
        encode(&mut buf, h, ("detected", "low", "c"), "i").unwrap();
        buf.push(0xff);
        assert!(names(&buf).is_err(), "not UTF-8");
    }
}
