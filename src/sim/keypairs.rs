//! Simulated Nova keypairs under `/compute/v2.1/os-keypairs`: list (paged from 2.35), show,
//! import or generate (generate only below 2.92, as Nova), delete.
//!
//! Keypairs belong to a user, not to a project: every call sees the token's user's keypairs
//! whatever project it is scoped to (an admin may name another with `user_id`, 2.10+). A public
//! key Nova cannot read is its 400 `Keypair data is invalid: failed to generate fingerprint`, a
//! name taken its 409 `Key pair '<name>' already exists.`; the fingerprint is the MD5 of the key
//! data, as Nova computes it. Server create checks `key_name` against the same map.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{DateTime, Utc};

use crate::openstack::compute::protocol::{
    KeypairCreateRequest, Link, parse_openssh_public_key, ssh_fingerprint,
};
use crate::sim::Sim;
use crate::sim::http::{
    ApiError, ApiResult, Microversion, NOVA_MIN, QueryPairs, Service, authenticate, json, parse_body,
};
use crate::sim::state::{TokenInfo, World};

const S: Service = Service::Compute;

/// Nova's default `key_pairs` quota, per user.
pub const KEYPAIR_QUOTA: usize = 100;

/// One keypair of a user.
#[derive(Debug, Clone)]
pub struct KeypairRec {
    pub id: i64,
    pub name: String,
    pub user_id: String,
    pub key_type: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created: DateTime<Utc>,
}

pub fn routes() -> Router<Arc<Sim>> {
    let v = "/compute/v2.1";
    Router::new()
        .route(&format!("{v}/os-keypairs"), get(list_keypairs).post(create_keypair))
        .route(&format!("{v}/os-keypairs/{{name}}"), get(show_keypair).delete(delete_keypair))
}

fn mv(ext: Option<Extension<Microversion>>) -> Microversion {
    ext.map(|e| e.0).unwrap_or(NOVA_MIN)
}

/// A seeded or generated key: an `ssh-ed25519` line whose key data is derived from `seed`.
pub fn synthetic_key(seed: &str, comment: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut blob = Vec::with_capacity(51);
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&sha2::Sha256::digest(seed.as_bytes()));
    format!("ssh-ed25519 {} {comment}", base64::engine::general_purpose::STANDARD.encode(blob))
}

impl World {
    /// Adds a keypair for `user_id` (no checks: seeding and the API's create).
    pub fn add_keypair(&mut self, user_id: &str, name: &str, public_key: &str, now: DateTime<Utc>) {
        let fingerprint =
            parse_openssh_public_key(public_key).map(|(_, blob)| ssh_fingerprint(&blob)).unwrap_or_default();
        let id = self.next_seq() as i64;
        self.keypairs.insert(
            (user_id.to_string(), name.to_string()),
            KeypairRec {
                id,
                name: name.to_string(),
                user_id: user_id.to_string(),
                key_type: "ssh".into(),
                public_key: public_key.trim().to_string(),
                fingerprint,
                created: now,
            },
        );
    }

    pub fn has_keypair(&self, user_id: &str, name: &str) -> bool {
        self.keypairs.contains_key(&(user_id.to_string(), name.to_string()))
    }
}

/// The user a call acts for: the token's, or (admin, 2.10+) `user_id`.
fn target_user(tok: &TokenInfo, q: &QueryPairs, mv: Microversion) -> String {
    match q.get("user_id") {
        Some(u) if tok.is_admin() && mv.at_least(2, 10) => u.to_string(),
        _ => tok.user_id.clone(),
    }
}

fn not_found(name: &str, user: &str) -> ApiError {
    ApiError::not_found(S, format!("Keypair {name} not found for user {user}"))
}

