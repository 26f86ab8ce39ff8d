//! API microversions: which Nova and Cinder microversion each request carries, negotiated once
//! per cloud against the service's versions document.
//!
//! Nova: we want [`NOVA_WANTED`] and send `min(wanted, cloud max)`, never below the cloud's
//! minimum. What we rely on, by version:
//! - [`NOVA_TAGS_AT_CREATE`] (2.52): `tags` in `POST /servers`. Below it the server is created
//!   untagged and the client tags it afterwards with `PUT /servers/{id}/tags` (2.26), which
//!   leaves a short window in which a crash leaves an untagged server that a listing by tags
//!   will not find; the server's metadata (`provisioner_order_id`, set at create on every
//!   version) still identifies it. Below [`NOVA_TAGS`] (2.26) there are no tags at all: listing
//!   by tags is replaced by listing by name, filtered on metadata by the caller.
//! - [`NOVA_ATTACH_202`] (2.101): attaching a volume answers `202` without a body; before, `200`
//!   with the attachment. The client returns the attachment when the cloud sends one.
//! - [`NOVA_KEYPAIR_TYPE`] (2.2): a keypair is imported with `type: ssh`; from 2.92 Nova only
//!   imports keys (`public_key` required), which is all we do.
//! - [`NOVA_BDM_VOLUME_TYPE`] (2.67): `volume_type` in a block device mapping (a boot volume of
//!   an ordered Cinder type); below it such an order fails rather than boot on the default type.
//! - 2.47 (flavor embedded in the server) and 2.89 (attachment ids) change only response
//!   shapes, which the protocol types read in every form.
//!
//! Cinder: `OpenStack-API-Version: volume 3.0` unless more is needed: nothing we use needs
//! more, so [`CINDER_WANTED`] is the base version, capped by the cloud like Nova's.

use std::fmt;

/// A microversion `major.minor`, ordered numerically (2.9 < 2.52 < 2.101).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Microversion {
    pub major: u16,
    pub minor: u16,
}

impl Microversion {
    pub const fn new(major: u16, minor: u16) -> Microversion {
        Microversion { major, minor }
    }

    /// Parses `2.52`, also tolerating a leading `v` (`v2.1`) and surrounding blanks.
    /// An empty string (Nova's v2.0 entry) is `None`.
    pub fn parse(s: &str) -> Option<Microversion> {
        let s = s.trim().trim_start_matches(['v', 'V']);
        let (major, minor) = s.split_once('.').unwrap_or((s, "0"));
        Some(Microversion { major: major.parse().ok()?, minor: minor.parse().ok()? })
    }
}

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Nova: tags on servers (`GET /servers?tags=`, `PUT /servers/{id}/tags`).
pub const NOVA_TAGS: Microversion = Microversion::new(2, 26);
/// Nova: `tags` accepted in `POST /servers`.
pub const NOVA_TAGS_AT_CREATE: Microversion = Microversion::new(2, 52);
/// Nova: keypairs have a `type` (`ssh`, `x509`).
pub const NOVA_KEYPAIR_TYPE: Microversion = Microversion::new(2, 2);
/// Nova: server groups take one `policy` (and `rules`) instead of a `policies` list.
pub const NOVA_SERVER_GROUP_POLICY: Microversion = Microversion::new(2, 64);
/// Nova: attaching a volume answers 202 without a body.
pub const NOVA_ATTACH_202: Microversion = Microversion::new(2, 101);
/// Nova: `volume_type` in `block_device_mapping_v2`.
pub const NOVA_BDM_VOLUME_TYPE: Microversion = Microversion::new(2, 67);
/// Nova: the microversion we ask for when the cloud supports it.
pub const NOVA_WANTED: Microversion = NOVA_ATTACH_202;
/// Nova's base.
pub const NOVA_BASE: Microversion = Microversion::new(2, 1);
/// Cinder: the base v3 microversion is all we need.
pub const CINDER_WANTED: Microversion = Microversion::new(3, 0);
/// Cinder's base.
pub const CINDER_BASE: Microversion = Microversion::new(3, 0);

/// What a service's versions document says about the version we talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    pub min: Microversion,
    /// `None` when the service does not do microversions (old clouds): only `min` is used.
    pub max: Option<Microversion>,
}

/// The microversion to send: `min(wanted, max)`, not below `min`. `None` when the cloud supports
/// no microversion at or above `floor` (we cannot work with it).
pub fn negotiate(range: VersionRange, wanted: Microversion, floor: Microversion) -> Option<Microversion> {
    let max = range.max.unwrap_or(range.min);
    let chosen = wanted.min(max).max(range.min);
    (chosen >= floor).then_some(chosen)
}

