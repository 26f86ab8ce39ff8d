//! The global request id every OpenStack request carries (`X-OpenStack-Request-Id: req-<uuid>`),
//! as Nova passes its own to Neutron, Cinder and Glance: the services log it next to their local
//! request id, so an operator can grep every service's logs for one job.
//!
//! Per job, the id is derived from the job id alone (`req-<job id>`), so it is the same on every
//! worker and every retry, and the job id itself is what to grep for. The engine runs each job's
//! driver inside [`scope`]; requests made outside a job (the poller's lists, token requests) get
//! a fresh `req-<uuid v4>` each. oslo.middleware accepts an inbound global id only in exactly this
//! form (`req-` and a UUID), which both are.

use std::future::Future;

use uuid::Uuid;

/// The request header (services answer with their own local id in the same header name).
pub const HEADER: &str = "x-openstack-request-id";

tokio::task_local! {
    static JOB_REQUEST_ID: String;
}

/// The global request id of a job's requests.
pub fn for_job(job_id: Uuid) -> String {
    format!("req-{job_id}")
}

/// A fresh id, for requests made outside any job.
pub fn fresh() -> String {
    format!("req-{}", Uuid::new_v4())
}

/// Runs `f` with `id` as the global request id of every OpenStack request it makes.
pub async fn scope<F: Future>(id: String, f: F) -> F::Output {
    JOB_REQUEST_ID.scope(id, f).await
}

/// The job's id if the caller runs inside a job's [`scope`].
pub fn in_job() -> Option<String> {
    JOB_REQUEST_ID.try_with(Clone::clone).ok()
}

/// The id to send now: the job's, or a fresh one.
pub fn current() -> String {
    in_job().unwrap_or_else(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_jobs_id_is_its_own_and_stable_outside_fresh() {
        let job = Uuid::new_v4();
        assert_eq!(for_job(job), for_job(job));
        assert_eq!(for_job(job), format!("req-{job}"));
        assert!(in_job().is_none());
        assert_ne!(current(), current());
        let inside = scope(for_job(job), async { (in_job(), current()) }).await;
        assert_eq!(inside, (Some(for_job(job)), for_job(job)));
        let id = fresh();
        assert!(Uuid::parse_str(id.strip_prefix("req-").unwrap()).is_ok(), "{id}");
    }
}
