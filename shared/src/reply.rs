//! Reply attributes of an Access-Accept, configured per tenant, per group and per client.
//!
//! Each attribute is written `NAME=value` or, for a vendor-specific attribute without a
//! dictionary, `VENDOR_ID:TYPE=value`:
//!
//! | written | sent as |
//! | --- | --- |
//! | `Class=admins` | Class (25), the bytes of the value |
//! | `Filter-Id=full` | Filter-Id (11) |
//! | `Reply-Message=Welcome` | Reply-Message (18) |
//! | `Session-Timeout=3600` | Session-Timeout (27), 32-bit integer |
//! | `Idle-Timeout=600` | Idle-Timeout (28), 32-bit integer |
//! | `9:1=shell:priv-lvl=15` | Vendor-Specific (26), vendor 9 (Cisco), type 1 (Cisco-AVPair) |
//! | `12356:1=vpn-admins` | Fortinet-Group-Name |
//! | `25461:5=vpn-admins` | PaloAlto-User-Group |
//!
//! A value starting with `0x` is hexadecimal bytes (for binary or integer vendor attributes:
//! `0x0000000f`). Only the first `=` separates name and value, so values may contain `=`.
//!
//! Pure: parsing and merging only; the RADIUS front end puts the attributes in the packet.

use std::collections::HashMap;

use crate::config::Config;
use crate::engine::ReplyAttribute;

const CLASS: u8 = 25;
const FILTER_ID: u8 = 11;
const REPLY_MESSAGE: u8 = 18;
const SESSION_TIMEOUT: u8 = 27;
const IDLE_TIMEOUT: u8 = 28;
const VENDOR_SPECIFIC: u8 = 26;

/// Longest value of one attribute, and of one vendor sub-attribute.
const MAX_VALUE: usize = 253;
const MAX_VENDOR_VALUE: usize = 247;

/// Attributes that may appear once in a reply: a later setting replaces an earlier one.
const SINGLE_VALUED: [u8; 2] = [SESSION_TIMEOUT, IDLE_TIMEOUT];

/// Parse one `NAME=value` or `VENDOR_ID:TYPE=value`; the error says what is wrong and what
/// to write instead.
pub fn parse_reply_attribute(text: &str) -> Result<ReplyAttribute, String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!(
            "'{text}' has no '='; write NAME=value (e.g. Class=admins) or VENDOR_ID:TYPE=value"
        ));
    };
    let name = name.trim();
    if let Some((vendor, typ)) = name.split_once(':') {
        let vendor: u32 = vendor.trim().parse().map_err(|_| {
            format!("'{text}': vendor id '{vendor}' is not a number (Cisco is 9, Fortinet 12356, Palo Alto 25461)")
        })?;
        if vendor == 0 || vendor > 0x00ff_ffff {
            return Err(format!(
                "'{text}': vendor id {vendor} is outside 1..=16777215"
            ));
        }
        let typ: u8 =
            typ.trim().parse().ok().filter(|t| *t > 0).ok_or_else(|| {
                format!("'{text}': vendor type '{typ}' is not a number in 1..=255")
            })?;
        let bytes = value_bytes(text, value)?;
        if bytes.len() > MAX_VENDOR_VALUE {
            return Err(format!(
                "'{text}': the value is {} bytes; a vendor attribute holds at most {MAX_VENDOR_VALUE}",
                bytes.len()
            ));
        }
        let mut v = Vec::with_capacity(6 + bytes.len());
        v.extend_from_slice(&vendor.to_be_bytes());
        v.push(typ);
        // Cannot truncate: bytes.len() <= 247.
        v.push((bytes.len() + 2) as u8);
        v.extend_from_slice(&bytes);
        return Ok(ReplyAttribute {
            typ: VENDOR_SPECIFIC,
            value: v,
        });
    }
    let typ = match name.to_ascii_lowercase().as_str() {
        "class" => CLASS,
        "filter-id" => FILTER_ID,
        "reply-message" => REPLY_MESSAGE,
        "session-timeout" => SESSION_TIMEOUT,
        "idle-timeout" => IDLE_TIMEOUT,
        _ => {
            return Err(format!(
                "'{text}': unknown attribute '{name}'; use Class, Filter-Id, Reply-Message, \
                 Session-Timeout, Idle-Timeout or VENDOR_ID:TYPE=value"
            ))
        }
    };
    let value = if SINGLE_VALUED.contains(&typ) {
        let secs: u32 = value.trim().parse().map_err(|_| {
            format!("'{text}': '{value}' is not a number of seconds (0..=4294967295)")
        })?;
        secs.to_be_bytes().to_vec()
    } else {
        value_bytes(text, value)?
    };
    if value.is_empty() || value.len() > MAX_VALUE {
        return Err(format!(
            "'{text}': the value must be 1 to {MAX_VALUE} bytes, not {}",
            value.len()
        ));
    }
    Ok(ReplyAttribute { typ, value })
}

