//! The region a job's OpenStack requests go to: an order may name a region of the cloud's
//! catalog (`region`), and every request of that job (steps, waits, their background tagging)
//! must reach that region's endpoints.
//!
//! Like the global request id ([`super::request_id`]), the region travels with the job's task:
//! the engine runs each job's driver inside [`scope`], the poller and the reconciler each
//! project's round inside the region of its jobs, and [`super::session::Session::send`] picks the
//! endpoints of [`current`], or of the configured region (`OS_REGION_NAME`, `region_name`, the
//! first of `regions:`) outside any scope. So the service clients and the engine's `Cloud` calls
//! keep their signatures: one token per project serves every region (Keystone's catalog lists
//! the endpoints of all of them).

use std::future::Future;

tokio::task_local! {
    static REGION: Option<String>;
}

/// Runs `f` with `region` (`None`: the configured one) as the region of every OpenStack request
/// it makes.
pub async fn scope<F: Future>(region: Option<String>, f: F) -> F::Output {
    REGION.scope(region.filter(|r| !r.is_empty()), f).await
}

/// The region of the caller's [`scope`], if it names one.
pub fn current() -> Option<String> {
    REGION.try_with(Clone::clone).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scope_names_its_region_and_nothing_leaks_out() {
        assert_eq!(current(), None);
        let inside = scope(Some("RegionTwo".into()), async { current() }).await;
        assert_eq!(inside.as_deref(), Some("RegionTwo"));
        assert_eq!(scope(Some(String::new()), async { current() }).await, None);
        let nested = scope(Some("A".into()), scope(None, async { current() })).await;
        assert_eq!(nested, None, "an inner scope without a region means the configured one");
        assert_eq!(current(), None);
    }
}
