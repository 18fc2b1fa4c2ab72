//! Schema migrations, applied in order on open. Each entry is one version; never edit a
//! released one, add a new one. The SQL is portable between SQLite and PostgreSQL
//! (`BIGINT`, `TEXT`, no AUTOINCREMENT quirks beyond the id column).

/// (version, SQL) in order.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE tenants (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    tenant_id      BIGINT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    password_hash  TEXT,
    email          TEXT,
    phone          TEXT,
    groups_json    TEXT NOT NULL DEFAULT '[]',
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE factors (
    id             TEXT PRIMARY KEY,
    user_id        BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    state          TEXT NOT NULL,
    sealed_secret  BLOB NOT NULL,
    params         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    confirmed_at   BIGINT,
    last_used_at   BIGINT
);
CREATE INDEX factors_user ON factors(user_id);
CREATE TABLE recovery_codes (
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
CREATE TABLE used_otps (
    factor_id   TEXT NOT NULL,
    counter     BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (factor_id, counter)
);
CREATE INDEX used_otps_expiry ON used_otps(expires_at);
CREATE TABLE transactions (
    id          TEXT PRIMARY KEY,
    tenant_id   BIGINT NOT NULL,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    username    TEXT NOT NULL,
    client      TEXT NOT NULL,
    source      TEXT NOT NULL,
    first_factor TEXT NOT NULL,
    step        INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX transactions_expiry ON transactions(expires_at);
CREATE TABLE throttles (
    tenant_id        BIGINT NOT NULL,
    throttle_key     TEXT NOT NULL,
    failures         INTEGER NOT NULL,
    last_failure_at  BIGINT NOT NULL,
    locked_until     BIGINT,
    PRIMARY KEY (tenant_id, throttle_key)
);
CREATE TABLE audit (
    id           INTEGER PRIMARY KEY,
    time         BIGINT NOT NULL,
    tenant       TEXT NOT NULL,
    username     TEXT NOT NULL,
    channel      TEXT NOT NULL,
    client       TEXT NOT NULL,
    source       TEXT NOT NULL,
    mode         TEXT NOT NULL,
    factors      TEXT NOT NULL,
    result       TEXT NOT NULL,
    reason       TEXT NOT NULL,
    transaction_id TEXT
);
CREATE INDEX audit_tenant_time ON audit(tenant, time);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE bypass_codes (
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    uses_left   INTEGER NOT NULL,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE sent_codes (
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    factor_id   TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX sent_codes_user ON sent_codes(user_id, created_at);
"#,
    ),
    (
        4,
        r#"
CREATE TABLE remembered_sources (
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source      TEXT NOT NULL,
    rule        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, source)
);
"#,
    ),
    (
        5,
        // Reply attributes from the first factor (upstream RADIUS pass-through) wait with
        // the transaction for the second factor: JSON [[type, "hex value"], ...].
        r#"
ALTER TABLE transactions ADD COLUMN reply_attributes TEXT NOT NULL DEFAULT '[]';
"#,
    ),
    (
        6,
        // Push approval: one row per notification; the decision is a conditional UPDATE
        // (pending -> approved/denied), so two answers can never both count.
        r#"
CREATE TABLE push_requests (
    id          TEXT PRIMARY KEY,
    tenant_id   BIGINT NOT NULL,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    txn_id      TEXT NOT NULL,
    factor_id   TEXT NOT NULL,
    token_hash  TEXT NOT NULL,
    number      INTEGER,
    status      TEXT NOT NULL,
    detail      TEXT,
    username    TEXT NOT NULL,
    client      TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    decided_at  BIGINT
);
CREATE INDEX push_requests_txn ON push_requests(txn_id, created_at);
CREATE INDEX push_requests_user ON push_requests(user_id, created_at);
"#,
    ),
    (
        7,
        // Admin API tokens: the secret part only as a keyed hash; tenant_id NULL = operator.
        r#"
CREATE TABLE admin_tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     BIGINT REFERENCES tenants(id),
    role          TEXT NOT NULL,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX admin_tokens_tenant ON admin_tokens(tenant_id);
"#,
    ),
    (
        8,
        // Remote PAM hosts of a fleet: each holds a bearer token (stored as a keyed hash)
        // that names its tenant and host for POST /v1/pam/step. The audit records which host
        // a PAM login came from.
        r#"
CREATE TABLE pam_hosts (
    id            INTEGER PRIMARY KEY,
    tenant_id     BIGINT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT,
    revoked       BIGINT NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, name)
);
ALTER TABLE audit ADD COLUMN host TEXT;
"#,
    ),
    (
        10,
        // User attributes for policy rules (`attributes = { use_mfa = "false" }`): JSON object.
        r#"
ALTER TABLE users ADD COLUMN attributes_json TEXT NOT NULL DEFAULT '{}';
"#,
    ),
    (
        11,
        // Enrolment on first login: single-use links (keyed hash of the token), claimed by
        // a conditional UPDATE when opened; the pending factor is confirmed by the login.
        r#"
CREATE TABLE enrollments (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   BIGINT NOT NULL,
    tenant      TEXT NOT NULL,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    username    TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    factor_id   TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    opened_at   BIGINT
);
CREATE INDEX enrollments_txn ON enrollments(txn_id);
"#,
    ),
    (
        12,
        // The TOTP replay cache keyed by expiry first, and on SQLite without a row id: a
        // row is one entry of one b-tree, where it was a table row plus two index entries.
        // A login adds one entry (it added three), and the purge deletes a run of the
        // oldest keys, emptying whole pages one after another, where it touched a random
        // index page per row (a WAL page written for each row purged). The key still makes
        // one step of one factor unique: the expiry is a function of the factor's period
        // and the step alone (`totp::replay_expiry`). Rows from before are given that
        // expiry too (from their factor's period), or a code used just before the upgrade
        // would have another key after it, and could be used once more. On PostgreSQL the
        // old table is locked first: a node not yet upgraded that records a code while
        // the rows are copied waits, then fails (its login is refused), instead of writing
        // a row after the copy that the DROP would lose (a code usable once more).
        r#"
-- postgres: LOCK TABLE used_otps IN EXCLUSIVE MODE;
CREATE TABLE used_otps_by_expiry (
    expires_at  BIGINT NOT NULL,
    factor_id   TEXT NOT NULL,
    counter     BIGINT NOT NULL,
    PRIMARY KEY (expires_at, factor_id, counter)
) WITHOUT ROWID;
INSERT INTO used_otps_by_expiry (expires_at, factor_id, counter)
    SELECT COALESCE((o.counter + 12) * json_extract(f.params, '$.period'), o.expires_at),
           o.factor_id, o.counter
    FROM used_otps o LEFT JOIN factors f ON f.id = o.factor_id AND f.kind = 'totp';
DROP TABLE used_otps;
ALTER TABLE used_otps_by_expiry RENAME TO used_otps;
"#,
    ),
    (
        13,
        // The generation of a user's web (`/my/`) sessions: a session cookie carries the
        // value it was issued under and is refused once it changed. Raised when the user's
        // factors are reset or removed by an administrator, the password is set and the
        // user is disabled.
        r#"
ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;
"#,
    ),
    (
        14,
        // The order pushes were added in, for "the newest push of a transaction" when two
        // were added within one second (a second push chosen at the menu): SQLite has its
        // row id; PostgreSQL tied on the random push id and could read the older push.
        r#"
-- postgres: ALTER TABLE push_requests ADD COLUMN seq BIGSERIAL;
"#,
    ),
    (
        15,
        // Admin API tokens with a lifetime (`token add --expires 90d`): refused from
        // `expires_at` on. NULL (every token made before) = never expires.
        r#"
ALTER TABLE admin_tokens ADD COLUMN expires_at BIGINT;
"#,
    ),
    (
        16,
        // The ids of the fail-open reports each host sent (`Store::record_fail_opens`): a
        // report sent again is recorded once. Kept FAIL_OPEN_IDS_KEPT after it arrived.
        r#"
CREATE TABLE fail_open_reports (
    tenant       TEXT NOT NULL,
    host         TEXT NOT NULL,
    id           TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, host, id)
);
CREATE INDEX fail_open_reports_received ON fail_open_reports(received_at);
"#,
    ),
    (
        17,
        // A user's factors in the order every login reads them (oldest first): read along
        // the index, not sorted per login.
        r#"
CREATE INDEX factors_user_created ON factors(user_id, created_at, id);
DROP INDEX factors_user;
"#,
    ),
    (
        18,
        // SQLite's TOTP replay cache becomes a log: rows appended in row-id order, no
        // unique key; the check is made in memory (`replay`). A row's place in the old key
        // was random within its expiry, and the page splits that caused cost a fifth of a
        // code-only login's SQLite time. The rows are copied oldest expiry first: the purge
        // deletes from the smallest row id. PostgreSQL keeps its keyed table (several
        // nodes check it at once; there the key is the check).
        r#"-- sqlite only
CREATE TABLE used_otps_log (
    id          INTEGER PRIMARY KEY,
    factor_id   TEXT NOT NULL,
    counter     BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
INSERT INTO used_otps_log (factor_id, counter, expires_at)
    SELECT factor_id, counter, expires_at FROM used_otps
    ORDER BY expires_at, factor_id, counter;
DROP TABLE used_otps;
ALTER TABLE used_otps_log RENAME TO used_otps;
"#,
    ),
];

/// One line for the migrations an open applied (each step is logged at debug): a first
/// start applies every version, and a line each would bury the start's other messages.
pub(super) fn log_migrated(from: i64, applied: &[i64]) {
    if let Some(to) = applied.last() {
        tracing::info!(
            "store migrated from version {from} to {to} ({} step{})",
            applied.len(),
            if applied.len() == 1 { "" } else { "s" }
        );
    }
}
