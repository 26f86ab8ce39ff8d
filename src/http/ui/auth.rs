//! Who is looking at the console: passwords (Argon2), sessions, CSRF tokens, cookies.
//!
//! Users come from `PROVISIONER_UI_USERS` (name, role, Argon2 PHC hash). A login checks the
//! password against the hash (in a blocking thread: Argon2 is slow on purpose) and, if it
//! matches, stores a session in the database: the SHA-256 of a random 256-bit token (the cookie
//! holds the token; a database dump gives no usable session) and a random CSRF token that every
//! form of the session carries. Sessions live in MySQL so that every worker behind one address
//! honours them; the role is read from the settings at each request, so removing a user or
//! lowering their role takes effect at once. An unknown name costs the same Argon2 work as a
//! wrong password, so the time taken does not say which names exist.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, Params};
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use sha2::Digest as _;

use crate::config::UiUser;

/// The session cookie.
pub const SESSION_COOKIE: &str = "prov_session";
/// The double-submit cookie of the login form (there is no session yet to bind its CSRF token).
pub const LOGIN_CSRF_COOKIE: &str = "prov_login_csrf";
/// How long a session lasts from login.
pub const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

/// Checks that `phc` is an Argon2 PHC string (what settings accept).
pub fn check_hash(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not an Argon2 PHC hash ({e})"))?;
    let alg = parsed.algorithm.as_str();
    if !alg.starts_with("argon2") {
        return Err(format!("the hash is {alg}, not argon2id/argon2i/argon2d"));
    }
    Ok(())
}

/// Hashes a password with Argon2id and OWASP's parameters (19 MiB, 2 passes), a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut salt).map_err(|_| "no randomness".to_string())?;
    let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, Params::default());
    argon
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash of a password nobody has, checked when the name is unknown (same cost as a real one).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_token()).unwrap_or_default())
}

/// The user named `name` if `password` is theirs. Blocking (Argon2): call from a blocking thread.
pub fn authenticate<'a>(users: &'a [UiUser], name: &str, password: &str) -> Option<&'a UiUser> {
    let user = users.iter().find(|u| u.name == name);
    let phc = user.map(|u| u.password_hash.expose()).unwrap_or_else(|| dummy_hash());
    let ok = PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false);
    if ok { user } else { None }
}

/// 256 random bits, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // SystemRandom fails only without an OS random source, where nothing else would work either.
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the OS random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database keeps of a session token.
pub fn token_hash(token: &str) -> String {
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/ui, Secure when served over TLS.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, UiRole};

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        check_hash(&h).unwrap();
        assert!(check_hash("plain").is_err());
        let users =
            vec![UiUser { name: "alice".into(), role: UiRole::Operator, password_hash: Secret::new(h) }];
        assert_eq!(authenticate(&users, "alice", "correct horse").map(|u| u.name.as_str()), Some("alice"));
        assert!(authenticate(&users, "alice", "wrong").is_none());
        assert!(authenticate(&users, "mallory", "correct horse").is_none());
    }

    #[test]
    fn users_come_from_the_environment_and_bad_ones_stop_startup() {
        use crate::config::Settings;
        let h = hash_password("pw").unwrap();
        let load =
            |v: String| Settings::load_from(None, move |k| (k == "PROVISIONER_UI_USERS").then(|| v.clone()));
        let s = load(format!("alice:operator:{h}; bob:read-only:{h}")).unwrap();
        let got: Vec<_> = s.ui.users.iter().map(|u| (u.name.as_str(), u.role)).collect();
        assert_eq!(got, [("alice", UiRole::Operator), ("bob", UiRole::ReadOnly)]);
        for bad in [
            format!("alice:admin:{h}"),
            "alice:operator:plaintext".into(),
            format!("a:operator:{h};a:operator:{h}"),
            "alice".into(),
        ] {
            let e = load(bad.clone()).unwrap_err().to_string();
            assert!(e.contains("PROVISIONER_UI_USERS"), "{bad}: {e}");
            assert!(!e.contains("plaintext") || bad.contains("plaintext"), "{e}");
        }
    }

    #[test]
    fn cookies_and_tokens() {
        assert_eq!(cookie("a=1; prov_session=xyz; b=2", SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie("prov_session_x=1", SESSION_COOKIE), None);
        let t = random_token();
        assert_eq!(t.len(), 43);
        assert_ne!(t, random_token());
        assert_eq!(token_hash("x").len(), 64);
        assert!(set_cookie("n", "v", None, true).contains("; Secure"));
        assert!(!set_cookie("n", "v", Some(1), false).contains("Secure"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
