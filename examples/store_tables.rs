//! Where a store's bytes are: every table's rows, pages and stored bytes.
//!
//! `cargo run --release --example store_tables -- STATE_DIR/sentinel.redb`
//!
//! Opens the file read-only (a running daemon's store can be read) and prints one line per
//! table, largest first, then the file's size: what `sentinel status` summarises as one
//! figure, per table, for sizing the store and finding what grows.

use redb::{ReadOnlyDatabase, ReadableDatabase, ReadableTableMetadata, TableHandle};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: store_tables STATE_DIR/sentinel.redb")?;
    let db = ReadOnlyDatabase::open(&path)?;
    let txn = db.begin_read()?;
    let mut rows = Vec::new();
    for handle in txn.list_tables()? {
        let name = handle.name().to_string();
        let table = txn.open_untyped_table(handle)?;
        let s = table.stats()?;
        let pages = s.leaf_pages() + s.branch_pages();
        rows.push((
            name,
            table.len()?,
            pages,
            s.stored_bytes(),
            s.fragmented_bytes(),
        ));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    println!(
        "{:<28} {:>10} {:>8} {:>12} {:>12} {:>9}",
        "table", "rows", "pages", "stored B", "fragmented", "B/row"
    );
    let mut total_pages = 0;
    for (name, n, pages, stored, frag) in &rows {
        total_pages += pages;
        let per_row = if *n == 0 { 0 } else { stored / n };
        println!("{name:<28} {n:>10} {pages:>8} {stored:>12} {frag:>12} {per_row:>9}");
    }
    let file = std::fs::metadata(&path)?.len();
    println!(
        "pages in tables: {total_pages} (4 KiB each: {} bytes); file: {file} bytes",
        total_pages * 4096
    );
    Ok(())
}
