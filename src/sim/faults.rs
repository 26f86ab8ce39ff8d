//! Programmed faults: rules matched against each API request (service, method, path regex)
//! that answer an error status with the service's real error body, add latency (before the
//! request is carried out, or after it: `answer_delay_ms`), or mark what
//! the request creates (a server that ends in `ERROR`, a resource stuck in its transitional
//! state). A rule fires N times, or with a probability, or forever.

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A fault rule as programmed through `/_sim/faults` or [`crate::sim::SimHandle`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultRule {
    /// `identity`, `image`, `network`, `compute` or `volume`; any when absent.
    pub service: Option<String>,
    /// HTTP method (`POST`, ...); any when absent.
    pub method: Option<String>,
    /// A regex searched in the request path (e.g. `/servers$`); any when absent.
    pub path: Option<String>,
    /// A server action (the key of a `POST /servers/{id}/action` body: `os-stop`, `resize`,
    /// `confirmResize`, ...): the rule matches only that action.
    pub action: Option<String>,
    /// Answer this status with the service's error body instead of calling the API.
    pub status: Option<u16>,
    /// The error message (a sensible default per status otherwise).
    pub message: Option<String>,
    /// The error type: Nova/Cinder's body key (`overLimit`), Neutron's `type` (`OverQuota`).
    pub kind: Option<String>,
    /// Adds a `Retry-After` header (and Cinder's `retryAfter`).
    pub retry_after: Option<String>,
    /// Delay the answer by this many milliseconds.
    pub latency_ms: Option<u64>,
    /// Carry the request out, then hold its answer this many milliseconds: the cloud did the
    /// work while its caller waits (a worker killed meanwhile never learns the result, and its
    /// successor must find and adopt what was made).
    pub answer_delay_ms: Option<u64>,
    /// A server created by the matched request goes to `ERROR` with this fault message; a
    /// server action it starts fails with it (the server stays as it was, the instance action
    /// records the error).
    pub server_error: Option<String>,
    /// A resource created (server, volume) or attached by the matched request stays in its
    /// transitional state (`BUILD`, `creating`, `attaching`).
    pub stuck: bool,
    /// Fire this many times, then stop matching; forever when absent.
    pub times: Option<u32>,
    /// Fire with this probability (0..=1) on each match; always when absent.
    pub probability: Option<f64>,
}

/// What a matched rule asks for, merged over all matching rules.
#[derive(Debug, Clone, Default)]
pub struct Effect {
    pub latency_ms: u64,
    pub answer_delay_ms: u64,
    pub respond: Option<Respond>,
    pub server_error: Option<String>,
    pub stuck: bool,
}

#[derive(Debug, Clone)]
pub struct Respond {
    pub status: u16,
    pub message: Option<String>,
    pub kind: Option<String>,
    pub retry_after: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Armed {
    pub id: u64,
    pub rule: FaultRule,
    pub path: Option<Regex>,
    pub remaining: Option<u32>,
    pub fired: u64,
}

/// A rule whose path is not a valid regex.
#[derive(Debug, thiserror::Error)]
#[error("invalid path regex {0:?}: {1}")]
pub struct BadRule(pub String, pub String);

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub rules: Vec<Armed>,
    pub next_id: u64,
}

/// A programmed rule with how often it fired.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultStatus {
    pub id: u64,
    pub rule: FaultRule,
    pub fired: u64,
    pub remaining: Option<u32>,
}

impl Faults {
    pub fn add(&mut self, rule: FaultRule) -> Result<u64, BadRule> {
        let path = match &rule.path {
            Some(p) => Some(Regex::new(p).map_err(|e| BadRule(p.clone(), e.to_string()))?),
            None => None,
        };
        self.next_id += 1;
        let id = self.next_id;
        self.rules.push(Armed { id, remaining: rule.times, rule, path, fired: 0 });
        Ok(id)
    }

    pub fn list(&self) -> Vec<FaultStatus> {
        self.rules
            .iter()
            .map(|a| FaultStatus { id: a.id, rule: a.rule.clone(), fired: a.fired, remaining: a.remaining })
            .collect()
    }

    /// Matches a request against the rules, consuming one shot of each rule that fires.
    #[cfg(test)]
    pub fn check(&mut self, service: &str, method: &str, path: &str) -> Option<Effect> {
        self.check_action(service, method, path, None)
    }

    /// [`Faults::check`] for a request that is a server action (`action`: the body's key).
    pub fn check_action(
        &mut self,
        service: &str,
        method: &str,
        path: &str,
        action: Option<&str>,
    ) -> Option<Effect> {
        if self.rules.is_empty() {
            return None;
        }
        let mut effect: Option<Effect> = None;
        for a in &mut self.rules {
            if a.remaining == Some(0) {
                continue;
            }
            if a.rule.service.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case(service))
                || a.rule.method.as_deref().is_some_and(|m| !m.eq_ignore_ascii_case(method))
                || a.path.as_ref().is_some_and(|r| !r.is_match(path))
                || a.rule.action.as_deref().is_some_and(|want| action != Some(want))
            {
                continue;
            }
            if let Some(p) = a.rule.probability
                && fastrand::f64() >= p
            {
                continue;
            }
            if let Some(n) = a.remaining.as_mut() {
                *n -= 1;
            }
            a.fired += 1;
            let e = effect.get_or_insert_with(Effect::default);
            e.latency_ms += a.rule.latency_ms.unwrap_or(0);
            e.answer_delay_ms += a.rule.answer_delay_ms.unwrap_or(0);
            if e.respond.is_none()
                && let Some(status) = a.rule.status
            {
                e.respond = Some(Respond {
                    status,
                    message: a.rule.message.clone(),
                    kind: a.rule.kind.clone(),
                    retry_after: a.rule.retry_after.clone(),
                });
            }
            if a.rule.server_error.is_some() {
                e.server_error = a.rule.server_error.clone();
            }
            e.stuck |= a.rule.stuck;
        }
        effect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fire_n_times_and_match_service_method_path() {
        let mut f = Faults::default();
        f.add(FaultRule {
            service: Some("compute".into()),
            method: Some("POST".into()),
            path: Some("/servers$".into()),
            status: Some(503),
            times: Some(2),
            ..Default::default()
        })
        .unwrap();
        assert!(f.check("compute", "GET", "/compute/v2.1/servers").is_none());
        assert!(f.check("network", "POST", "/compute/v2.1/servers").is_none());
        assert_eq!(f.check("compute", "POST", "/compute/v2.1/servers").unwrap().respond.unwrap().status, 503);
        assert!(f.check("compute", "POST", "/compute/v2.1/servers").is_some());
        assert!(f.check("compute", "POST", "/compute/v2.1/servers").is_none(), "spent after 2");
        assert!(f.add(FaultRule { path: Some("(".into()), ..Default::default() }).is_err());
        let mut never = Faults::default();
        never.add(FaultRule { probability: Some(0.0), status: Some(500), ..Default::default() }).unwrap();
        assert!(never.check("compute", "GET", "/x").is_none());
    }

    #[test]
    fn an_action_rule_matches_only_that_server_action() {
        let mut f = Faults::default();
        f.add(FaultRule { action: Some("os-stop".into()), status: Some(409), ..Default::default() }).unwrap();
        let path = "/compute/v2.1/servers/x/action";
        assert!(f.check("compute", "POST", path).is_none(), "not an action request");
        assert!(f.check_action("compute", "POST", path, Some("os-start")).is_none());
        assert_eq!(
            f.check_action("compute", "POST", path, Some("os-stop")).unwrap().respond.unwrap().status,
            409
        );
    }
}
