//! Users and their access keys (`aisle user …`, admin API under `/_aisle/v1/users`). Users
//! live in the cluster metadata; s3s verifies their signatures with [`crate::access::Keys`] and
//! [`crate::access::Access`] decides what each may do. Only the admin key reaches this API.

use std::collections::BTreeMap;

use aisle_cluster::access::User;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::meta::MetaOwner;
use crate::s3::s3_error;

/// The admin API path of users.
pub const USERS_PREFIX: &str = "/_aisle/v1/users";

/// A user as listed (without secrets).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    /// Name.
    pub name: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Access key ids.
    pub keys: Vec<String>,
    /// Buckets the user owns.
    pub buckets: Vec<String>,
}

/// A key pair, shown once when it is made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewKey {
    /// The user.
    pub name: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
}

fn err(status: StatusCode, code: &str, msg: String) -> s3s::S3Error {
    let mut e = s3_error(s3s::S3ErrorCode::Custom(code.to_string().into()), msg);
    e.set_status_code(status);
    e
}

fn check_name(name: &str) -> s3s::S3Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+=-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(err(
            StatusCode::BAD_REQUEST,
            "InvalidUserName",
            format!("user names are 1-64 characters of letters, digits and ._@+=-: {name:?}"),
        ))
    }
}

fn new_key(name: &str) -> NewKey {
    NewKey {
        name: name.to_string(),
        access_key: format!("AKU{}", hex::encode_upper(rand::random::<[u8; 8]>())),
        secret_key: hex::encode(rand::random::<[u8; 20]>()),
    }
}

fn no_user(name: &str) -> s3s::S3Error {
    err(
        StatusCode::NOT_FOUND,
        "NoSuchUser",
        format!("no user named {name}"),
    )
}

/// Serves `method` on `path` (under [`USERS_PREFIX`]).
pub async fn route(
    meta: &MetaOwner,
    method: &Method,
    path: &str,
) -> s3s::S3Result<serde_json::Value> {
    let rest = path[USERS_PREFIX.len()..].trim_start_matches('/');
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match (method, parts.as_slice()) {
        (&Method::GET, []) => {
            let m = meta.snapshot();
            let views: Vec<UserView> = m
                .users
                .iter()
                .map(|(name, u)| UserView {
                    name: name.clone(),
                    created_ms: u.created_ms,
                    keys: u.keys.keys().cloned().collect(),
                    buckets: m
                        .buckets
                        .iter()
                        .filter(|(_, b)| b.owner.as_deref() == Some(name))
                        .map(|(b, _)| b.clone())
                        .collect(),
                })
                .collect();
            Ok(value(&views))
        }
        (&Method::POST, [name]) => {
            check_name(name)?;
            let key = new_key(name);
            meta.update(|m| {
                if m.users.contains_key(*name) {
                    return Err(err(
                        StatusCode::CONFLICT,
                        "UserAlreadyExists",
                        format!("a user named {name} exists"),
                    ));
                }
                m.users.insert(
                    name.to_string(),
                    User {
                        created_ms: aisle_cluster::now_ms(),
                        keys: BTreeMap::from([(key.access_key.clone(), key.secret_key.clone())]),
                    },
                );
                Ok::<_, s3s::S3Error>((true, ()))
            })
            .await?;
            Ok(value(&key))
        }
        (&Method::DELETE, [name]) => {
            meta.update(|m| match m.users.remove(*name) {
                Some(_) => Ok((true, ())),
                None => Err(no_user(name)),
            })
            .await?;
            Ok(serde_json::json!({"removed": name}))
        }
        (&Method::POST, [name, "keys"]) => {
            let key = new_key(name);
            meta.update(|m| {
                let u = m.users.get_mut(*name).ok_or_else(|| no_user(name))?;
                u.keys
                    .insert(key.access_key.clone(), key.secret_key.clone());
                Ok::<_, s3s::S3Error>((true, ()))
            })
            .await?;
            Ok(value(&key))
        }
        (&Method::DELETE, [name, "keys", key]) => {
            meta.update(|m| {
                let u = m.users.get_mut(*name).ok_or_else(|| no_user(name))?;
                match u.keys.remove(*key) {
                    Some(_) => Ok((true, ())),
                    None => Err(err(
                        StatusCode::NOT_FOUND,
                        "NoSuchKey",
                        format!("{name} has no access key {key}"),
                    )),
                }
            })
            .await?;
            Ok(serde_json::json!({"removed": key}))
        }
        _ => Err(s3_error(
            s3s::S3ErrorCode::NotImplemented,
            format!("no admin API at {path}"),
        )),
    }
}

fn value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("serializes")
}
