//! `portcullis host add|list|remove`: remote PAM hosts and their tokens.

use anyhow::Result;
use portcullis_core::hosts::Hosts;
use serde_json::json;

use super::output::{emit, table, time};
use super::{HostCmd, Opened};

pub fn run(o: &Opened, cmd: HostCmd, json: bool) -> Result<()> {
    let hosts = Hosts::new(o.store.clone(), o.clock.clone(), &o.key);
    match cmd {
        HostCmd::Add { tenant, name } => {
            let new = hosts.add(&tenant.tenant, &name)?;
            emit(
                json,
                &json!({
                    "tenant": new.host.tenant,
                    "name": new.host.name,
                    "token": new.token.as_str(),
                }),
                || {
                    format!(
                        "host '{name}' of tenant '{}' registered. Its token (shown once; store it on the host\n\
                         as a file owned by root with mode 0600, named by the module's token_file=):\n\n{}\n",
                        tenant.tenant,
                        new.token.as_str()
                    )
                },
            );
        }
        HostCmd::List { tenant } => {
            let list = hosts.list(&tenant.tenant)?;
            emit(json, &list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|h| {
                        vec![
                            h.name.clone(),
                            time(h.created_at),
                            h.last_seen_at.map(time).unwrap_or_else(|| "never".into()),
                            if h.revoked { "revoked" } else { "active" }.into(),
                        ]
                    })
                    .collect();
                table(&["HOST", "CREATED", "LAST SEEN", "STATE"], &rows)
            });
        }
        HostCmd::Remove { tenant, name } => {
            hosts.remove(&tenant.tenant, &name)?;
            let what = format!(
                "host '{name}' of tenant '{}' removed: its token no longer works",
                tenant.tenant
            );
            emit(json, &json!({ "ok": true, "message": what }), || {
                what.clone()
            });
        }
    }
    Ok(())
}
