//! Policy rules of a tenant: evaluated in order, the first match wins, the default is to
//! require a second factor. Pure: a rule set and a login context in, a decision out, so the
//! Engine, `portcullis policy test` and the table test all use the same code.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Ask for a second factor (of `factors`, if given).
    RequireMfa,
    /// Let the first factor suffice (trusted network, service accounts).
    SkipMfa,
    /// Refuse the login.
    Deny,
    /// Ask for a stronger second factor (`factors` names which), e.g. a token for sudo.
    StepUp,
}

impl Action {
    /// The name in the config and in audit reasons (as serde writes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::RequireMfa => "require_mfa",
            Action::SkipMfa => "skip_mfa",
            Action::Deny => "deny",
            Action::StepUp => "step_up",
        }
    }
}

/// Days of the week, for time windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    fn index(self) -> u32 {
        self as u32
    }
}

/// A time window, in UTC shifted by `utc_offset_minutes`. `from` < `to`, minutes of the day;
/// a window across midnight is written as two rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// "HH:MM"
    pub from: String,
    /// "HH:MM"
    pub to: String,
    #[serde(default)]
    pub utc_offset_minutes: i32,
}

/// One rule (`[[tenants.NAME.rules]]`). Empty conditions match anything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    /// RADIUS client or PAM service names.
    #[serde(default)]
    pub clients: Vec<String>,
    /// PAM hosts.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The user is in at least one of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The source (Calling-Station-Id or PAM rhost) is in one of these networks.
    #[serde(default)]
    pub sources: Vec<IpNet>,
    /// The user has each of these attributes with exactly this value
    /// (`attributes = { use_mfa = "false" }`; set with `portcullis user set-attr`).
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub time: Option<TimeWindow>,
    /// For require_mfa / step_up: the factor kinds that satisfy it (totp, hotp, sms,
    /// recovery, bypass). Empty: any.
    #[serde(default)]
    pub factors: Vec<String>,
    /// For require_mfa: after a second factor, the same user from the same source may
    /// skip it for this long (default: never).
    #[serde(default, with = "humantime_serde")]
    pub remember: Option<std::time::Duration>,
    /// For require_mfa / step_up: the factor started at once in `auto` mode and listed
    /// first in the menu (`push`, `sms`, `email`, `totp`, `hotp`); overrides the tenant's.
    #[serde(default)]
    pub default_factor: Option<String>,
}

/// Who logs in, from where, when.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub client: &'a str,
    /// The PAM host; `None` for RADIUS and web logins.
    pub host: Option<&'a str>,
    pub groups: &'a [String],
    /// The user's attributes.
    pub attributes: &'a std::collections::BTreeMap<String, String>,
    pub source: &'a str,
    pub now: UnixTime,
}

/// The outcome: the action, the rule that decided (None: the default), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub rule: Option<String>,
    pub factors: Vec<String>,
    /// Seconds a successful second factor is remembered for this source (0: not at all).
    pub remember_secs: i64,
    /// The factor to start first (the rule's, else the tenant's `default_factor`).
    pub default_factor: Option<String>,
    /// Why the rule matched where that is not plain (a `deny` rule applied to a source it
    /// could not place), for the audit record.
    pub note: Option<String>,
    pub explanation: Vec<String>,
}

impl Decision {
    /// The audit label: `rule 'office' (skip_mfa)` or `default (require_mfa)`.
    pub fn label(&self) -> String {
        let action = self.action.as_str();
        match &self.rule {
            Some(r) => ["rule '", r, "' (", action, ")"].concat(),
            None => ["default (", action, ")"].concat(),
        }
    }

    /// The audit reason of a login this decision refuses: `denied by rule 'x' (deny)`,
    /// with the note of a rule that applied because it could not rule the login out.
    pub fn deny_reason(&self) -> String {
        match &self.note {
            Some(note) => format!("denied by {}: {note}", self.label()),
            None => format!("denied by {}", self.label()),
        }
    }

    /// Whether a factor kind satisfies this decision.
    pub fn allows(&self, factor: &str) -> bool {
        self.factors.is_empty() || self.factors.iter().any(|f| f == factor)
    }

