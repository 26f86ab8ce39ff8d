//! A smoke check of the client against a cloud: every call the engine makes, once, in the
//! order the engine makes them, then the undo. It is how the client is verified against a real
//! OpenStack (the simulator has its own tests), and what an operator can run to see that the
//! credentials, the catalog, the microversions and the quotas allow provisioning at all.
//!
//! It creates a port, a server, a volume and an attachment, all tagged or marked
//! `provisioner-smoke`, waits for each to settle, and deletes everything it created, also when a
//! step fails. Each step is timed; the report says which microversions were negotiated.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::OpenStack;
use super::compute::{NewServer, ServerQuery};
use super::error::{ErrorClass, OpenStackError, Service};
use super::microversion::Microversion;
use super::network::NewPort;
use super::volume::NewVolume;

/// What to provision: names or ids as an order gives them.
#[derive(Debug, Clone)]
pub struct SmokeSpec {
    pub image: String,
    pub flavor: String,
    pub network: String,
    /// Size of the test volume; `None` skips the volume steps.
    pub volume_gb: Option<u64>,
    /// Longest wait for each status change.
    pub wait: Duration,
}

/// What happened, step by step.
#[derive(Debug, Clone, Default)]
pub struct SmokeReport {
    pub project_id: String,
    pub nova_microversion: Option<Microversion>,
    pub cinder_microversion: Option<Microversion>,
    /// (step, duration) in the order run.
    pub steps: Vec<(String, Duration)>,
}

impl std::fmt::Display for SmokeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "project {}", self.project_id)?;
        if let Some(v) = self.nova_microversion {
            writeln!(f, "nova microversion {v}")?;
        }
        if let Some(v) = self.cinder_microversion {
            writeln!(f, "cinder microversion {v}")?;
        }
        for (step, took) in &self.steps {
            writeln!(f, "  {step:<32} {:>8.2}s", took.as_secs_f64())?;
        }
        Ok(())
    }
}

const MARK: &str = "provisioner-smoke";

