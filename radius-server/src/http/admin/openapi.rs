//! `GET /v1/openapi.json`: an OpenAPI 3.1 description of every admin route, written by
//! hand. A unit test checks that it lists exactly the routes of [`super::api_routes`].

use axum::routing::get;
use axum::Json;
use serde_json::{json, Map, Value};

use super::ApiRoute;

pub fn routes() -> Vec<ApiRoute> {
    vec![ApiRoute {
        path: "/v1/openapi.json",
        methods: &["get"],
        handlers: get(serve),
    }]
}

async fn serve() -> Json<Value> {
    Json(document())
}

/// A JSON object schema with these properties (name -> schema) and required names.
fn object(props: &[(&str, Value)], required: &[&str]) -> Value {
    let props: Map<String, Value> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    json!({"type": "object", "additionalProperties": false, "properties": props, "required": required})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn nullable_string(description: &str) -> Value {
    json!({"type": ["string", "null"], "description": description})
}

/// One operation: summary, which roles may call it, its body schema, its success answer.
struct Op {
    path: &'static str,
    method: &'static str,
    summary: &'static str,
    roles: &'static str,
    body: Option<Value>,
    query: Vec<(&'static str, &'static str)>,
    ok: (&'static str, &'static str),
    /// Failures of this operation besides the common ones (400, 401, 403, 404).
    fails: Vec<(&'static str, &'static str)>,
}

fn op(
    path: &'static str,
    method: &'static str,
    summary: &'static str,
    roles: &'static str,
    ok: (&'static str, &'static str),
) -> Op {
    Op {
        path,
        method,
        summary,
        roles,
        body: None,
        query: Vec::new(),
        ok,
        fails: Vec::new(),
    }
}

impl Op {
    fn body(mut self, schema: Value) -> Op {
        self.body = Some(schema);
        self
    }

    fn fails(mut self, fails: &[(&'static str, &'static str)]) -> Op {
        self.fails.extend_from_slice(fails);
        self
    }
}

fn operations() -> Vec<Op> {
    vec![
        op(
            "/v1/openapi.json",
            "get",
            "This document",
            "anyone (no token needed)",
            ("200", "the OpenAPI document"),
        ),
        op(
            "/v1/tenants",
            "get",
            "List tenants",
            "operator",
            ("200", "the tenants"),
        ),
        op(
            "/v1/tenants",
            "post",
            "Create a tenant",
            "operator",
            ("201", "the new tenant"),
        )
        .body(object(&[("name", string("1-128 letters, digits or . _ - @ +"))], &["name"])),
        op(
            "/v1/tenants/{tenant}/users",
            "get",
            "List the tenant's users",
            "operator, admin, helpdesk",
            ("200", "the users"),
        ),
        op(
            "/v1/tenants/{tenant}/users",
            "post",
            "Create a user (password optional)",
            "operator, admin",
            ("201", "the new user"),
        )
        .body(object(
            &[
                ("name", string("the user name")),
                ("password", string("a password; stored as an argon2id hash")),
                (
                    "password_hash",
                    string("or an existing argon2id or SHA-512 crypt ($6$) hash"),
                ),
                ("email", string("name@domain.tld")),
                ("phone", string("E.164, like +4915112345678")),
                ("groups", json!({"type": "array", "items": {"type": "string"}})),
            ],
            &["name"],
        )),
        op(
            "/v1/tenants/{tenant}/users/{user}",
            "get",
            "Show a user: factors, recovery codes left, failures, lock",
            "operator, admin, helpdesk",
            ("200", "the user"),
        ),
        op(
            "/v1/tenants/{tenant}/users/{user}",
            "patch",
            "Disable or enable a user, change e-mail, phone or groups",
            "operator, admin",
            ("200", "the user as it is now"),
        )
        .body(object(
            &[
                ("disabled", json!({"type": "boolean"})),
                ("email", nullable_string("null clears it")),
                ("phone", nullable_string("null clears it")),
                ("groups", json!({"type": "array", "items": {"type": "string"}})),
            ],
            &[],
        )),
        op(
            "/v1/tenants/{tenant}/users/{user}",
            "delete",
            "Delete a user with their factors and codes (audit records stay)",
            "operator, admin",
            ("204", "deleted"),
        ),
        op(
            "/v1/tenants/{tenant}/users/{user}/unlock",
            "post",
            "Clear a user's failed codes and lock",
            "operator, admin",
            ("200", "unlocked"),
        ),
        op(
            "/v1/tenants/{tenant}/sources/{address}/unblock",
            "post",
            "Lift the block of a source address after too many wrong passwords (all channels)",
            "operator, admin",
            ("200", "unblocked; had_failures says whether any were on record"),
        ),
        op(
            "/v1/tenants/{tenant}/users/{user}/factors",
            "get",
            "List a user's factors (no secrets)",
            "operator, admin, helpdesk",
            ("200", "the factors"),
        ),
        op(
            "/v1/tenants/{tenant}/users/{user}/factors",
            "post",
            "Enrol a factor. TOTP or HOTP without `secret`: the new secret and otpauth URI are returned once and the factor is pending until confirmed; with `secret` the factor is confirmed at once and neither is returned. Push: the factor is pending; the answer has the ntfy topic URL to subscribe to (`subscribe_url`, with its QR code as SVG in `subscribe_qr_svg`; null for a webhook), and a confirmation code is pushed to the phone: confirm the factor with it. SMS and e-mail: the factor is pending and a confirmation code is sent to `phone` / `email` (else the user's own); confirm the factor with it",
            "operator, admin",
            ("201", "totp/hotp: {factor_id, kind, state, digits, algorithm}, with secret and uri only for a generated secret; push: {factor_id, kind, state, subscribe_url, subscribe_qr_svg, code_sent_via}; sms/email: {factor_id, kind, state, code_sent_to}"),
        )
        .body(object(
            &[
                ("kind", json!({"enum": ["totp", "hotp", "push", "sms", "email"]})),
                ("secret", string("totp/hotp: an existing base32 secret: the factor is confirmed at once")),
                ("digits", json!({"enum": [6, 8], "default": 6, "description": "totp/hotp only"})),
                ("algorithm", json!({"enum": ["SHA1", "SHA256", "SHA512"], "default": "SHA1", "description": "totp/hotp only"})),
                ("counter", json!({"type": "integer", "minimum": 0, "description": "hotp only"})),
                ("webhook", string("push only: an https:// URL that receives the notifications instead of a new ntfy topic")),
                ("phone", string("sms only: the phone number (E.164, +4915112345678); else the user's phone")),
                ("email", string("email only: the address; else the user's e-mail")),
            ],
            &["kind"],
        ))
        .fails(&[
            ("409", "push, sms, email: the tenant has no such channel (push: or no ntfy_url); the message says what to configure"),
            ("502", "push, sms, email: the confirmation code could not be sent; no factor was kept"),
        ]),
        op(
            "/v1/tenants/{tenant}/users/{user}/factors",
            "delete",
            "Reset: remove all of the user's factors and recovery codes",
            "operator, admin, helpdesk",
            ("200", "how many factors were removed"),
        ),
        op(
            "/v1/tenants/{tenant}/users/{user}/factors/{factor}",
            "delete",
            "Remove one factor",
            "operator, admin, helpdesk",
            ("204", "removed"),
        ),
        op(
            "/v1/tenants/{tenant}/users/{user}/factors/{factor}/confirm",
            "post",
            "Confirm a pending factor with a code from the user's device (for push: the code pushed at enrolment)",
            "operator, admin",
            ("200", "confirmed"),
        )
        .body(object(&[("code", string("the current code"))], &["code"])),
        op(
            "/v1/tenants/{tenant}/users/{user}/factors/{factor}/send-code",
            "post",
            "Send the confirmation code of a pending sms, email or push factor again (sms and email keep their resend delay and hourly quota)",
            "operator, admin",
            ("200", "{\"ok\": true, \"code_sent_to\": ...}"),
        )
        .fails(&[
            ("409", "the factor is not a pending sms, email or push factor"),
            ("429", "a code was sent moments ago; the message says when to ask again"),
            ("502", "the code could not be sent"),
        ]),
        op(
            "/v1/tenants/{tenant}/users/{user}/recovery-codes",
            "post",
            "Replace the user's recovery codes with 10 new ones, returned once",
            "operator, admin",
            ("201", "{\"codes\": [...]}"),
        ),
        op(
            "/v1/tenants/{tenant}/users/{user}/bypass-codes",
            "post",
            "Issue a bypass code (returned once); the body may be empty",
            "operator, admin, helpdesk",
            ("201", "{\"code\", \"uses\", \"expires_at\"}"),
        )
        .body(object(
            &[
                ("uses", json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 1})),
                ("ttl", json!({"type": "string", "default": "1h", "description": "1s to 30d, like 1h, 30m, 2d"})),
            ],
            &[],
        )),
        op(
            "/v1/tenants/{tenant}/policies",
            "get",
            "The tenant's configured policy rules, in order",
            "operator, admin",
            ("200", "{\"rules\": [...], \"default\": \"require_mfa\"}"),
        ),
        op(
            "/v1/tenants/{tenant}/policies/test",
            "post",
            "Which rule a login would match, and why (like `portcullis policy test`)",
            "operator, admin",
            ("200", "the decision and explanation"),
        )
        .body(object(
            &[
                ("user", string("the user (their groups come from the store)")),
                ("client", string("RADIUS client or PAM service name")),
                ("source", string("Calling-Station-Id or PAM rhost")),
                ("host", string("PAM host")),
                ("at", string("RFC 3339 time; default now")),
            ],
            &["user", "client"],
        )),
        op(
            "/v1/tenants/{tenant}/clients",
            "get",
            "The tenant's RADIUS clients (never their secrets)",
            "operator, admin",
            ("200", "the clients"),
        ),
        op(
            "/v1/tenants/{tenant}/pam-hosts",
            "get",
            "The tenant's remote PAM hosts (never their tokens)",
            "operator, admin",
            ("200", "the hosts"),
        ),
        op(
            "/v1/tenants/{tenant}/pam-hosts",
            "post",
            "Register a PAM host; its token is in this answer only (put it in the host's token_file)",
            "operator, admin",
            ("201", "the host and its token"),
        )
        .body(object(
            &[("name", string("the host's name: 1-253 letters, digits or . _ -"))],
            &["name"],
        )),
        op(
            "/v1/tenants/{tenant}/pam-hosts/{host}",
            "delete",
            "Remove a PAM host: its token stops working at once",
            "operator, admin",
            ("204", "removed"),
        ),
        Op {
            query: vec![
                ("user", "only this user's records"),
                ("since", "only newer than this duration ago: 1h, 30m, 7d"),
                ("limit", "the newest this many, 1-1000 (default 100)"),
            ],
            ..op(
                "/v1/tenants/{tenant}/audit",
                "get",
                "Search the tenant's audit log: logins and admin changes",
                "operator, admin, auditor",
                ("200", "the records, oldest first"),
            )
        },
    ]
}

