//! Validated identifiers.
//!
//! Every value that crosses a trust boundary (HTTP body, Raft log, config file) is parsed into one of these
//! newtypes first, so the state machine only ever sees well-formed values. Deserialization goes through the
//! same validation (`serde(try_from)`), so a corrupt or hostile log entry cannot smuggle in a bad id.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a value was refused; names the field and says what a valid value looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("invalid {field}: {reason}")]
pub struct InvalidValue {
    /// The field or kind of value that was refused, e.g. `commit`.
    pub field: String,
    /// What was wrong and what would be accepted.
    pub reason: String,
}

impl InvalidValue {
    /// Builds the error for `field` with a human explanation.
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        Self { field: field.to_string(), reason: reason.into() }
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $validate:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates; the error says which rule was broken.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
                $validate(value.into()).map(Self)
            }
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

fn validate_commit(value: String) -> Result<String, InvalidValue> {
    let field = "commit";
    if value.len() != 40 {
        return Err(InvalidValue::new(
            field,
            format!("a commit SHA is exactly 40 hexadecimal characters; got {} characters", value.chars().count()),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(InvalidValue::new(
            field,
            format!("a commit SHA has only the characters 0-9 and a-f; found {bad:?} (abbreviated SHAs and branch names are not accepted)"),
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// A DNS-label-like name: what services, regions and clusters are called, so they are safe in paths,
/// URLs, metric labels and object-store keys alike.
fn validate_label(field: &str, value: String) -> Result<String, InvalidValue> {
    const MAX: usize = 63;
    if value.is_empty() || value.len() > MAX {
        return Err(InvalidValue::new(field, format!("must be 1 to {MAX} characters long; got {}", value.len())));
    }
    let first = value.as_bytes()[0];
    if !first.is_ascii_lowercase() {
        return Err(InvalidValue::new(field, "must start with a lower-case letter a-z"));
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(InvalidValue::new(field, format!("may hold only a-z, 0-9 and '-'; found {bad:?}")));
    }
    if value.ends_with('-') {
        return Err(InvalidValue::new(field, "must not end with '-'"));
    }
    Ok(value)
}

fn validate_service(value: String) -> Result<String, InvalidValue> {
    validate_label("service", value)
}
fn validate_region(value: String) -> Result<String, InvalidValue> {
    validate_label("region", value)
}
fn validate_cluster(value: String) -> Result<String, InvalidValue> {
    validate_label("cluster", value)
}

/// Repository locations git understands, minus anything that could be read as a command-line option.
fn validate_repo(value: String) -> Result<String, InvalidValue> {
    let field = "repo";
    const MAX: usize = 2048;
    if value.is_empty() || value.len() > MAX {
        return Err(InvalidValue::new(field, format!("must be 1 to {MAX} characters long")));
    }
    if value.starts_with('-') {
        return Err(InvalidValue::new(field, "must not start with '-' (it would be read as a git option)"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidValue::new(field, "must not contain whitespace or control characters"));
    }
    const SCHEMES: [&str; 5] = ["https://", "http://", "ssh://", "git://", "file://"];
    let has_scheme = SCHEMES.iter().any(|s| value.starts_with(s) && value.len() > s.len());
    let scp_like = !value.contains("://")
        && value.split_once(':').is_some_and(|(host, path)| host.contains('@') && !path.is_empty());
    let absolute_path = value.starts_with('/');
    if !(has_scheme || scp_like || absolute_path) {
        return Err(InvalidValue::new(
            field,
            "expected a git URL: https://, http://, ssh://, git://, file://, user@host:path, or an absolute path",
        ));
    }
    Ok(value)
}

fn validate_worker(value: String) -> Result<String, InvalidValue> {
    validate_name("worker", value)
}
fn validate_principal(value: String) -> Result<String, InvalidValue> {
    validate_name("principal", value)
}

/// Free-form but bounded names for machines and people: printable, no spaces.
fn validate_name(field: &str, value: String) -> Result<String, InvalidValue> {
    const MAX: usize = 128;
    if value.is_empty() || value.len() > MAX {
        return Err(InvalidValue::new(field, format!("must be 1 to {MAX} characters long")));
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':')))
    {
        return Err(InvalidValue::new(field, format!("may hold only A-Z a-z 0-9 . _ - @ :; found {bad:?}")));
    }
    Ok(value)
}

fn validate_digest(value: String) -> Result<String, InvalidValue> {
    let field = "digest";
    if value.len() != 64 || !value.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(InvalidValue::new(field, "a BLAKE3 digest is exactly 64 hexadecimal characters"));
    }
    Ok(value.to_ascii_lowercase())
}

string_newtype!(
    /// A full git commit SHA-1: 40 hex characters, stored lower-cased.
    CommitSha,
    validate_commit
);
string_newtype!(
    /// A deployable service's name (DNS label rules).
    ServiceName,
    validate_service
);
string_newtype!(
    /// A region, e.g. `us` or `eu-west` (DNS label rules).
    Region,
    validate_region
);
string_newtype!(
    /// A cluster of machines inside a region (DNS label rules).
    ClusterName,
    validate_cluster
);
string_newtype!(
    /// Where the source lives: a git URL or absolute path, never something git would read as an option.
    RepoUrl,
    validate_repo
);
string_newtype!(
    /// The id a build worker claims jobs under.
    WorkerId,
    validate_worker
);
string_newtype!(
    /// Who asked for something: a token's name or a worker's id; recorded in the audit log.
    Principal,
    validate_principal
);
string_newtype!(
    /// A BLAKE3 digest, 64 hex characters, stored lower-cased.
    Digest,
    validate_digest
);

/// A build job's id; allocated in log order, so ordering by id is ordering by submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Milliseconds since the Unix epoch. Only the leader reads a clock; everything else gets time from commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// `self - earlier`, or zero if `earlier` is later (clocks of successive leaders may disagree).
    pub fn saturating_since(self, earlier: UnixMillis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_sha_is_40_hex_and_lowercased() {
        let sha = CommitSha::parse("ABCDEF0123456789abcdef0123456789ABCDEF01").unwrap();
        assert_eq!(sha.as_str(), "abcdef0123456789abcdef0123456789abcdef01");
        let short = CommitSha::parse("abc123").unwrap_err();
        assert!(short.reason.contains("40"), "{short}");
        let bad = CommitSha::parse("g".repeat(40)).unwrap_err();
        assert!(bad.reason.contains("'g'"), "{bad}");
        assert!(CommitSha::parse("main").is_err());
    }

    #[test]
    fn labels_follow_dns_rules() {
        assert!(ServiceName::parse("api-gateway2").is_ok());
        for bad in ["", "Api", "1api", "api-", "api_gw", &"a".repeat(64)] {
            assert!(ServiceName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn repo_urls_reject_option_injection() {
        for good in ["https://git.example.com/a/b.git", "git@host:org/repo", "/srv/git/repo", "file:///tmp/r"] {
            assert!(RepoUrl::parse(good).is_ok(), "{good} refused");
        }
        for bad in ["", "--upload-pack=evil", "repo", "https://", "https://a b", "ftp://x/y"] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn deserialization_validates() {
        let err = serde_json::from_str::<CommitSha>("\"xyz\"").unwrap_err();
        assert!(err.to_string().contains("commit"));
        let ok: Digest = serde_json::from_str(&format!("\"{}\"", "A".repeat(64))).unwrap();
        assert_eq!(ok.as_str(), "a".repeat(64));
    }
}