fn entry(k: &KeypairRec, mv: Microversion) -> serde_json::Value {
    let mut v = serde_json::json!({"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint});
    if mv.at_least(2, 2) {
        v["type"] = serde_json::json!(k.key_type);
    }
    v
}

async fn list_keypairs(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    q: QueryPairs,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mv = mv(v);
    let user = target_user(&tok, &q, mv);
    let paged = mv.at_least(2, 35);
    let limit = if paged { q.limit(S, 1000, 1000)? } else { usize::MAX };
    let w = sim.world();
    let mine = w.keypairs.range((user.clone(), String::new())..).take_while(|((u, _), _)| *u == user);
    let marker = q.get("marker").filter(|_| paged);
    if let Some(m) = marker
        && !w.has_keypair(&user, m)
    {
        return Err(ApiError::bad_request(S, format!("marker [{m}] not found")));
    }
    let page: Vec<&KeypairRec> =
        mine.map(|(_, k)| k).filter(|k| marker.is_none_or(|m| k.name.as_str() > m)).take(limit).collect();
    let mut body = serde_json::json!({
        "keypairs": page.iter().map(|k| serde_json::json!({"keypair": entry(k, mv)})).collect::<Vec<_>>()
    });
    if paged
        && page.len() == limit
        && let Some(last) = page.last()
    {
        let links = vec![Link {
            rel: "next".into(),
            href: sim.url(&format!("/compute/v2.1/os-keypairs?limit={limit}&marker={}", last.name)),
            kind: None,
        }];
        body["keypairs_links"] = serde_json::json!(links);
    }
    Ok(json(StatusCode::OK, &body))
}

/// Nova's name rule (2.92 widened it to `@` and `.`): 1-255 of letters, digits, `_- .@`.
fn valid_name(name: &str, mv: Microversion) -> bool {
    let extra: &[char] = if mv.at_least(2, 92) { &['_', '-', ' ', '.', '@'] } else { &['_', '-', ' '] };
    (1..=255).contains(&name.chars().count())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
        && name.trim() == name
}

async fn create_keypair(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    v: Option<Extension<Microversion>>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mv = mv(v);
    let req: KeypairCreateRequest = parse_body(S, &body)?;
    let k = req.keypair;
    if !valid_name(&k.name, mv) {
        return Err(ApiError::bad_request(
            S,
            format!(
                "Invalid input for field/attribute name. Value: {}. '{}' does not match the keypair name rules",
                k.name, k.name
            ),
        ));
    }
    let key_type = k.key_type.clone().filter(|_| mv.at_least(2, 2)).unwrap_or_else(|| "ssh".into());
    if key_type != "ssh" && key_type != "x509" {
        return Err(ApiError::bad_request(
            S,
            format!(
                "Invalid input for field/attribute type. Value: {key_type}. '{key_type}' is not one of ['ssh', 'x509']"
            ),
        ));
    }
    let user = match &k.user_id {
        Some(u) if tok.is_admin() && mv.at_least(2, 10) => u.clone(),
        Some(_) if mv.at_least(2, 10) => {
            return Err(ApiError::forbidden(
                S,
                "Policy doesn't allow os_compute_api:os-keypairs:create to be performed.",
            ));
        }
        _ => tok.user_id.clone(),
    };
    let (public_key, private_key) = match &k.public_key {
        Some(p) => (p.trim().to_string(), None),
        None if mv.at_least(2, 92) => {
            return Err(ApiError::bad_request(
                S,
                "Invalid input for field/attribute keypair. Value: {}. 'public_key' is a required property",
            ));
        }
        None => {
            let seed = uuid::Uuid::new_v4().to_string();
            (
                synthetic_key(&seed, "Generated-by-Nova"),
                Some(format!(
                    "-----BEGIN OPENSSH PRIVATE KEY-----\n{seed}\n-----END OPENSSH PRIVATE KEY-----\n"
                )),
            )
        }
    };
    if key_type == "x509" || parse_openssh_public_key(&public_key).is_err() {
        return Err(ApiError::bad_request(S, "Keypair data is invalid: failed to generate fingerprint"));
    }
    let now = Utc::now();
    let mut w = sim.world();
    if w.has_keypair(&user, &k.name) {
        return Err(ApiError::new(S, 409, format!("Key pair '{}' already exists.", k.name)));
    }
    let owned = w.keypairs.keys().filter(|(u, _)| *u == user).count();
    if owned >= KEYPAIR_QUOTA {
        return Err(ApiError::forbidden(S, "Quota exceeded, too many key pairs."));
    }
    w.add_keypair(&user, &k.name, &public_key, now);
    let rec = w.keypairs[&(user.clone(), k.name.clone())].clone();
    drop(w);
    let mut out = entry(&rec, mv);
    out["user_id"] = serde_json::json!(rec.user_id);
    if let Some(p) = private_key {
        out["private_key"] = serde_json::json!(p);
    }
    let status = if mv.at_least(2, 2) { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &serde_json::json!({ "keypair": out })))
}

async fn show_keypair(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: QueryPairs,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mv = mv(v);
    let user = target_user(&tok, &q, mv);
    let w = sim.world();
    let k = w.keypairs.get(&(user.clone(), name.clone())).ok_or_else(|| not_found(&name, &user))?;
    let mut out = entry(k, mv);
    out["user_id"] = serde_json::json!(k.user_id);
    out["id"] = serde_json::json!(k.id);
    out["created_at"] = serde_json::json!(k.created.format("%Y-%m-%dT%H:%M:%S%.6f").to_string());
    out["deleted"] = serde_json::json!(false);
    out["deleted_at"] = serde_json::Value::Null;
    out["updated_at"] = serde_json::Value::Null;
    Ok(json(StatusCode::OK, &serde_json::json!({ "keypair": out })))
}

async fn delete_keypair(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: QueryPairs,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mv = mv(v);
    let user = target_user(&tok, &q, mv);
    let mut w = sim.world();
    w.keypairs.remove(&(user.clone(), name.clone())).ok_or_else(|| not_found(&name, &user))?;
    Ok((if mv.at_least(2, 2) { StatusCode::NO_CONTENT } else { StatusCode::ACCEPTED }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_keys_parse_and_have_nova_shaped_fingerprints() {
        let k = synthetic_key("x", "me@host");
        let (t, blob) = parse_openssh_public_key(&k).unwrap();
        assert_eq!(t, "ssh-ed25519");
        let fp = ssh_fingerprint(&blob);
        assert_eq!(fp.len(), 47, "{fp}");
        assert_eq!(fp.matches(':').count(), 15);
        assert!(parse_openssh_public_key("ssh-ed25519 AAAA").is_err());
        assert!(parse_openssh_public_key("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIFakeKey").is_err());
        assert!(valid_name("prov-9f2e7b3c-4d5e-4f6a-9b0c-1d2e3f4a5b6c", Microversion(2, 1)));
        assert!(!valid_name("a/b", Microversion(2, 101)));
        assert!(valid_name("me@host.example", Microversion(2, 92)));
    }
}
