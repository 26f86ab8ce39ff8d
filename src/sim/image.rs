//! Simulated Glance v2 under `/image`: version discovery, image list (filters `name`,
//! `status`, `visibility`, `owner`; `limit`/`marker` pagination with `next`) and show. Images
//! come from the seed and are read-only.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;

use crate::openstack::image::protocol::*;
use crate::sim::Sim;
use crate::sim::http::{ApiError, ApiResult, QueryPairs, Service, authenticate, json};
use crate::sim::seed::SeedImage;
use crate::sim::state::World;

const S: Service = Service::Image;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/image", get(versions))
        .route("/image/", get(versions))
        .route("/image/versions", get(versions_ok))
        .route("/image/v2/images", get(list))
        .route("/image/v2/images/{id}", get(show))
}

fn version_list(sim: &Sim) -> VersionList {
    let mut versions = Vec::new();
    for (i, v) in ["2.17", "2.16", "2.15", "2.9", "2.7", "2.6", "2.5", "2.4", "2.3", "2.2", "2.1", "2.0"]
        .iter()
        .enumerate()
    {
        versions.push(Version {
            id: format!("v{v}"),
            status: if i == 0 { "CURRENT" } else { "SUPPORTED" }.into(),
            links: vec![Link { rel: "self".into(), href: sim.url("/image/v2/") }],
        });
    }
    VersionList { versions }
}

async fn versions(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::MULTIPLE_CHOICES, &version_list(&sim))
}

async fn versions_ok(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &version_list(&sim))
}

fn view(w: &World, i: &SeedImage) -> Image {
    let owner = w.seed.projects.first().map(|p| p.id.clone());
    let mut properties = BTreeMap::new();
    properties.insert("hw_rng_model".to_string(), serde_json::json!("virtio"));
    let active = i.status == "active";
    Image {
        id: i.id.clone(),
        name: Some(i.name.clone()),
        status: i.status.clone(),
        visibility: Some(i.visibility.clone()),
        protected: false,
        os_hidden: false,
        checksum: active.then(|| format!("{:032x}", fxhash(&i.id))),
        os_hash_algo: active.then(|| "sha512".into()),
        os_hash_value: active.then(|| format!("{:0128x}", fxhash(&i.name))),
        size: if active { i.size } else { None },
        virtual_size: None,
        disk_format: i.disk_format.clone(),
        container_format: i.disk_format.as_ref().map(|_| "bare".into()),
        min_disk: i.min_disk,
        min_ram: i.min_ram,
        owner,
        created_at: w.started,
        updated_at: w.started,
        tags: vec![],
        self_link: Some(format!("/v2/images/{}", i.id)),
        file: Some(format!("/v2/images/{}/file", i.id)),
        schema: Some("/v2/schemas/image".into()),
        properties,
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

async fn list(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let limit = q.limit(S, 25, 1000)?;
    let w = sim.world();
    let all: Vec<&SeedImage> = w
        .seed
        .images
        .iter()
        .filter(|i| q.get("name").is_none_or(|n| n == i.name))
        .filter(|i| q.get("status").is_none_or(|s| s.eq_ignore_ascii_case(&i.status)))
        .filter(|i| q.get("visibility").is_none_or(|v| v == "all" || v == i.visibility))
        .collect();
    let start = match q.get("marker") {
        None => 0,
        Some(m) => all.iter().position(|i| i.id == m).map(|p| p + 1).ok_or_else(|| {
            ApiError::bad_request(S, format!("Invalid marker. Image {m} could not be found."))
        })?,
    };
    let page: Vec<Image> = all.iter().skip(start).take(limit).map(|i| view(&w, i)).collect();
    let next = (page.len() == limit && limit > 0).then(|| {
        let last = page.last().map(|i| i.id.clone()).unwrap_or_default();
        format!("/v2/images?marker={last}&limit={limit}")
    });
    Ok(json(
        StatusCode::OK,
        &ImageList {
            images: page,
            first: Some("/v2/images".into()),
            next,
            schema: Some("/v2/schemas/images".into()),
        },
    ))
}

async fn show(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let i = w
        .seed
        .images
        .iter()
        .find(|i| i.id == id)
        .ok_or_else(|| ApiError::not_found(S, format!("No image found with ID {id}")))?;
    Ok(json(StatusCode::OK, &view(&w, i)))
}
