//! The store test suite against the embedded SQLite store: in memory, and on a file (the
//! file store adds what memory has not: the background checkpoint thread, group commit
//! across WAL frames, a reopen).

use portcullis_core::store::{SqliteStore, Store};
use portcullis_tests::store_suite;

#[test]
fn store_suite_passes_on_sqlite_in_memory() {
    let store = SqliteStore::open_in_memory().expect("open an in-memory store");
    store_suite::run_all(&store);
}

#[test]
fn store_suite_passes_on_a_sqlite_file_and_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("suite.db");
    {
        let store = SqliteStore::open(&path).expect("open the file store");
        store_suite::run_all(&store);
    }
    let store = SqliteStore::open(&path).expect("reopen the file store");
    assert!(
        store.tenant_by_name("suite-a").unwrap().is_some(),
        "what the suite wrote is still there"
    );
}