    /// Narrow the factors to those the tenant accepts (`factors` of `[tenants.NAME]`).
    /// When nothing is left, nothing is allowed (an empty list would mean "any").
    pub fn restrict_to(&mut self, allowed: &[String]) {
        if self.factors.is_empty() {
            self.factors = allowed.to_vec();
        } else {
            self.factors.retain(|f| allowed.contains(f));
            if self.factors.is_empty() {
                self.factors.push(NO_FACTOR.into());
            }
        }
        self.explanation
            .push(format!("tenant accepts only {}", allowed.join("/")));
    }
}

/// Stands in a decision's factors when the rule and the tenant share none: matches nothing.
pub const NO_FACTOR: &str = "(none the tenant accepts)";

/// Known factor names, for config validation.
pub const FACTOR_NAMES: [&str; 6] = ["totp", "hotp", "sms", "push", "recovery", "bypass"];

/// "HH:MM" -> minutes of the day.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
}

impl TimeWindow {
    fn contains(&self, now: UnixTime) -> bool {
        let local = now + self.utc_offset_minutes as i64 * 60;
        let minute = (local.rem_euclid(86_400) / 60) as u32;
        // 1970-01-01 was a Thursday (index 3 with Monday = 0).
        let weekday = ((local.div_euclid(86_400) + 3).rem_euclid(7)) as u32;
        let day_ok = self.days.is_empty() || self.days.iter().any(|d| d.index() == weekday);
        let (Some(from), Some(to)) = (parse_hhmm(&self.from), parse_hhmm(&self.to)) else {
            return false;
        };
        day_ok && minute >= from && minute < to
    }
}

/// The address `source` names, an IPv4-mapped IPv6 address as the IPv4 address it maps
/// (`::ffff:192.0.2.7` is `192.0.2.7`, as the source throttle counts it); `None` when the
/// source is not an IP address (a DNS name as PAM rhost, a MAC address as
/// Calling-Station-Id).
fn source_ip(source: &str) -> Option<IpAddr> {
    source
        .trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// A rule's network in the same form: an IPv6 network inside `::ffff:0:0/96` is the IPv4
/// network it maps (`::ffff:198.51.100.0/120` is `198.51.100.0/24`).
fn canonical_net(net: &IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), Some(len)) = (
            v6.network().to_ipv4_mapped(),
            v6.prefix_len().checked_sub(96),
        ) {
            if let Ok(v4net) = Ipv4Net::new(v4, len) {
                return IpNet::V4(v4net);
            }
        }
    }
    *net
}

/// Whether `net` holds `ip` (canonical, see [`source_ip`]) in either of its forms: an
/// IPv4 address is also its IPv4-mapped IPv6 address, so `::/0` holds every address.
fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    let net = canonical_net(net);
    net.contains(&ip)
        || match ip {
            IpAddr::V4(v4) => net.contains(&IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => false,
        }
}

/// A PAM login without a remote host: the console (`local`) or a terminal (`tty:...`, as
/// sudo inside a session has). It comes from no network, so no `sources` rule holds it.
/// (Only PAM logins have a host; a Calling-Station-Id that reads `local` is not one.)
fn local_terminal(cx: &Context<'_>) -> bool {
    cx.host.is_some() && (cx.source == "local" || cx.source.starts_with("tty:"))
}