/// Polls `check` every 500 ms until it yields, fails with a `Transient` timeout error after `wait`.
async fn wait_until<T, F, Fut>(what: &str, wait: Duration, mut check: F) -> Result<T, OpenStackError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, OpenStackError>>,
{
    let deadline = Instant::now() + wait;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(OpenStackError::new(
                ErrorClass::Transient,
                Service::Compute,
                "GET",
                "",
                format!("timed out after {wait:?} waiting for {what}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs the check in `project` (the configured default project when `None`).
pub async fn run(
    cloud: &OpenStack,
    project: Option<&str>,
    spec: &SmokeSpec,
) -> Result<SmokeReport, OpenStackError> {
    let project = match project {
        Some(p) => p.to_string(),
        None => cloud.identity().default_project_id().await?,
    };
    let mut report = SmokeReport { project_id: project.clone(), ..SmokeReport::default() };
    let mut created = Created::default();
    let result = provision(cloud, &project, spec, &mut report, &mut created).await;
    let cleanup = created.undo(cloud, &project, spec.wait).await;
    result?;
    cleanup?;
    Ok(report)
}

/// What the check created, for the undo.
#[derive(Debug, Default)]
struct Created {
    port: Option<String>,
    server: Option<String>,
    volume: Option<String>,
}

impl Created {
    /// Deletes in reverse order; the server first (it releases port and volume).
    async fn undo(&self, cloud: &OpenStack, p: &str, wait: Duration) -> Result<(), OpenStackError> {
        let mut first_error = None;
        if let Some(id) = &self.server {
            let deleted = async {
                cloud.compute().delete_server(p, id).await?;
                wait_until("the server to be deleted", wait, || async {
                    match cloud.compute().get_server(p, id).await {
                        Err(e) if e.class == ErrorClass::NotFound => Ok(Some(())),
                        Ok(s) if s.status == "DELETED" => Ok(Some(())),
                        Ok(_) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
                .await
            };
            if let Err(e) = deleted.await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(id) = &self.volume {
            let deleted = async {
                wait_until("the volume to be released", wait, || async {
                    match cloud.volume().get_volume(p, id).await {
                        Ok(v) => Ok((!matches!(
                            v.status.as_str(),
                            "in-use" | "detaching" | "attaching" | "creating"
                        ))
                        .then_some(())),
                        Err(e) if e.class == ErrorClass::NotFound => Ok(Some(())),
                        Err(e) => Err(e),
                    }
                })
                .await?;
                cloud.volume().delete_volume(p, id).await
            };
            if let Err(e) = deleted.await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(id) = &self.port
            && let Err(e) = cloud.network().delete_port(p, id).await
        {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }
}

async fn provision(
    cloud: &OpenStack,
    p: &str,
    spec: &SmokeSpec,
    report: &mut SmokeReport,
    created: &mut Created,
) -> Result<(), OpenStackError> {
    let mut clock = Instant::now();
    let mut step = |report: &mut SmokeReport, name: &str| {
        report.steps.push((name.to_string(), clock.elapsed()));
        clock = Instant::now();
    };
    let info = cloud.identity().check_project(p).await?;
    step(report, "authenticate");
    tracing::info!(endpoints = ?info.endpoints, "catalog");
    report.nova_microversion = Some(cloud.compute().microversion(p).await?);
    if spec.volume_gb.is_some() {
        report.cinder_microversion = Some(cloud.volume().microversion(p).await?);
    }
    step(report, "negotiate microversions");
    let image = cloud.image().find_image(p, &spec.image).await?;
    let flavor = cloud.compute().find_flavor(p, &spec.flavor).await?;
    let network = cloud.network().find_network(p, &spec.network).await?;
    step(report, "resolve image, flavor, network");
    let limits = cloud.compute().limits(p).await?;
    tracing::info!(
        instances = limits.absolute.total_instances_used,
        max_instances = limits.absolute.max_total_instances,
        "nova limits"
    );
    step(report, "limits");

    let tags = vec![MARK.to_string()];
    let port = cloud
        .network()
        .create_port(
            p,
            &NewPort {
                network_id: network.id.clone(),
                name: MARK.into(),
                tags: tags.clone(),
                security_groups: None,
            },
        )
        .await?;
    created.port = Some(port.id.clone());
    let listed = cloud.network().list_ports_by_tags(p, &tags).await?;
    if !listed.iter().any(|x| x.id == port.id) {
        return Err(unexpected(Service::Network, "the new port is not listed by its tags"));
    }
    step(report, "create port (tagged)");

    let metadata = BTreeMap::from([(MARK.to_string(), "1".to_string())]);
    let server = cloud
        .compute()
        .create_server(
            p,
            &NewServer {
                name: MARK.into(),
                flavor_id: flavor.id.clone(),
                image_id: image.id.clone(),
                port_id: port.id.clone(),
                tags: tags.clone(),
                key_name: None,
                // "#cloud-config\n" in base64.
                user_data: Some("I2Nsb3VkLWNvbmZpZwo=".into()),
                metadata: metadata.clone(),
                availability_zone: None,
                server_group: None,
                boot_volume: None,
            },
        )
        .await?;
    created.server = Some(server.id.clone());
    step(report, "create server");
    wait_until("the server to be ACTIVE", spec.wait, || async {
        let s = cloud.compute().get_server(p, &server.id).await?;
        match s.status.as_str() {
            "ACTIVE" => Ok(Some(())),
            "ERROR" => Err(unexpected(
                Service::Compute,
                &format!("server went to ERROR: {}", s.fault.map(|f| f.message).unwrap_or_default()),
            )),
            _ => Ok(None),
        }
    })
    .await?;
    step(report, "wait server ACTIVE");
    // Below 2.52 the tags may still be on their way (see `compute`): make sure, like the engine.
    cloud.compute().ensure_server_tags(p, &server.id, &tags).await?;
    let listed = cloud
        .compute()
        .list_servers(p, &ServerQuery { tags: tags.clone(), ..ServerQuery::default() })
        .await?;
    if !listed.iter().any(|s| s.id == server.id) {
        return Err(unexpected(Service::Compute, "the new server is not listed by its tags"));
    }
    step(report, "list servers by tags");

    let Some(size_gb) = spec.volume_gb else { return Ok(()) };
    let volume = cloud
        .volume()
        .create_volume(
            p,
            &NewVolume { name: MARK.into(), size_gb, volume_type: None, metadata: metadata.clone() },
        )
        .await?;
    created.volume = Some(volume.id.clone());
    wait_until("the volume to be available", spec.wait, || async {
        let v = cloud.volume().get_volume(p, &volume.id).await?;
        match v.status.as_str() {
            "available" => Ok(Some(())),
            "error" => Err(unexpected(Service::Volume, "volume went to error")),
            _ => Ok(None),
        }
    })
    .await?;
    let listed = cloud.volume().list_volumes_by_metadata(p, &metadata).await?;
    if !listed.iter().any(|v| v.id == volume.id) {
        return Err(unexpected(Service::Volume, "the new volume is not listed by its metadata"));
    }
    step(report, "create volume, wait available");
    cloud.compute().attach_volume(p, &server.id, &volume.id).await?;
    wait_until("the volume to be in-use", spec.wait, || async {
        let v = cloud.volume().get_volume(p, &volume.id).await?;
        Ok((v.status == "in-use").then_some(()))
    })
    .await?;
    let attachments = cloud.compute().list_attachments(p, &server.id).await?;
    if !attachments.iter().any(|a| a.volume_id == volume.id) {
        return Err(unexpected(Service::Compute, "the attachment is not listed"));
    }
    step(report, "attach volume, wait in-use");
    cloud.compute().detach_volume(p, &server.id, &volume.id).await?;
    wait_until("the volume to be detached", spec.wait, || async {
        let v = cloud.volume().get_volume(p, &volume.id).await?;
        Ok((v.status == "available").then_some(()))
    })
    .await?;
    step(report, "detach volume");
    Ok(())
}

fn unexpected(service: Service, message: &str) -> OpenStackError {
    OpenStackError::new(ErrorClass::Permanent, service, "GET", "", message)
}
