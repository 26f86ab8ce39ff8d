//! Glance v2: the image an order names, found by id or exact name.
//!
//! Built like the other services: [`ImageApi`] holds the shared session, each call takes the
//! project scope (the order's project id) and returns the wire types of [`protocol`], failing
//! with an [`OpenStackError`] classified in one place.
//!
//! The lookup guarantees exactly one **active** image: an id that names an image in another
//! state, or a name with no active match, is `not_found` (the message says what was there); a
//! name with several active matches is `ambiguous`.

pub mod protocol;

use std::sync::Arc;

use reqwest::Method;

use self::protocol::{Image, ImageList};
use super::error::{ErrorClass, OpenStackError, Service, exactly_one};
use super::session::{Request, Session};

const SERVICE: Service = Service::Image;

/// Glance calls in a project's scope.
#[derive(Debug, Clone)]
pub struct ImageApi {
    session: Arc<Session>,
}

impl ImageApi {
    pub fn new(session: Arc<Session>) -> ImageApi {
        ImageApi { session }
    }

    /// `GET /v2/images/{id}`.
    pub async fn get_image(&self, project: &str, id: &str) -> Result<Image, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/images/{id}", format!("/images/{id}"));
        self.session.json(project, req).await
    }

    /// `GET /v2/images?name=...`, following `next` links: every image with exactly this name.
    pub async fn list_images_by_name(&self, project: &str, name: &str) -> Result<Vec<Image>, OpenStackError> {
        let mut images = Vec::new();
        let mut req = Request::new(SERVICE, Method::GET, "/images", "/images").query("name", name);
        loop {
            let page: ImageList = self.session.json(project, req.clone()).await?;
            images.extend(page.images);
            match page.next {
                Some(next) => req = req.query_from_link(&next),
                None => break,
            }
        }
        // Glance filters on the exact name; keep only exact matches should a proxy not.
        images.retain(|i| i.name.as_deref() == Some(name));
        Ok(images)
    }

    /// The one active image with this id, or else this exact name.
    pub async fn find_image(&self, project: &str, id_or_name: &str) -> Result<Image, OpenStackError> {
        if looks_like_uuid(id_or_name) {
            match self.get_image(project, id_or_name).await {
                Ok(image) if image.status == "active" => return Ok(image),
                Ok(image) => {
                    return Err(OpenStackError::new(
                        ErrorClass::NotFound,
                        SERVICE,
                        "GET",
                        "/images/{id}",
                        format!("image {} is {}, not active", image.id, image.status),
                    ));
                }
                // Not an id after all: an image may be named like one.
                Err(e) if e.class == ErrorClass::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let all = self.list_images_by_name(project, id_or_name).await?;
        let inactive: Vec<String> = all
            .iter()
            .filter(|i| i.status != "active")
            .map(|i| format!("{} is {}", i.id, i.status))
            .collect();
        let active: Vec<Image> = all.into_iter().filter(|i| i.status == "active").collect();
        exactly_one(SERVICE, "/images", "active image", id_or_name, active, |i| &i.id).map_err(|mut e| {
            if e.class == ErrorClass::NotFound && !inactive.is_empty() {
                e.message = format!("{} (not active: {})", e.message, inactive.join(", "));
            }
            e
        })
    }
}

/// 8-4-4-4-12 hex digits (Glance, Neutron and Cinder ids; Nova flavors may be anything).
pub fn looks_like_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
        || (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shapes() {
        assert!(looks_like_uuid("70a599e0-31e7-49b7-b260-868f441e862b"));
        assert!(looks_like_uuid("70a599e031e749b7b260868f441e862b"));
        assert!(!looks_like_uuid("cirros-0.6.2"));
        assert!(!looks_like_uuid("70a599e0-31e7-49b7-b260-868f441e862"));
    }

    /// Glance api-ref, `GET /v2/images` (images-list-response), trimmed to two images.
    #[test]
    fn parses_the_api_ref_image_list() {
        let body = r#"{
    "images": [
        {
            "status": "active",
            "name": "cirros-0.3.2-x86_64-disk",
            "tags": [],
            "container_format": "bare",
            "created_at": "2014-11-07T17:07:06Z",
            "disk_format": "qcow2",
            "updated_at": "2014-11-07T17:19:09Z",
            "visibility": "public",
            "self": "/v2/images/1bea47ed-f6a9-463b-b423-14b9cca9ad27",
            "min_disk": 0,
            "protected": false,
            "id": "1bea47ed-f6a9-463b-b423-14b9cca9ad27",
            "file": "/v2/images/1bea47ed-f6a9-463b-b423-14b9cca9ad27/file",
            "checksum": "64d7c1cd2b6f60c92c14662941cb7913",
            "os_hash_algo": "sha512",
            "os_hash_value": "073b4523583784fbe01daff81eba092a262ec37ba6d04dd3f52e4cd5c93eb8258af44881345ecda0e49f3d8cc6d2df6b050ff3e72681d723234aff9d17d0cf09",
            "os_hidden": false,
            "owner": "5ef70662f8b34079a6eddb8da9d75fe8",
            "size": 13167616,
            "min_ram": 0,
            "schema": "/v2/schemas/image",
            "virtual_size": null
        },
        {
            "status": "queued",
            "name": "F17-x86_64-cfntools",
            "tags": [],
            "container_format": "bare",
            "created_at": "2014-10-30T08:23:39Z",
            "disk_format": "qcow2",
            "updated_at": "2014-11-03T16:40:10Z",
            "visibility": "public",
            "self": "/v2/images/781b3762-9469-4cec-b58d-3349e5de4e9c",
            "min_disk": 0,
            "protected": false,
            "id": "781b3762-9469-4cec-b58d-3349e5de4e9c",
            "file": "/v2/images/781b3762-9469-4cec-b58d-3349e5de4e9c/file",
            "checksum": null,
            "os_hash_algo": null,
            "os_hash_value": null,
            "os_hidden": false,
            "owner": "5ef70662f8b34079a6eddb8da9d75fe8",
            "size": null,
            "min_ram": 0,
            "schema": "/v2/schemas/image",
            "virtual_size": null
        }
    ],
    "schema": "/v2/schemas/images",
    "first": "/v2/images",
    "next": "/v2/images?marker=781b3762-9469-4cec-b58d-3349e5de4e9c"
}"#;
        let list: ImageList = serde_json::from_str(body).unwrap();
        assert_eq!(list.images.len(), 2);
        assert_eq!(list.images[0].status, "active");
        assert_eq!(list.images[1].checksum, None);
        assert_eq!(list.next.as_deref(), Some("/v2/images?marker=781b3762-9469-4cec-b58d-3349e5de4e9c"));
        let next = Request::new(SERVICE, Method::GET, "/images", "/images")
            .query_from_link(list.next.as_deref().unwrap());
        assert_eq!(
            next.query,
            vec![("marker".to_string(), "781b3762-9469-4cec-b58d-3349e5de4e9c".to_string())]
        );
    }
}