/// Reads the range from a versions document: either one version (`{"version": {...}}`, what
/// `GET /v2.1/` answers) or a list (`{"versions": [...]}`, what `GET /` answers), choosing the
/// entry whose id starts with `id_prefix` (`v2.1`, `v3`) and has the highest maximum.
pub fn range_from_document(doc: &serde_json::Value, id_prefix: &str) -> Option<VersionRange> {
    let entries: Vec<&serde_json::Value> = match (doc.get("version"), doc.get("versions")) {
        (Some(one), _) => vec![one],
        (None, Some(serde_json::Value::Array(list))) => list.iter().collect(),
        // Keystone's shape: {"versions": {"values": [...]}}.
        (None, Some(other)) => other.get("values")?.as_array()?.iter().collect(),
        (None, None) => return None,
    };
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    entries
        .into_iter()
        .filter(|e| text(e, "id").starts_with(id_prefix))
        .map(|e| {
            let id_version = Microversion::parse(&text(e, "id"));
            let min = Microversion::parse(&text(e, "min_version")).or(id_version);
            let max = Microversion::parse(&text(e, "version"));
            (min, max)
        })
        .filter_map(|(min, max)| Some(VersionRange { min: min?, max }))
        .max_by_key(|r| r.max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_order_numerically() {
        let v = |s| Microversion::parse(s).unwrap();
        assert!(v("2.9") < v("2.52"));
        assert!(v("2.52") < v("2.101"));
        assert_eq!(v("v2.1"), NOVA_BASE);
        assert_eq!(v("3"), CINDER_BASE);
        assert_eq!(Microversion::parse(""), None);
        assert_eq!(NOVA_ATTACH_202.to_string(), "2.101");
    }

    #[test]
    fn negotiation_caps_at_the_cloud_and_degrades() {
        let r = |min: &str, max: &str| VersionRange {
            min: Microversion::parse(min).unwrap(),
            max: Microversion::parse(max),
        };
        assert_eq!(negotiate(r("2.1", "2.101"), NOVA_WANTED, NOVA_BASE), Some(NOVA_ATTACH_202));
        assert_eq!(negotiate(r("2.1", "2.110"), NOVA_WANTED, NOVA_BASE), Some(NOVA_ATTACH_202));
        assert_eq!(negotiate(r("2.1", "2.60"), NOVA_WANTED, NOVA_BASE), Some(Microversion::new(2, 60)));
        assert_eq!(negotiate(r("2.1", "2.38"), NOVA_WANTED, NOVA_BASE), Some(Microversion::new(2, 38)));
        assert_eq!(negotiate(r("2.1", ""), NOVA_WANTED, NOVA_BASE), Some(NOVA_BASE));
        assert_eq!(negotiate(r("3.0", "3.70"), CINDER_WANTED, CINDER_BASE), Some(CINDER_BASE));
        // A cloud that requires more than we want: its minimum.
        assert_eq!(negotiate(r("2.110", "2.120"), NOVA_WANTED, NOVA_BASE), Some(Microversion::new(2, 110)));
    }

    #[test]
    fn reads_nova_and_cinder_version_documents() {
        // Nova api-ref, `GET /v2.1/` (versions-get-resp) and `GET /` (versions-list-resp).
        let one = json!({"version": {"id": "v2.1", "status": "CURRENT", "version": "2.100",
            "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
            "links": [{"href": "http://openstack.example.com/v2.1/", "rel": "self"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]}});
        assert_eq!(
            range_from_document(&one, "v2.1"),
            Some(VersionRange { min: NOVA_BASE, max: Some(Microversion::new(2, 100)) })
        );
        let list = json!({"versions": [
            {"id": "v2.0", "links": [{"href": "http://openstack.example.com/v2/", "rel": "self"}],
             "status": "SUPPORTED", "version": "", "min_version": "", "updated": "2011-01-21T11:33:21Z"},
            {"id": "v2.1", "links": [{"href": "http://openstack.example.com/v2.1/", "rel": "self"}],
             "status": "CURRENT", "version": "2.100", "min_version": "2.1", "updated": "2013-07-23T11:33:21Z"}]});
        assert_eq!(range_from_document(&list, "v2.1").unwrap().max, Some(Microversion::new(2, 100)));
        // Cinder api-ref, `GET /` (versions-response).
        let cinder = json!({"versions": [{"id": "v3.0", "links": [{"href": "https://docs.openstack.org/", "rel": "describedby", "type": "text/html"},
            {"href": "http://127.0.0.1:45697/v3/", "rel": "self"}], "media-types": [{"base": "application/json",
            "type": "application/vnd.openstack.volume+json;version=3"}], "min_version": "3.0", "status": "CURRENT",
            "updated": "2023-08-31T00:00:00Z", "version": "3.71"}]});
        assert_eq!(
            range_from_document(&cinder, "v3"),
            Some(VersionRange { min: CINDER_BASE, max: Some(Microversion::new(3, 71)) })
        );
        assert_eq!(range_from_document(&json!({"servers": []}), "v2.1"), None);
    }
}
