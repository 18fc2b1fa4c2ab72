//! `/v1/tenants/{tenant}/users[/{user}[/unlock]]`: list, create, show, change, delete and
//! unlock users; `/v1/tenants/{tenant}/sources/{address}/unblock`: lift the block of an
//! address after too many wrong passwords.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Json;
use portcullis_core::admin::{NewPassword, UserDetails, UserUpdate};
use portcullis_core::model::User;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{blocking, nullable, ApiError, ApiRoute, Caller, HttpState, Perm};

pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute {
            path: "/v1/tenants/{tenant}/users",
            methods: &["get", "post"],
            handlers: get(list).post(create),
        },
        ApiRoute {
            path: "/v1/tenants/{tenant}/users/{user}",
            methods: &["get", "patch", "delete"],
            handlers: get(show).patch(update).delete(remove),
        },
        ApiRoute {
            path: "/v1/tenants/{tenant}/users/{user}/unlock",
            methods: &["post"],
            handlers: post(unlock),
        },
        ApiRoute {
            path: "/v1/tenants/{tenant}/sources/{address}/unblock",
            methods: &["post"],
            handlers: post(unblock),
        },
    ]
}

async fn list(
    caller: Caller,
    State(s): State<HttpState>,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<User>>, ApiError> {
    caller.check(&tenant, Perm::ReadUsers)?;
    let ctx = s.admin.clone();
    Ok(Json(blocking(move || ctx.admin.list_users(&tenant)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    name: String,
    /// A password (hashed with argon2id before it is stored).
    #[serde(default)]
    password: Option<String>,
    /// Or an existing argon2id / `$6$` hash.
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

async fn create(
    caller: Caller,
    State(s): State<HttpState>,
    Path(tenant): Path<String>,
    body: Result<Json<NewUserBody>, JsonRejection>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    caller.check(&tenant, Perm::WriteUsers)?;
    let Json(b) = body?;
    let password = match (b.password, b.password_hash) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either password or password_hash, not both",
            ))
        }
        (Some(p), None) => NewPassword::Plain(Zeroizing::new(p.into_bytes())),
        (None, Some(h)) => NewPassword::Hash(h),
        (None, None) => NewPassword::None,
    };
    let ctx = s.admin.clone();
    let u = blocking(move || {
        let u = ctx
            .admin
            .add_user(&tenant, &b.name, password, b.email, b.phone, b.groups)?;
        ctx.audit(&caller, &tenant, &u.name, "user.create", "user created");
        Ok(u)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

async fn show(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Json<UserDetails>, ApiError> {
    caller.check(&tenant, Perm::ReadUsers)?;
    let ctx = s.admin.clone();
    Ok(Json(
        blocking(move || ctx.admin.show_user(&tenant, &user)).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    #[serde(default)]
    disabled: Option<bool>,
    /// `null` clears the address.
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
    /// `null` clears the number.
    #[serde(default, deserialize_with = "nullable")]
    phone: Option<Option<String>>,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

async fn update(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user)): Path<(String, String)>,
    body: Result<Json<UserPatch>, JsonRejection>,
) -> Result<Json<User>, ApiError> {
    caller.check(&tenant, Perm::WriteUsers)?;
    let Json(p) = body?;
    let mut changed = Vec::new();
    for (name, set) in [
        ("disabled", p.disabled.is_some()),
        ("email", p.email.is_some()),
        ("phone", p.phone.is_some()),
        ("groups", p.groups.is_some()),
    ] {
        if set {
            changed.push(name);
        }
    }
    if changed.is_empty() {
        return Err(ApiError::bad_request(
            "nothing to change: give one of disabled, email, phone, groups",
        ));
    }
    let up_disabled = p.disabled;
    let up = UserUpdate {
        disabled: p.disabled,
        email: p.email,
        phone: p.phone,
        groups: p.groups,
    };
    let ctx = s.admin.clone();
    let u = blocking(move || {
        let u = ctx.admin.update_user(&tenant, &user, up)?;
        let mut detail = format!("changed {}", changed.join(", "));
        if let Some(d) = up_disabled {
            detail.push_str(if d {
                " (now disabled)"
            } else {
                " (now enabled)"
            });
        }
        ctx.audit(&caller, &tenant, &user, "user.update", &detail);
        Ok(u)
    })
    .await?;
    Ok(Json(u))
}

async fn remove(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.check(&tenant, Perm::WriteUsers)?;
    let ctx = s.admin.clone();
    blocking(move || {
        ctx.admin.delete_user(&tenant, &user)?;
        ctx.audit(
            &caller,
            &tenant,
            &user,
            "user.delete",
            "user deleted with factors and codes",
        );
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unlock(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.check(&tenant, Perm::WriteUsers)?;
    let ctx = s.admin.clone();
    blocking(move || {
        ctx.admin.unlock(&tenant, &user)?;
        ctx.audit(
            &caller,
            &tenant,
            &user,
            "user.unlock",
            "failed codes and lock cleared",
        );
        Ok(())
    })
    .await?;
    Ok(Json(json!({"ok": true})))
}

async fn unblock(
    caller: Caller,
    State(s): State<HttpState>,
    Path((tenant, address)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.check(&tenant, Perm::WriteUsers)?;
    let ctx = s.admin.clone();
    let had = blocking(move || {
        let had = ctx.admin.unblock_source(&tenant, &address)?;
        ctx.audit(
            &caller,
            &tenant,
            "",
            "source.unblock",
            &format!("wrong passwords from {address} forgotten"),
        );
        Ok(had)
    })
    .await?;
    Ok(Json(json!({"ok": true, "had_failures": had})))
}
