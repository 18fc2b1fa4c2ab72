//! The configured RADIUS clients (NAS) and reply-attribute policy, as one snapshot that a
//! SIGHUP reload swaps atomically: requests already in flight keep the snapshot they started
//! with, new datagrams see the new one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_core::config::{ClientConfig, Config};
use portcullis_core::engine::ReplyAttribute;
use portcullis_core::reply::{parse_reply_attribute, ReplyPolicy};

use super::metrics::ClientCounters;
use super::packet::ClientPolicy;
use super::warnings::ClientWarnings;

/// A configured RADIUS client, ready for lookups.
#[derive(Debug)]
pub struct Client {
    pub config: ClientConfig,
    pub policy: ClientPolicy,
    /// The client's own reply attributes (`reply = [...]`), parsed.
    pub reply: Vec<ReplyAttribute>,
    /// Requests answered for this client (survive reloads by client name).
    pub counters: Arc<ClientCounters>,
    /// Its rate-limited warnings about requests that do not verify (a wrong secret); new
    /// with every reload, so that a secret changed by it is warned about at once.
    pub warnings: ClientWarnings,
}

/// Every client of one config, most specific address first, and the reply policy.
#[derive(Debug, Default)]
pub struct ClientTable {
    clients: Vec<Arc<Client>>,
    pub replies: ReplyPolicy,
}

impl ClientTable {
    /// Build from a validated config; counters of clients that `previous` already had (same
    /// name) carry over.
    pub fn from_config(cfg: &Config, previous: Option<&ClientTable>) -> Self {
        let old: HashMap<&str, &Arc<ClientCounters>> = previous
            .map(|p| {
                p.clients
                    .iter()
                    .map(|c| (c.config.name.as_str(), &c.counters))
                    .collect()
            })
            .unwrap_or_default();
        let mut clients: Vec<Arc<Client>> = cfg
            .radius
            .clients
            .iter()
            .map(|c| {
                Arc::new(Client {
                    policy: ClientPolicy {
                        require_message_authenticator: c.require_message_authenticator,
                        limit_proxy_state: c.limit_proxy_state,
                    },
                    // Validated with the config; nothing is dropped here.
                    reply: c
                        .reply
                        .iter()
                        .filter_map(|t| parse_reply_attribute(t).ok())
                        .collect(),
                    counters: old
                        .get(c.name.as_str())
                        .map(|c| Arc::clone(c))
                        .unwrap_or_default(),
                    config: c.clone(),
                    warnings: ClientWarnings::default(),
                })
            })
            .collect();
        // Longest prefix first: the first match is the most specific.
        clients.sort_by_key(|c| std::cmp::Reverse(c.config.address.prefix_len()));
        Self {
            clients,
            replies: ReplyPolicy::from_config(cfg),
        }
    }

    /// The client whose address (CIDR) is the longest prefix containing `ip`.
    pub fn client_for(&self, ip: IpAddr) -> Option<Arc<Client>> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.clients
            .iter()
            .find(|c| c.config.address.contains(&ip))
            .cloned()
    }

    /// Every client, for metrics.
    pub fn clients(&self) -> &[Arc<Client>] {
        &self.clients
    }

    /// The clients `new` adds, removes, and changes (any setting, its secret included)
    /// against this table, by name: what a reload's log names, never with values.
    pub fn changes(&self, new: &Config) -> ClientChanges {
        let mut changes = ClientChanges::default();
        for c in &new.radius.clients {
            match self.clients.iter().find(|o| o.config.name == c.name) {
                None => changes.added.push(c.name.clone()),
                Some(o) if o.config != *c => changes.changed.push(c.name.clone()),
                Some(_) => {}
            }
        }
        for o in &self.clients {
            if !new.radius.clients.iter().any(|c| c.name == o.config.name) {
                changes.removed.push(o.config.name.clone());
            }
        }
        changes.removed.sort();
        changes
    }
}

/// Client names a reload adds, removes and changes (see [`ClientTable::changes`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl std::fmt::Display for ClientChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "added: {}; removed: {}; changed: {}",
            list(&self.added),
            list(&self.removed),
            list(&self.changed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(secret: &str) -> Config {
        Config::from_toml_str(
            &format!(
                "[[radius.clients]]\nname = \"vpn\"\naddress = \"10.0.0.0/8\"\nsecret = \"{secret}\"\ntenant = \"acme\"\nreply = [\"Class=x\"]\n\
                 [[radius.clients]]\nname = \"one\"\naddress = \"10.1.2.3/32\"\nsecret = \"t\"\ntenant = \"acme\"\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_counters_survive_a_reload() {
        let t = ClientTable::from_config(&cfg("a"), None);
        let one = t.client_for("10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(one.config.name, "one");
        let vpn = t.client_for("::ffff:10.9.9.9".parse().unwrap()).unwrap();
        assert_eq!(vpn.config.name, "vpn");
        assert_eq!(vpn.reply.len(), 1);
        assert!(t.client_for("192.0.2.1".parse().unwrap()).is_none());
        vpn.counters.count_status_server();
        let t2 = ClientTable::from_config(&cfg("b"), Some(&t));
        let vpn2 = t2.client_for("10.9.9.9".parse().unwrap()).unwrap();
        assert_eq!(vpn2.config.secret, "b");
        assert_eq!(vpn2.counters.status_server(), 1);
    }

    #[test]
    fn a_reload_names_the_clients_it_adds_removes_and_changes() {
        let table = ClientTable::from_config(&cfg("s"), None);
        assert_eq!(table.changes(&cfg("s")), ClientChanges::default());
        let mut new = cfg("other");
        new.radius.clients.retain(|c| c.name == "vpn");
        let mut added = new.radius.clients[0].clone();
        added.name = "fw".into();
        new.radius.clients.push(added);
        let changes = table.changes(&new);
        assert_eq!(changes.added, vec!["fw"]);
        assert_eq!(changes.removed, vec!["one"]);
        assert_eq!(changes.changed, vec!["vpn"]);
        let shown = changes.to_string();
        assert_eq!(shown, "added: fw; removed: one; changed: vpn");
        assert!(!shown.contains("other"), "no secret: {shown}");
    }
}
