//! The store test suite against the embedded SQLite store: in memory, and on a file (the
//! file store adds what memory has not: the background checkpoint thread, group commit
//! across WAL frames, a reopen).

use portcullis_core::store::{SqliteStore, Store, MIGRATIONS};
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

/// A store file as the version before token expiry (migration 15) left it, with a token:
/// after the upgrade the token has no expiry.
#[test]
fn upgrading_a_sqlite_file_leaves_its_admin_tokens_without_expiry() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).expect("create the old store");
        c.execute_batch(
            "CREATE TABLE schema_version (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .expect("schema_version");
        for (v, sql) in MIGRATIONS.iter().filter(|m| m.0 < 15) {
            c.execute_batch(sql)
                .unwrap_or_else(|e| panic!("migration {v}: {e}"));
            c.execute("INSERT INTO schema_version VALUES (?1, 0)", [v])
                .expect("record the migration");
        }
        c.execute_batch(store_suite::OLD_ADMIN_TOKEN_ROWS)
            .expect("an older store's token");
    }
    let store = SqliteStore::open(&path).expect("open and upgrade the old store");
    store_suite::a_token_from_before_expiry_never_expires(&store);
}