impl Rule {
    /// `Ok` if the rule matches, with a note when it matched only because it could not
    /// rule the login out (a `deny` rule and a source that is not an IP address);
    /// `Err` with the reason it does not match.
    fn matches(&self, cx: &Context<'_>) -> Result<Option<String>, String> {
        if !self.clients.is_empty() && !self.clients.iter().any(|c| c == cx.client) {
            return Err(format!(
                "client '{}' is not one of {:?}",
                cx.client, self.clients
            ));
        }
        if !self.hosts.is_empty() && !cx.host.is_some_and(|h| self.hosts.iter().any(|x| x == h)) {
            return Err(format!("host {:?} is not one of {:?}", cx.host, self.hosts));
        }
        if !self.groups.is_empty() && !cx.groups.iter().any(|g| self.groups.contains(g)) {
            return Err(format!(
                "user groups {:?} share none of {:?}",
                cx.groups, self.groups
            ));
        }
        if let Some((k, v)) = self
            .attributes
            .iter()
            .find(|(k, v)| cx.attributes.get(*k) != Some(*v))
        {
            return Err(format!(
                "user attribute {k} is {:?}, not \"{v}\"",
                cx.attributes.get(k)
            ));
        }
        let mut note = None;
        if !self.sources.is_empty() {
            let networks = || {
                self.sources
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
            };
            match source_ip(cx.source) {
                Some(ip) if self.sources.iter().any(|n| net_contains(n, ip)) => {}
                None if local_terminal(cx) => {
                    return Err(format!(
                        "source '{}' is a local terminal (a PAM login without remote host), in no network",
                        cx.source
                    ))
                }
                Some(_) => {
                    return Err(format!(
                        "source '{}' is not in {:?}",
                        cx.source,
                        networks()
                    ))
                }
                // Fail closed: a rule that refuses applies to a source it cannot place; a
                // rule that lets in (or asks for less) does not.
                None if self.action == Action::Deny => {
                    note = Some(format!(
                        "source '{}' is not an IP address; rule '{}' denies what it cannot rule out",
                        cx.source, self.name
                    ));
                }
                None => {
                    return Err(format!(
                        "source '{}' is not an IP address, so not in {:?}",
                        cx.source,
                        networks()
                    ))
                }
            }
        }
        if let Some(t) = &self.time {
            if !t.contains(cx.now) {
                return Err(format!("time is outside {:?} {}-{}", t.days, t.from, t.to));
            }
        }
        Ok(note)
    }
}