fn value_bytes(text: &str, value: &str) -> Result<Vec<u8>, String> {
    match value.strip_prefix("0x") {
        Some(hex) => data_encoding::HEXLOWER_PERMISSIVE
            .decode(hex.as_bytes())
            .map_err(|_| format!("'{text}': '{value}' is not hexadecimal bytes")),
        None => Ok(value.as_bytes().to_vec()),
    }
}

/// Parse a list, naming the failing entry `key[i]`.
pub fn parse_list(key: &str, items: &[String]) -> Result<Vec<ReplyAttribute>, (String, String)> {
    items
        .iter()
        .enumerate()
        .map(|(i, t)| parse_reply_attribute(t).map_err(|m| (format!("{key}[{i}]"), m)))
        .collect()
}

#[derive(Debug, Clone, Default)]
struct TenantReplies {
    attributes: Vec<ReplyAttribute>,
    /// `factor_reply` templates (`{factor}` filled in per login).
    factor_templates: Vec<String>,
    groups: Vec<(String, Vec<ReplyAttribute>)>,
}

/// The parsed `[tenants.NAME]` reply settings of a config.
#[derive(Debug, Clone, Default)]
pub struct ReplyPolicy {
    tenants: HashMap<String, TenantReplies>,
}

impl ReplyPolicy {
    /// From a config that [`Config`] validation already accepted (entries that do not
    /// parse are skipped; validation reports them with their key).
    pub fn from_config(cfg: &Config) -> Self {
        let parse = |items: &[String]| -> Vec<ReplyAttribute> {
            items
                .iter()
                .filter_map(|t| parse_reply_attribute(t).ok())
                .collect()
        };
        let tenants = cfg
            .tenants
            .iter()
            .map(|(name, t)| {
                let groups = t
                    .groups
                    .iter()
                    .map(|g| (g.name.clone(), parse(&g.reply)))
                    .collect();
                (
                    name.clone(),
                    TenantReplies {
                        attributes: parse(&t.reply),
                        factor_templates: t.factor_reply.clone(),
                        groups,
                    },
                )
            })
            .collect();
        Self { tenants }
    }

    /// The tenant's `factor_reply` attributes for a login that used `factors_used`
    /// (`password`/`delegated` are not second factors; none at all reads `none`).
    pub fn factor_attributes(&self, tenant: &str, factors_used: &[String]) -> Vec<ReplyAttribute> {
        let Some(t) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let second: Vec<&str> = factors_used
            .iter()
            .map(String::as_str)
            .filter(|f| !matches!(*f, "password" | "delegated"))
            .collect();
        let factor = if second.is_empty() {
            "none".to_string()
        } else {
            second.join("+")
        };
        t.factor_templates
            .iter()
            .filter_map(|tpl| parse_reply_attribute(&tpl.replace("{factor}", &factor)).ok())
            .collect()
    }

