//! Whole-store reads for the dashboard: every incident, once, in one read transaction.

use redb::ReadableTable;

use super::state::{self, ReadCounts};
use super::{INCIDENTS, Incident, Store, StoreError};

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
        // Both tables are keyed by fingerprint and written together: walk them side by side.
        type Hot<'a> = Box<dyn Iterator<Item = Result<(u64, (u64, u64)), StoreError>> + 'a>;
        let mut hot: std::iter::Peekable<Hot<'_>> = match ReadCounts::open(self, &txn)? {
            ReadCounts::State(t) => {
                let rows = t.range::<u64>(..).map_err(self.storage())?;
                let it: Hot<'_> = Box::new(rows.map(move |r| {
                    let (k, v) = r.map_err(self.storage())?;
                    let fp = k.value();
                    let c =
                        state::counts(v.value()).map_err(|_| super::index::bad_row(self, fp))?;
                    Ok((fp, c))
                }));
                it.peekable()
            }
            ReadCounts::Legacy(t) => {
                let rows = t.range::<u64>(..).map_err(self.storage())?;
                let it: Hot<'_> = Box::new(rows.map(move |r| {
                    let (k, v) = r.map_err(self.storage())?;
                    Ok((k.value(), v.value()))
                }));
                it.peekable()
            }
            ReadCounts::Empty => {
                let it: Hot<'_> = Box::new(std::iter::empty());
                it.peekable()
            }
        };
        for row in incidents.iter().map_err(self.storage())? {
            let (k, v) = row.map_err(self.storage())?;
            let fp = k.value();
            let mut inc = self.decode(fp, v.value())?;
            while let Some(Ok((ck, _))) = hot.peek() {
                if *ck >= fp {
                    break;
                }
                hot.next();
            }
            if let Some(Ok((ck, (count, last_us)))) = hot.peek()
                && *ck == fp
            {
                inc.count = *count;
                inc.last_seen =
                    jiff::Timestamp::from_microsecond(*last_us as i64).unwrap_or(inc.last_seen);
            } else if let Some(Err(_)) = hot.peek()
                && let Some(Err(e)) = hot.next()
            {
                return Err(e);
            }
            f(inc);
        }
        Ok(())
    }
}
