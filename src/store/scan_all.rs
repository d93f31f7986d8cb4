//! Whole-store reads for the dashboard: every incident, once, in one read transaction.

use redb::ReadableTable;

use super::{COUNTS, INCIDENTS, Incident, Store, StoreError};

impl Store {
    /// Calls `f` with every incident (its hot fields authoritative), in fingerprint order,
    /// in one read transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn for_each_incident(&self, mut f: impl FnMut(Incident)) -> Result<(), StoreError> {
        let txn = self.begin_read()?;
        let incidents = txn.open_table(INCIDENTS).map_err(self.storage())?;
        let counts = txn.open_table(COUNTS).map_err(self.storage())?;
        // Both tables are keyed by fingerprint and written together: walk them side by side.
        let mut hot = counts.iter().map_err(self.storage())?.peekable();
        for row in incidents.iter().map_err(self.storage())? {
            let (k, v) = row.map_err(self.storage())?;
            let fp = k.value();
            let mut inc = self.decode(fp, v.value())?;
            while let Some(Ok((ck, _))) = hot.peek() {
                if ck.value() >= fp {
                    break;
                }
                hot.next();
            }
            if let Some(Ok((ck, cv))) = hot.peek()
                && ck.value() == fp
            {
                let (count, last_us) = cv.value();
                inc.count = count;
                inc.last_seen =
                    jiff::Timestamp::from_microsecond(last_us as i64).unwrap_or(inc.last_seen);
            }
            f(inc);
        }
        Ok(())
    }
}