    /// The attributes of an Access-Accept: the tenant's, then the client's, then those of
    /// each of the user's groups in config order, then `engine` (from the Engine's step).
    /// Session-Timeout and Idle-Timeout appear once: the last setting wins (so a group
    /// overrides its tenant); every other attribute is sent as often as it is configured.
    pub fn attributes_for(
        &self,
        tenant: &str,
        client: &[ReplyAttribute],
        groups: &[String],
        engine: Vec<ReplyAttribute>,
    ) -> Vec<ReplyAttribute> {
        let mut out: Vec<ReplyAttribute> = Vec::new();
        let mut add = |a: &ReplyAttribute| {
            if SINGLE_VALUED.contains(&a.typ) {
                out.retain(|o| o.typ != a.typ);
            }
            out.push(a.clone());
        };
        let t = self.tenants.get(tenant);
        t.iter().flat_map(|t| &t.attributes).for_each(&mut add);
        client.iter().for_each(&mut add);
        if let Some(t) = t {
            for (name, attrs) in &t.groups {
                if groups.iter().any(|g| g == name) {
                    attrs.iter().for_each(&mut add);
                }
            }
        }
        engine.iter().for_each(&mut add);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn attr(t: &str) -> ReplyAttribute {
        parse_reply_attribute(t).unwrap()
    }

    #[test]
    fn factor_reply_names_the_second_factor() {
        let cfg = crate::config::Config::from_toml_str(
            "[tenants.acme]\nfactor_reply = [\"Class=mfa:{factor}\", \"9:1=f={factor}\"]\n",
            Path::new("test.toml"),
        )
        .unwrap();
        let p = ReplyPolicy::from_config(&cfg);
        let got = p.factor_attributes("acme", &["password".into(), "push".into()]);
        assert_eq!(got, vec![attr("Class=mfa:push"), attr("9:1=f=push")]);
        let got = p.factor_attributes("acme", &["password".into()]);
        assert_eq!(got[0], attr("Class=mfa:none"));
        assert!(p.factor_attributes("other", &["totp".into()]).is_empty());
    }

    #[test]
    fn standard_attributes_parse() {
        assert_eq!(
            attr("Class=admins"),
            ReplyAttribute {
                typ: 25,
                value: b"admins".to_vec()
            }
        );
        assert_eq!(attr("filter-id=a=b").value, b"a=b");
        assert_eq!(attr("Session-Timeout=3600").value, 3600u32.to_be_bytes());
        assert_eq!(attr("Class=0xdeadBEEF").value, [0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn vendor_attribute_is_laid_out_as_rfc2865_vsa() {
        let a = attr("9:1=shell:priv-lvl=15");
        assert_eq!(a.typ, 26);
        let mut want = vec![0, 0, 0, 9, 1, 2 + 17];
        want.extend_from_slice(b"shell:priv-lvl=15");
        assert_eq!(a.value, want);
        assert_eq!(attr("12356:1=0x0000000f").value[6..], [0, 0, 0, 15]);
    }

    #[test]
    fn bad_attributes_say_what_to_write() {
        for (text, hint) in [
            ("Class", "no '='"),
            ("User-Password=x", "unknown attribute"),
            ("Session-Timeout=soon", "number of seconds"),
            ("x:1=v", "not a number"),
            ("0:1=v", "outside"),
            ("9:0=v", "1..=255"),
            ("9:1=0xzz", "hexadecimal"),
            ("Class=", "1 to 253"),
        ] {
            let e = parse_reply_attribute(text).unwrap_err();
            assert!(e.contains(hint), "{text}: {e}");
        }
        let long = format!("9:1={}", "a".repeat(248));
        assert!(parse_reply_attribute(&long).unwrap_err().contains("247"));
    }

    #[test]
    fn tenant_client_then_groups_and_last_timeout_wins() {
        let cfg = Config::from_toml_str(
            r#"
[tenants.acme]
reply = ["Class=staff", "Session-Timeout=3600"]
[[tenants.acme.groups]]
name = "vpn-admins"
reply = ["Filter-Id=full", "Session-Timeout=600"]
[[tenants.acme.groups]]
name = "other"
reply = ["Filter-Id=none"]
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        let p = ReplyPolicy::from_config(&cfg);
        let got = p.attributes_for(
            "acme",
            &[attr("Reply-Message=hi")],
            &["vpn-admins".into()],
            Vec::new(),
        );
        assert_eq!(
            got,
            vec![
                attr("Class=staff"),
                attr("Reply-Message=hi"),
                attr("Filter-Id=full"),
                attr("Session-Timeout=600"),
            ]
        );
        assert!(p
            .attributes_for("nobody", &[], &["vpn-admins".into()], Vec::new())
            .is_empty());
    }
}
