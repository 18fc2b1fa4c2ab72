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

/// A store file that its group or others may read (made by an older version with the
/// umask's 0644, or a restored backup) is narrowed to 0600 when the binary opens it, with a
/// warning; a symbolic link where the store should be (a dangling one in a shared
/// directory, say) is refused, and its target is not made.
#[test]
fn a_loose_store_file_is_narrowed_and_a_symbolic_link_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let env = portcullis_tests::TestEnv::challenge();
    env.add_tenant("acme");
    let db = env.dir().join("portcullis.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.cli_ok(&["tenant", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARN")
            && err.contains(&format!("{} had mode 0644", db.display()))
            && err.contains("its mode is now 0600"),
        "{err}"
    );
    assert_eq!(mode(&db), 0o600);
    // Once narrowed, nothing more is said.
    let out = env.cli_ok(&["tenant", "list"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("had mode"));

    let env = portcullis_tests::TestEnv::challenge();
    let db = env.dir().join("portcullis.db");
    let target = env.dir().join("elsewhere.db");
    std::os::unix::fs::symlink(&target, &db).unwrap();
    let out = env.cli(&["tenant", "add", "acme"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{} is a symbolic link", db.display())),
        "{err}"
    );
    assert!(!target.exists(), "the link's target was made");
}
