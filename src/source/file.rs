//! File sources: glob discovery, sharded tailing, rotation, committed positions.
