//! Whole-store reads for the dashboard: every incident, once, in one read transaction.

use super::records::ReadRecords;
use super::state::{CountsOf, ReadCounts};
use super::{Incident, Store, StoreError};

impl Store {
    /// Calls `f` with every incident (its hot fields authoritative), in creation order (an
    /// older store read as it is: fingerprint order), in one read transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn for_each_incident(&self, mut f: impl FnMut(Incident)) -> Result<(), StoreError> {
        let txn = self.begin_read()?;
        let incidents = ReadRecords::open(self, &txn)?;
        let counts = ReadCounts::open(self, &txn)?;
        let Some(rows) = incidents.iter().map_err(self.storage())? else {
            return Ok(());
        };
        for row in rows {
            let (k, v) = row.map_err(self.storage())?;
            let mut inc = self.decode(k.value(), v.value())?;
            if let Some((count, last_us)) = counts.counts_of(self, inc.fingerprint.0)? {
                inc.count = count;
                inc.last_seen =
                    jiff::Timestamp::from_microsecond(last_us as i64).unwrap_or(inc.last_seen);
            }
            f(inc);
        }
        Ok(())
    }
}
