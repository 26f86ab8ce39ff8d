//! The provisioning engine: a persisted state machine that drives each job through its steps
//! against the cloud, exactly once, and ends it with a completion event.
