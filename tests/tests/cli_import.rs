//! `user import` / `user export`: users from a CSV file log in over RADIUS; a bad file is
//! refused with its line numbers and nothing is written; an export holds no secret.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use portcullis_tests::tools::run_with_timeout;
use portcullis_tests::{
    oathtool_totp, radclient, random_base32_secret, require_tool, Algorithm, TestEnv,
};

/// A SHA-512 crypt hash of `password` made by an independent tool (`openssl passwd -6`).
fn sha512_crypt(password: &str) -> String {
    let mut cmd = Command::new(require_tool("openssl", "openssl"));
    cmd.args(["passwd", "-6", "-stdin"]);
    let out = run_with_timeout(
        cmd,
        Some(format!("{password}\n").into_bytes()),
        std::time::Duration::from_secs(20),
    );
    assert!(out.status.success(), "openssl passwd -6: {out:?}");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$6$"), "openssl made {hash:?}");
    hash
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn imported_users_log_in_and_export_holds_no_secret() {
    require_tool("radclient", "freeradius-utils");
    require_tool("oathtool", "oathtool");
    let env = TestEnv::append();
    env.add_tenant("acme");
    let carol_hash = sha512_crypt("carol password");
    let carol_secret = random_base32_secret();
    let dave_secret = random_base32_secret();
    // Columns in a free order; a quoted cell with a comma; a user without any secret.
    let csv = format!(
        "totp_secret,name,groups,email,password_hash,phone\n\
         {carol_secret},carol,vpn;ops,carol@example.org,{carol_hash},+4915112345678\n\
         {dave_secret},dave,\"vpn\",,{carol_hash},\n\
         ,erin,,erin@example.org,,\n"
    );
    let file = env.dir().join("users.csv");
    std::fs::write(&file, &csv).unwrap();
    let file_arg = file.display().to_string();
    let report = env.cli_json(&["--json", "user", "import", "--tenant", "acme", &file_arg]);
    assert_eq!(report["created"], 3, "{report}");
    assert_eq!(report["totp_enrolled"], 2, "{report}");

    let carol = env.cli_json(&["--json", "user", "show", "--tenant", "acme", "carol"]);
    assert_eq!(
        carol["groups"],
        serde_json::json!(["vpn", "ops"]),
        "{carol}"
    );
    assert_eq!(carol["email"], "carol@example.org", "{carol}");
    assert_eq!(carol["phone"], "+4915112345678", "{carol}");
    assert_eq!(carol["has_password"], true, "{carol}");
    assert_eq!(carol["factors"][0]["state"], "confirmed", "{carol}");

    // Importing the same file again is refused (existing users), naming the lines.
    let again = env.cli(&["user", "import", "--tenant", "acme", &file_arg]);
    assert!(!again.status.success(), "re-import must be refused");
    assert!(
        stderr(&again).contains("line 2:") && stderr(&again).contains("--update"),
        "{}",
        stderr(&again)
    );
    // The name is fine; the user behind it exists.
    assert!(
        stderr(&again).contains("exists already") && !stderr(&again).contains("invalid user name"),
        "{}",
        stderr(&again)
    );

    let server = env.start_server();
    let secret = env.client().secret.clone();
    let code = oathtool_totp(&carol_secret, 6, Algorithm::Sha1, 0);
    let wrong_password = radclient(
        server.addr,
        &secret,
        &[
            ("User-Name", "carol".into()),
            ("User-Password", format!("not her password{code}")),
        ],
        true,
    );
    assert!(
        wrong_password.is_reject(),
        "a wrong password with a right code\n{}",
        wrong_password.raw_output
    );
    let reply = radclient(
        server.addr,
        &secret,
        &[
            ("User-Name", "carol".into()),
            ("User-Password", format!("carol password{code}")),
        ],
        true,
    );
    assert!(
        reply.is_accept(),
        "imported $6$ hash + imported TOTP secret\n{}",
        reply.raw_output
    );
    let dave_wrong_secret = radclient(
        server.addr,
        &secret,
        &[
            ("User-Name", "dave".into()),
            (
                "User-Password",
                format!(
                    "carol password{}",
                    oathtool_totp(&carol_secret, 6, Algorithm::Sha1, 0)
                ),
            ),
        ],
        true,
    );
    assert!(
        dave_wrong_secret.is_reject(),
        "dave's factor has dave's secret, not carol's\n{}",
        dave_wrong_secret.raw_output
    );

    // --update changes e-mail and groups of an existing user; absent columns stay.
    std::fs::write(
        &file,
        "name,groups,email\ncarol,admins,carol@new.example.org\n",
    )
    .unwrap();
    let updated = env.cli_json(&[
        "--json", "user", "import", "--tenant", "acme", "--update", &file_arg,
    ]);
    assert_eq!(updated["updated"], 1, "{updated}");
    let carol = env.cli_json(&["--json", "user", "show", "--tenant", "acme", "carol"]);
    assert_eq!(carol["groups"], serde_json::json!(["admins"]), "{carol}");
    assert_eq!(carol["email"], "carol@new.example.org", "{carol}");
    assert_eq!(carol["phone"], "+4915112345678", "{carol}");
    assert_eq!(carol["has_password"], true, "{carol}");

    let out_file = env.dir().join("export.csv");
    env.cli_ok(&[
        "user",
        "export",
        "--tenant",
        "acme",
        "--output",
        &out_file.display().to_string(),
    ]);
    let exported = std::fs::read_to_string(&out_file).unwrap();
    let stdout_export = env.cli_ok(&["user", "export", "--tenant", "acme"]);
    assert_eq!(
        String::from_utf8_lossy(&stdout_export.stdout),
        exported,
        "stdout and --output give the same CSV"
    );
    let mut lines = exported.lines();
    assert_eq!(
        lines.next(),
        Some("name,email,phone,groups,disabled,factors")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 3, "{exported}");
    assert!(
        rows.contains(&"carol,carol@new.example.org,'+4915112345678,admins,false,totp"),
        "{exported}"
    );
    assert!(
        rows.contains(&"erin,erin@example.org,,,false,"),
        "{exported}"
    );
    for secret_text in [&carol_secret, &dave_secret, &carol_hash] {
        assert!(
            !exported.contains(secret_text.as_str()),
            "the export must not hold secrets or hashes:\n{exported}"
        );
    }
    assert!(!exported.contains("$6$") && !exported.contains("argon2"));
    let as_json = env.cli_json(&["--json", "user", "export", "--tenant", "acme"]);
    assert_eq!(as_json.as_array().map(Vec::len), Some(3), "{as_json}");
    assert!(!as_json.to_string().contains("$6$"), "{as_json}");
}

#[test]
fn a_bad_file_names_each_line_and_writes_nothing() {
    let env = TestEnv::append();
    env.add_tenant("acme");
    let file = env.dir().join("bad.csv");
    let file_arg = file.display().to_string();
    std::fs::write(
        &file,
        "name,email,password_hash,totp_secret\n\
         good,good@example.org,,\n\
         bad name,x@example.org,,\n\
         frank,not-an-email,,\n\
         gina,,plaintext-password,\n\
         hank,,,not*base32\n\
         good,,,\n",
    )
    .unwrap();
    let out = env.cli(&["user", "import", "--tenant", "acme", &file_arg]);
    assert!(!out.status.success(), "a bad file must be refused");
    let err = stderr(&out);
    for expected in [
        "line 3:", "line 4:", "line 5:", "line 6:", "line 7:", "e-mail",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        !err.contains("  line 2:"),
        "line 2 is fine and not blamed:\n{err}"
    );
    assert!(
        !err.contains("plaintext-password"),
        "the hash cell is not echoed:\n{err}"
    );
    let users = env.cli_json(&["--json", "user", "list", "--tenant", "acme"]);
    assert_eq!(
        users.as_array().map(Vec::len),
        Some(0),
        "nothing was written: {users}"
    );

    std::fs::write(&file, "name,mail\nalice,a@example.org\n").unwrap();
    let out = env.cli(&["user", "import", "--tenant", "acme", &file_arg]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown column 'mail'"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&file, "name,email\nalice,a@example.org,extra\n").unwrap();
    let out = env.cli(&["user", "import", "--tenant", "acme", &file_arg]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 2: has 3 fields"),
        "{}",
        stderr(&out)
    );
}

/// `user show --json`'s `disabled` of `name`.
fn is_disabled(env: &TestEnv, tenant: &str, name: &str) -> bool {
    let u = env.cli_json(&["--json", "user", "show", "--tenant", tenant, name]);
    u["disabled"]
        .as_bool()
        .unwrap_or_else(|| panic!("no disabled in {u}"))
}

#[test]
fn disabled_users_stay_disabled_through_export_and_import() {
    let env = TestEnv::append();
    env.add_tenant("acme");
    env.add_tenant("globex");
    env.add_user("acme", "dora", "dora password");
    env.add_user("acme", "ed", "ed password");
    env.cli_ok(&["user", "disable", "--tenant", "acme", "dora"]);
    let file = env.dir().join("acme.csv");
    let file_arg = file.display().to_string();
    env.cli_ok(&["user", "export", "--tenant", "acme", "--output", &file_arg]);
    let report = env.cli_json(&["--json", "user", "import", "--tenant", "globex", &file_arg]);
    assert_eq!(report["created"], 2, "{report}");
    assert!(is_disabled(&env, "globex", "dora"), "dora was disabled");
    assert!(!is_disabled(&env, "globex", "ed"), "ed was not");

    // --update: true/false in any case set the state; an empty cell keeps it.
    let update = |csv: &str| {
        std::fs::write(&file, csv).unwrap();
        env.cli_json(&[
            "--json", "user", "import", "--tenant", "globex", "--update", &file_arg,
        ])
    };
    let report = update("name,disabled\ned,TRUE\ndora,\n");
    assert_eq!(report["updated"], 2, "{report}");
    assert!(is_disabled(&env, "globex", "ed"), "--update disables");
    assert!(
        is_disabled(&env, "globex", "dora"),
        "an empty cell keeps it"
    );
    update("name,disabled,email\ndora,False,dora@example.org\n");
    assert!(!is_disabled(&env, "globex", "dora"), "--update enables");
    update("name,email\ned,ed@example.org\n");
    assert!(is_disabled(&env, "globex", "ed"), "no column keeps it");
    // A new user with an empty cell is enabled.
    std::fs::write(&file, "name,disabled\nfay,\ngus,true\n").unwrap();
    env.cli_ok(&["user", "import", "--tenant", "globex", &file_arg]);
    assert!(!is_disabled(&env, "globex", "fay"));
    assert!(is_disabled(&env, "globex", "gus"));

    // Anything else is refused with its line, and nothing is written.
    std::fs::write(&file, "name,disabled\nhal,false\nivo,yes\n").unwrap();
    let out = env.cli(&["user", "import", "--tenant", "globex", &file_arg]);
    assert!(!out.status.success(), "disabled=yes must be refused");
    let err = stderr(&out);
    assert!(
        err.contains("line 3:") && err.contains("'yes'") && err.contains("true or false"),
        "{err}"
    );
    let users = env.cli_json(&["--json", "user", "list", "--tenant", "globex"]);
    assert_eq!(users.as_array().map(Vec::len), Some(4), "{users}");
}

#[test]
fn hashes_that_cost_too_much_to_verify_are_refused_by_line() {
    let env = TestEnv::append();
    env.add_tenant("acme");
    let six = sha512_crypt("pw");
    // rounds=999999999: minutes of a core per login; m=4 TiB: the daemon would abort.
    let slow = six.replacen("$6$", "$6$rounds=999999999$", 1);
    let huge = "$argon2id$v=19$m=4294967295,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$cGFzc3dvcmRoYXNocGFzc3dvcmRoYXNocGFzc3dvcmQ";
    let file = env.dir().join("costly.csv");
    let file_arg = file.display().to_string();
    std::fs::write(
        &file,
        format!("name,password_hash\nfine,{six}\nslow,{slow}\nhuge,\"{huge}\"\n"),
    )
    .unwrap();
    let out = env.cli(&["user", "import", "--tenant", "acme", &file_arg]);
    assert!(!out.status.success(), "costly hashes must be refused");
    let err = stderr(&out);
    for expected in [
        "line 3: password_hash of 'slow'",
        "rounds=999999999",
        "line 4: password_hash of 'huge'",
        "m=4294967295,t=1,p=1",
        "rounds=1000000",
        "m=1048576",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("line 2:"), "line 2 is fine:\n{err}");
    assert!(
        !err.contains(six.rsplit('$').next().unwrap()),
        "the hash is not echoed:\n{err}"
    );
    let users = env.cli_json(&["--json", "user", "list", "--tenant", "acme"]);
    assert_eq!(users.as_array().map(Vec::len), Some(0), "{users}");

    // Nor can one be set on its own.
    env.add_user("acme", "solo", "pw");
    let out = env.cli_stdin(
        &[
            "user",
            "set-password",
            "--tenant",
            "acme",
            "solo",
            "--password-hash-stdin",
        ],
        &format!("{slow}\n"),
    );
    assert!(!out.status.success(), "set-password must refuse it");
    assert!(
        stderr(&out).contains("rounds=999999999"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_master_key_is_made_only_for_an_empty_store() {
    let env = TestEnv::new(vec![]);
    // A new installation: the first command makes the key.
    env.add_tenant("acme");
    let key = env.dir().join("master.key");
    assert!(key.exists());
    // The key file is gone (a typo in key_file, a node it was not copied to): commands
    // refuse rather than seal new secrets under a new key.
    let kept = env.dir().join("master.key.kept");
    std::fs::rename(&key, &kept).unwrap();
    let out = env.cli(&["user", "list", "--tenant", "acme"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("master key file")
            && err.contains("does not exist")
            && err.contains("copy the key"),
        "{err}"
    );
    assert!(!key.exists(), "a new key was made");
    std::fs::rename(&kept, &key).unwrap();
    env.cli_ok(&["user", "list", "--tenant", "acme"]);
}

#[test]
fn an_export_keeps_formula_like_cells_as_text_and_imports_as_it_was() {
    // A tenant's admin (or the directory) can set an address a spreadsheet would run:
    // `=HYPERLINK(...)` must reach the operator's spreadsheet as text.
    let env = TestEnv::append();
    env.add_tenant("acme");
    env.add_tenant("globex");
    let file = env.dir().join("in.csv");
    std::fs::write(
        &file,
        "name,email,phone,groups\n\
         @dora,=cmd@example.org,+15550100,-staff\n\
         ed,ed@example.org,,\n",
    )
    .unwrap();
    env.cli_ok(&[
        "user",
        "import",
        "--tenant",
        "acme",
        &file.display().to_string(),
    ]);
    let out = env.dir().join("out.csv");
    let out_arg = out.display().to_string();
    // An old file there (readable by others) is replaced, and narrowed.
    std::fs::write(&out, "old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.cli_ok(&["user", "export", "--tenant", "acme", "--output", &out_arg]);
    let exported = std::fs::read_to_string(&out).unwrap();
    assert!(
        exported.contains("'@dora,'=cmd@example.org,'+15550100,'-staff,false,")
            && exported.contains("\ned,ed@example.org,,,false,"),
        "{exported}"
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the export lists every user: {mode:o}");
    // Imported again, the values are what they were.
    env.cli_ok(&["user", "import", "--tenant", "globex", &out_arg]);
    let users = env.cli_json(&["--json", "user", "list", "--tenant", "globex"]);
    let dora = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "@dora")
        .unwrap_or_else(|| panic!("{users}"))
        .clone();
    assert_eq!(dora["email"], "=cmd@example.org", "{dora}");
    assert_eq!(dora["phone"], "+15550100", "{dora}");
    assert_eq!(dora["groups"][0], "-staff", "{dora}");
    // A symbolic link is not followed.
    let link = env.dir().join("link.csv");
    std::os::unix::fs::symlink(env.dir().join("elsewhere.csv"), &link).unwrap();
    let refused = env.cli(&[
        "user",
        "export",
        "--tenant",
        "acme",
        "--output",
        &link.display().to_string(),
    ]);
    assert!(!refused.status.success());
    assert!(!env.dir().join("elsewhere.csv").exists());
}

#[test]
fn every_user_an_import_writes_has_an_audit_record_naming_the_columns_not_the_values() {
    let env = TestEnv::append();
    env.add_tenant("acme");
    env.add_user("acme", "dora", "dora password");
    let file = env.dir().join("in.csv");
    let arg = file.display().to_string();
    std::fs::write(
        &file,
        format!(
            "name,email,totp_secret\nhal,hal@example.org,{}\n",
            random_base32_secret()
        ),
    )
    .unwrap();
    env.cli_ok(&["user", "import", "--tenant", "acme", &arg]);
    // dora's hash replaced by --update: her record says so, without the hash.
    let hash = sha512_crypt("dora's new password");
    std::fs::write(&file, format!("name,password_hash,phone\ndora,{hash},\n")).unwrap();
    let out = env.cli(&["user", "import", "--tenant", "acme", "--update", &arg]);
    let audit = |user: &str| {
        env.cli_json(&["--json", "audit", "--tenant", "acme", "--user", user])
            .as_array()
            .expect("records")
            .clone()
    };
    let hal = audit("hal");
    assert!(
        hal.iter().any(|r| r["mode"] == "user.create"
            && r["reason"]
                .as_str()
                .unwrap_or("")
                .contains("with a TOTP factor")),
        "{hal:?}"
    );
    if out.status.success() {
        let dora = audit("dora");
        let update = dora
            .iter()
            .find(|r| r["mode"] == "user.update")
            .unwrap_or_else(|| panic!("{dora:?}"));
        let reason = update["reason"].as_str().unwrap_or("");
        assert!(reason.contains("phone, password_hash set"), "{reason}");
        assert!(!serde_json::to_string(&dora).unwrap().contains(&hash));
    } else {
        panic!("the update was refused: {}", stderr(&out));
    }
}

/// `user export --output` in a shared directory: a FIFO placed at the path (someone else
/// reading it) and another user's file there (which they could read afterwards) receive
/// nothing; the export is refused, saying why. The caller's own file is still overwritten.
#[test]
fn an_export_refuses_a_fifo_or_another_users_file_at_its_output_path() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let env = TestEnv::append();
    env.add_tenant("acme");
    env.add_user("acme", "dora", "dora password");
    let export = |path: &std::path::Path| {
        env.cli(&[
            "user",
            "export",
            "--tenant",
            "acme",
            "--output",
            &path.display().to_string(),
        ])
    };
    // A FIFO with a reader waiting: before, the export went into it.
    let fifo = env.dir().join("shared.csv");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let out = export(&fifo);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("cannot write {}", fifo.display()))
            && err.contains("not a regular file"),
        "{err}"
    );
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    assert!(got.is_empty(), "the FIFO's reader got {got:?}");
    // Without a reader, no wait either.
    drop(reader);
    let out = export(&fifo);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Another user's file (writable by all, as a trap): neither truncated nor written.
    let theirs = env.dir().join("theirs.csv");
    std::fs::write(&theirs, "theirs").unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o666)).unwrap();
    let me = rustix::process::geteuid().as_raw();
    let other = if me == 65534 { 65533 } else { 65534 };
    if me == 0 {
        std::os::unix::fs::chown(&theirs, Some(other), Some(other)).unwrap();
        let out = export(&theirs);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!("belongs to uid {other}, not to this user")),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "theirs");
        assert_eq!(
            std::fs::metadata(&theirs).unwrap().permissions().mode() & 0o777,
            0o666
        );
        std::os::unix::fs::chown(&theirs, Some(me), Some(me)).unwrap();
    }
    // The caller's own file is overwritten (and narrowed), as ever.
    let out = export(&theirs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&theirs).unwrap();
    assert!(
        text.starts_with("name,email,") && text.contains("dora"),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&theirs).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