/// The first matching rule's decision, or the default (require a second factor).
pub fn evaluate(rules: &[Rule], cx: &Context<'_>) -> Decision {
    let mut explanation = Vec::new();
    for r in rules {
        match r.matches(cx) {
            Ok(note) => {
                explanation.push(match &note {
                    Some(n) => format!("rule '{}' matches: {n}", r.name),
                    None => format!("rule '{}' matches", r.name),
                });
                return Decision {
                    action: r.action,
                    rule: Some(r.name.clone()),
                    factors: r.factors.clone(),
                    remember_secs: r.remember.map(|d| d.as_secs() as i64).unwrap_or(0),
                    default_factor: r.default_factor.clone(),
                    note,
                    explanation,
                };
            }
            Err(why) => explanation.push(format!("rule '{}' does not match: {why}", r.name)),
        }
    }
    explanation.push("no rule matched: the default requires a second factor".into());
    Decision {
        action: Action::RequireMfa,
        rule: None,
        factors: Vec::new(),
        remember_secs: 0,
        default_factor: None,
        note: None,
        explanation,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn action_names_are_the_configs() {
        for a in [
            Action::RequireMfa,
            Action::SkipMfa,
            Action::Deny,
            Action::StepUp,
        ] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
    }

    /// A rule called `name` that does `action` everywhere (no condition); tests add theirs
    /// with `..rule(name, action)`. The Engine's tests use it too.
    pub(crate) fn rule(name: &str, action: Action) -> Rule {
        Rule {
            name: name.into(),
            action,
            clients: vec![],
            hosts: vec![],
            groups: vec![],
            sources: vec![],
            time: None,
            factors: vec![],
            remember: None,
            default_factor: None,
            attributes: Default::default(),
        }
    }

    // Monday 2026-11-23 10:00 UTC.
    const MON_10: i64 = 1_795_428_000;

    fn rules() -> Vec<Rule> {
        vec![
            Rule {
                groups: vec!["contractors".into()],
                time: Some(TimeWindow {
                    days: vec![
                        Weekday::Mon,
                        Weekday::Tue,
                        Weekday::Wed,
                        Weekday::Thu,
                        Weekday::Fri,
                    ],
                    from: "08:00".into(),
                    to: "18:00".into(),
                    utc_offset_minutes: 0,
                }),
                ..rule("contractors-office-hours", Action::RequireMfa)
            },
            Rule {
                groups: vec!["contractors".into()],
                ..rule("contractors-otherwise", Action::Deny)
            },
            Rule {
                clients: vec!["sudo".into()],
                factors: vec!["hotp".into()],
                ..rule("sudo-token", Action::StepUp)
            },
            Rule {
                sources: vec!["10.0.0.0/8".parse().unwrap()],
                groups: vec!["staff".into()],
                ..rule("office-lan", Action::SkipMfa)
            },
        ]
    }

    fn decide(client: &str, groups: &[&str], source: &str, now: i64) -> (Action, Option<String>) {
        let groups: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        let d = evaluate(
            &rules(),
            &Context {
                client,
                host: None,
                groups: &groups,
                attributes: &Default::default(),
                source,
                now,
            },
        );
        (d.action, d.rule)
    }

    #[test]
    fn rules_table() {
        use Action::*;
        // (client, groups, source, time, expected action, expected rule)
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            &'a str,
            i64,
            Action,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (
                "vpn",
                &["staff"],
                "10.1.2.3",
                MON_10,
                SkipMfa,
                Some("office-lan"),
            ),
            ("vpn", &["staff"], "192.0.2.7", MON_10, RequireMfa, None),
            ("vpn", &["staff"], "not-an-ip", MON_10, RequireMfa, None),
            ("vpn", &["other"], "10.1.2.3", MON_10, RequireMfa, None),
            (
                "sudo",
                &["staff"],
                "10.1.2.3",
                MON_10,
                StepUp,
                Some("sudo-token"),
            ),
            (
                "vpn",
                &["contractors"],
                "192.0.2.7",
                MON_10,
                RequireMfa,
                Some("contractors-office-hours"),
            ),
            (
                "vpn",
                &["contractors"],
                "192.0.2.7",
                MON_10 + 9 * 3600,
                Deny,
                Some("contractors-otherwise"),
            ),
            (
                "vpn",
                &["contractors"],
                "192.0.2.7",
                MON_10 - 2 * 86_400,
                Deny,
                Some("contractors-otherwise"),
            ),
            (
                "vpn",
                &["contractors", "staff"],
                "10.0.0.1",
                MON_10,
                RequireMfa,
                Some("contractors-office-hours"),
            ),
        ];
        for (client, groups, source, now, action, rule) in cases {
            assert_eq!(
                decide(client, groups, source, *now),
                (*action, rule.map(String::from)),
                "{client} {groups:?} {source} {now}"
            );
        }
    }

    #[test]
    fn explanation_names_every_rule_tried() {
        let groups = vec!["staff".to_string()];
        let d = evaluate(
            &rules(),
            &Context {
                client: "vpn",
                host: None,
                groups: &groups,
                attributes: &Default::default(),
                source: "192.0.2.7",
                now: MON_10,
            },
        );
        assert_eq!(d.explanation.len(), 5);
        assert!(
            d.explanation[3].contains("is not in"),
            "{:?}",
            d.explanation
        );
        assert_eq!(d.label(), "default (require_mfa)");
    }

    fn decide_source(rules: &[Rule], host: Option<&str>, source: &str) -> Decision {
        evaluate(
            rules,
            &Context {
                client: "sshd",
                host,
                groups: &[],
                attributes: &Default::default(),
                source,
                now: MON_10,
            },
        )
    }

    #[test]
    fn sources_match_ipv4_in_either_form_on_both_sides() {
        let plain = vec![Rule {
            sources: vec!["198.51.100.0/24".parse().unwrap()],
            ..rule("v4", Action::Deny)
        }];
        let mapped = vec![Rule {
            sources: vec!["::ffff:198.51.100.0/120".parse().unwrap()],
            ..rule("mapped", Action::Deny)
        }];
        let any_v6 = vec![Rule {
            sources: vec!["::/0".parse().unwrap()],
            ..rule("any-v6", Action::Deny)
        }];
        for rules in [&plain, &mapped] {
            for source in ["198.51.100.7", "::ffff:198.51.100.7", " ::FFFF:c633:6407 "] {
                assert_eq!(
                    decide_source(rules, None, source).action,
                    Action::Deny,
                    "{source} {rules:?}"
                );
            }
            for source in ["198.51.101.7", "::ffff:198.51.101.7", "2001:db8::7"] {
                assert_eq!(
                    decide_source(rules, None, source).action,
                    Action::RequireMfa,
                    "{source} {rules:?}"
                );
            }
        }
        // An IPv4 address is its mapped IPv6 address: in ::/0 as before over dual stack.
        assert_eq!(
            decide_source(&any_v6, None, "198.51.100.7").action,
            Action::Deny
        );
        assert_eq!(
            canonical_net(&"::ffff:10.0.0.0/104".parse().unwrap()).to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(canonical_net(&"::/0".parse().unwrap()).to_string(), "::/0");
        // Wider than the mapped range: kept (an IPv4 address is in it as its mapped form).
        let wide: IpNet = "::ffff:0:0/95".parse().unwrap();
        assert_eq!(canonical_net(&wide), wide);
        assert_eq!(
            decide_source(
                &[Rule {
                    sources: vec![wide],
                    ..rule("w", Action::Deny)
                }],
                None,
                "192.0.2.1"
            )
            .action,
            Action::Deny
        );
    }

    #[test]
    fn a_deny_rule_applies_to_a_source_it_cannot_place_and_says_why() {
        let rules = vec![
            Rule {
                sources: vec!["198.51.100.0/24".parse().unwrap()],
                ..rule("blocked", Action::Deny)
            },
            Rule {
                sources: vec!["10.0.0.0/8".parse().unwrap()],
                ..rule("office", Action::SkipMfa)
            },
        ];
        for source in ["host.example", "02-00-5E-10-00-00", "proxy:10.0.0.1", ""] {
            let d = decide_source(&rules, Some("web1"), source);
            assert_eq!(d.action, Action::Deny, "{source}");
            let note = format!(
                "source '{source}' is not an IP address; rule 'blocked' denies what it cannot rule out"
            );
            assert_eq!(d.note.as_deref(), Some(note.as_str()));
            assert_eq!(
                d.deny_reason(),
                format!("denied by rule 'blocked' (deny): {note}")
            );
            assert!(d.explanation[0].contains(&note), "{:?}", d.explanation);
        }
        // A rule that lets in does not apply to what it cannot place.
        let d = decide_source(&rules[1..], None, "host.example");
        assert_eq!((d.action, d.note), (Action::RequireMfa, None));
        assert!(
            d.explanation[0].contains("is not an IP address, so not in"),
            "{:?}",
            d.explanation
        );
        // A matched IP address needs no note.
        let d = decide_source(&rules, None, "198.51.100.9");
        assert_eq!((d.action, d.note.as_deref()), (Action::Deny, None));
        assert_eq!(d.deny_reason(), "denied by rule 'blocked' (deny)");
    }

    #[test]
    fn a_pam_login_without_remote_host_is_in_no_network() {
        let rules = vec![Rule {
            sources: vec!["198.51.100.0/24".parse().unwrap()],
            ..rule("blocked", Action::Deny)
        }];
        for source in ["local", "tty:/dev/pts/0"] {
            let d = decide_source(&rules, Some("web1"), source);
            assert_eq!(d.action, Action::RequireMfa, "{source}");
            assert!(
                d.explanation[0].contains("is a local terminal"),
                "{:?}",
                d.explanation
            );
            // Only PAM logins have terminals: a Calling-Station-Id that reads so does not.
            assert_eq!(
                decide_source(&rules, None, source).action,
                Action::Deny,
                "{source}"
            );
        }
    }

    #[test]
    fn time_windows_respect_the_offset() {
        let w = TimeWindow {
            days: vec![Weekday::Mon],
            from: "11:00".into(),
            to: "12:00".into(),
            utc_offset_minutes: 60,
        };
        assert!(w.contains(MON_10)); // 11:00 at +01:00
        assert!(!w.contains(MON_10 + 3600));
        assert!(parse_hhmm("24:00").is_none() && parse_hhmm("8:00").is_none());
    }
}

#[cfg(test)]
mod attribute_tests {
    use super::tests::rule;
    use super::*;

    #[test]
    fn a_rule_on_a_user_attribute_matches_only_that_value() {
        let rules = vec![Rule {
            attributes: [("use_mfa".to_string(), "false".to_string())].into(),
            ..rule("no-mfa-for-flagged", Action::SkipMfa)
        }];
        let decide = |attrs: &[(&str, &str)]| {
            let attributes = attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            evaluate(
                &rules,
                &Context {
                    client: "vpn",
                    host: None,
                    groups: &[],
                    attributes: &attributes,
                    source: "10.0.0.1",
                    now: 0,
                },
            )
        };
        assert_eq!(decide(&[("use_mfa", "false")]).action, Action::SkipMfa);
        let d = decide(&[("use_mfa", "true")]);
        assert_eq!(d.action, Action::RequireMfa);
        assert!(
            d.explanation[0].contains("user attribute use_mfa"),
            "{:?}",
            d.explanation
        );
        assert_eq!(decide(&[]).action, Action::RequireMfa);
    }
}