/// The whole document.
pub fn document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let mut paths = Map::new();
    for o in operations() {
        let mut params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        params.extend(o.query.iter().map(|(name, d)| {
            json!({"name": name, "in": "query", "required": false, "description": d, "schema": {"type": "string"}})
        }));
        let mut responses = Map::new();
        let ok = if o.ok.0 == "204" {
            json!({"description": o.ok.1})
        } else {
            json!({"description": o.ok.1, "content": {"application/json": {}}})
        };
        responses.insert(o.ok.0.into(), ok);
        let public = o.path == "/v1/openapi.json";
        let failures: &[(&str, &str)] = if public {
            &[]
        } else {
            &[
                ("400", "invalid request (the message says what to fix)"),
                ("401", "no token, or an unknown, revoked or expired one"),
                ("403", "the token's role may not do this"),
                (
                    "404",
                    "no such tenant, user or factor (or another tenant's)",
                ),
            ]
        };
        for (code, d) in failures.iter().chain(&o.fails) {
            responses.insert(
                code.to_string(),
                json!({"description": d, "content": {"application/json": {"schema": error}}}),
            );
        }
        let mut operation = json!({
            "summary": o.summary,
            "description": format!("Roles: {}.", o.roles),
            "operationId": format!("{}_{}", o.method, o.path.trim_start_matches("/v1/").replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if public {
            operation["security"] = json!([]);
        }
        if let Some(schema) = o.body {
            operation["requestBody"] = json!({
                "required": !o.path.ends_with("/bypass-codes"),
                "content": {"application/json": {"schema": schema}},
            });
        }
        let entry = paths.entry(o.path.to_string()).or_insert_with(|| json!({}));
        entry[o.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Portcullis admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tenants, users, factors, codes, policies, RADIUS clients and audit. Tokens are made with the CLI only (`portcullis token add`, with `--expires 90d` for one that stops working after that long); an expired token is refused with 401 like a revoked one. A tenant's token never reaches another tenant: other tenants answer 404.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "pca_... admin token"}},
            "schemas": {"Error": object(&[("error", string("what went wrong and what to do"))], &["error"])},
        },
        "paths": paths,
    })
}
