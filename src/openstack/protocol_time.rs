//! Timestamp formats of the OpenStack APIs, shared by the client and the simulator.
//!
//! Each service writes its times its own way: Nova, Neutron and Glance `2026-11-26T10:00:00Z`,
//! Keystone `2026-11-26T10:00:00.000000Z`, Cinder `2026-11-26T10:00:00.000000` (no zone, UTC).
//! Parsing is lenient (any of these, or any RFC 3339 time) so that one type reads every
//! service; writing uses the service's own format, so the simulator sends what the real
//! service sends. Use with `#[serde(with = "protocol_time::seconds_z")]` and friends.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Parses any OpenStack timestamp: RFC 3339, or a naive `YYYY-MM-DDTHH:MM:SS[.ffffff]` (UTC).
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let trimmed = s.trim_end_matches('Z');
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(trimmed, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

fn de<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: {s:?}")))
}

fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => {
            parse(&s).map(Some).ok_or_else(|| serde::de::Error::custom(format!("not a timestamp: {s:?}")))
        }
    }
}

macro_rules! time_format {
    ($(#[$doc:meta])* $name:ident, $fmt:expr) => {
        $(#[$doc])*
        pub mod $name {
            use super::*;
            /// The format string.
            pub const FORMAT: &str = $fmt;
            /// Formats a time the way this service does.
            pub fn format(t: &DateTime<Utc>) -> String {
                t.format(FORMAT).to_string()
            }
            pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&format(t))
            }
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
                de(d)
            }
            /// The same for an optional time (`null` when absent).
            pub mod option {
                use super::*;
                pub fn serialize<S: Serializer>(
                    t: &Option<DateTime<Utc>>,
                    s: S,
                ) -> Result<S::Ok, S::Error> {
                    match t {
                        Some(t) => s.serialize_str(&format(t)),
                        None => s.serialize_none(),
                    }
                }
                pub fn deserialize<'de, D: Deserializer<'de>>(
                    d: D,
                ) -> Result<Option<DateTime<Utc>>, D::Error> {
                    de_opt(d)
                }
            }
        }
    };
}

time_format!(
    /// Nova, Neutron, Glance: `2026-11-26T10:00:00Z`.
    seconds_z,
    "%Y-%m-%dT%H:%M:%SZ"
);
time_format!(
    /// Keystone: `2026-11-26T10:00:00.000000Z`.
    micros_z,
    "%Y-%m-%dT%H:%M:%S%.6fZ"
);
time_format!(
    /// Cinder and Nova's `OS-SRV-USG:launched_at`: `2026-11-26T10:00:00.000000` (UTC, no zone).
    micros_naive,
    "%Y-%m-%dT%H:%M:%S%.6f"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_service_format() {
        let want = parse("2026-11-26T10:00:00Z").unwrap();
        assert_eq!(parse("2026-11-26T10:00:00.000000Z"), Some(want));
        assert_eq!(parse("2026-11-26T10:00:00.000000"), Some(want));
        assert_eq!(parse("2026-11-26T10:00:00"), Some(want));
        assert_eq!(parse("2026-11-26T12:00:00+02:00"), Some(want));
        assert_eq!(parse("yesterday"), None);
        assert_eq!(seconds_z::format(&want), "2026-11-26T10:00:00Z");
        assert_eq!(micros_z::format(&want), "2026-11-26T10:00:00.000000Z");
        assert_eq!(micros_naive::format(&want), "2026-11-26T10:00:00.000000");
    }
}
