//! Policy rules of a tenant: evaluated in order, the first match wins, the default is to
//! require a second factor. Pure: a rule set and a login context in, a decision out, so the
//! Engine, `portcullis policy test` and the table test all use the same code.

use std::net::IpAddr;

use ipnet::IpNet;
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
    pub explanation: Vec<String>,
}

impl Decision {
    /// The audit label: `rule 'office' (skip_mfa)` or `default (require_mfa)`.
    pub fn label(&self) -> String {
        let action = serde_json::to_value(self.action)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        match &self.rule {
            Some(r) => format!("rule '{r}' ({action})"),
            None => format!("default ({action})"),
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

fn source_ip(source: &str) -> Option<IpAddr> {
    source.trim().parse().ok()
}

impl Rule {
    /// Whether the rule matches; `why` collects the reason it does not.
    fn matches(&self, cx: &Context<'_>, why: &mut String) -> bool {
        if !self.clients.is_empty() && !self.clients.iter().any(|c| c == cx.client) {
            *why = format!("client '{}' is not one of {:?}", cx.client, self.clients);
            return false;
        }
        if !self.hosts.is_empty() && !cx.host.is_some_and(|h| self.hosts.iter().any(|x| x == h)) {
            *why = format!("host {:?} is not one of {:?}", cx.host, self.hosts);
            return false;
        }
        if !self.groups.is_empty() && !cx.groups.iter().any(|g| self.groups.contains(g)) {
            *why = format!(
                "user groups {:?} share none of {:?}",
                cx.groups, self.groups
            );
            return false;
        }
        if let Some((k, v)) = self
            .attributes
            .iter()
            .find(|(k, v)| cx.attributes.get(*k) != Some(*v))
        {
            *why = format!(
                "user attribute {k} is {:?}, not \"{v}\"",
                cx.attributes.get(k)
            );
            return false;
        }
        if !self.sources.is_empty() {
            let inside =
                source_ip(cx.source).is_some_and(|ip| self.sources.iter().any(|n| n.contains(&ip)));
            if !inside {
                *why = format!(
                    "source '{}' is not in {:?}",
                    cx.source,
                    self.sources
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                );
                return false;
            }
        }
        if let Some(t) = &self.time {
            if !t.contains(cx.now) {
                *why = format!("time is outside {:?} {}-{}", t.days, t.from, t.to);
                return false;
            }
        }
        true
    }
}

/// The first matching rule's decision, or the default (require a second factor).
pub fn evaluate(rules: &[Rule], cx: &Context<'_>) -> Decision {
    let mut explanation = Vec::new();
    for r in rules {
        let mut why = String::new();
        if r.matches(cx, &mut why) {
            explanation.push(format!("rule '{}' matches", r.name));
            return Decision {
                action: r.action,
                rule: Some(r.name.clone()),
                factors: r.factors.clone(),
                remember_secs: r.remember.map(|d| d.as_secs() as i64).unwrap_or(0),
                default_factor: r.default_factor.clone(),
                explanation,
            };
        }
        explanation.push(format!("rule '{}' does not match: {why}", r.name));
    }
    explanation.push("no rule matched: the default requires a second factor".into());
    Decision {
        action: Action::RequireMfa,
        rule: None,
        factors: Vec::new(),
        remember_secs: 0,
        default_factor: None,
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, action: Action) -> Rule {
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
    use super::*;

    #[test]
    fn a_rule_on_a_user_attribute_matches_only_that_value() {
        let rules = vec![Rule {
            name: "no-mfa-for-flagged".into(),
            action: Action::SkipMfa,
            clients: vec![],
            hosts: vec![],
            groups: vec![],
            sources: vec![],
            attributes: [("use_mfa".to_string(), "false".to_string())].into(),
            time: None,
            factors: vec![],
            remember: None,
            default_factor: None,
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
