//! The cluster token: where it is found, how it is created, and the one check every
//! server runs on every call.
//!
//! Sources, in order (as Ray): `RAY_AUTH_TOKEN`, the file named by
//! `RAY_AUTH_TOKEN_PATH`, then `~/.ray/auth_token`. `RAY_AUTH_MODE` is `token`
//! (the default) or `disabled`. The token travels as `authorization: Bearer <token>`
//! and is compared in constant time. It never appears in `Debug` output, logs or
//! error messages.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Environment variable holding the token itself.
pub const ENV_TOKEN: &str = "RAY_AUTH_TOKEN";
/// Environment variable naming a file that holds the token.
pub const ENV_TOKEN_PATH: &str = "RAY_AUTH_TOKEN_PATH";
/// Environment variable selecting the mode.
pub const ENV_MODE: &str = "RAY_AUTH_MODE";
/// The values `RAY_AUTH_MODE` accepts.
pub const ACCEPTED_MODES: &[&str] = &["token", "disabled"];

/// Where a client looks for the token; part of every refusal message.
pub const WHERE_TOKENS_COME_FROM: &str = "clients read the cluster token from RAY_AUTH_TOKEN, \
     the file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (see `ray get-auth-token`)";

/// Whether calls must carry the cluster token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every call must carry the token (the default).
    Token,
    /// No check at all; a warning is printed on every start.
    Disabled,
}

/// Why the token could not be found or created.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `RAY_AUTH_MODE` has a value we do not know.
    #[error("RAY_AUTH_MODE={value:?} is not a valid mode; accepted values: {}", ACCEPTED_MODES.join(", "))]
    UnknownMode {
        /// What was set.
        value: String,
    },
    /// `RAY_AUTH_TOKEN_PATH` names a file that does not exist.
    #[error("RAY_AUTH_TOKEN_PATH is set to {path:?}, but that file does not exist")]
    PathMissing {
        /// The path.
        path: PathBuf,
    },
    /// The token file could not be read.
    #[error("cannot read the token file {path:?} (from {source_name}): {error}")]
    Unreadable {
        /// Where the path came from.
        source_name: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The token (variable or file) is empty.
    #[error("the cluster token from {source_name} is empty{}", path.as_ref().map(|p| format!(" ({p:?})")).unwrap_or_default())]
    Empty {
        /// Where the token came from.
        source_name: &'static str,
        /// The file, if any.
        path: Option<PathBuf>,
    },
    /// The token holds characters that cannot travel in a header.
    #[error("the cluster token from {source_name} contains characters other than printable ASCII")]
    BadCharacters {
        /// Where the token came from.
        source_name: &'static str,
    },
    /// Token mode, but no token anywhere.
    #[error(
        "no cluster token found: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or create ~/.ray/auth_token \
         with `ray get-auth-token --generate` (or set RAY_AUTH_MODE=disabled to turn authentication off)"
    )]
    NotFound,
    /// HOME is not set, so the default file has no place.
    #[error("HOME is not set, so the default token file ~/.ray/auth_token cannot be located")]
    NoHome,
    /// The default token file could not be written.
    #[error("cannot create the token file {path:?}: {error}")]
    CreateFailed {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// The secret shared by every process of a cluster. `Debug` and `Display` redact it.
#[derive(Clone)]
pub struct ClusterToken(Arc<str>);

impl ClusterToken {
    fn new(raw: &str, source_name: &'static str, path: Option<&Path>) -> Result<Self, AuthError> {
        let t = raw.trim();
        if t.is_empty() {
            return Err(AuthError::Empty { source_name, path: path.map(Path::to_path_buf) });
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::BadCharacters { source_name });
        }
        Ok(Self(Arc::from(t)))
    }

    /// A token given by value (tools and tests that read it themselves).
    pub fn from_secret(raw: &str) -> Result<Self, AuthError> {
        Self::new(raw, "the caller", None)
    }

    /// A new random 256-bit token, hex encoded.
    pub fn generate() -> Self {
        Self(Arc::from(crate::ids::random_hex(32).as_str()))
    }

    /// The secret itself. Only for handing to a child process's environment or to a
    /// file of mode 0600; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with what a peer sent.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        mine.len() == presented.len() && bool::from(mine.ct_eq(presented))
    }
}

impl fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterToken(<redacted>)")
    }
}

impl fmt::Display for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `RAY_AUTH_TOKEN`.
    EnvVar,
    /// `RAY_AUTH_TOKEN_PATH`.
    EnvPath(PathBuf),
    /// `~/.ray/auth_token`.
    DefaultFile(PathBuf),
}

/// Reads `RAY_AUTH_MODE`.
pub fn auth_mode() -> Result<AuthMode, AuthError> {
    match std::env::var(ENV_MODE) {
        Err(_) => Ok(AuthMode::Token),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "token" => Ok(AuthMode::Token),
            "disabled" => Ok(AuthMode::Disabled),
            _ => Err(AuthError::UnknownMode { value: v }),
        },
    }
}

/// `~/.ray/auth_token`.
pub fn default_token_path() -> Result<PathBuf, AuthError> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).ok_or(AuthError::NoHome)?;
    Ok(PathBuf::from(home).join(".ray").join("auth_token"))
}

fn read_token_file(path: &Path, source_name: &'static str) -> Result<ClusterToken, AuthError> {
    let raw = std::fs::read_to_string(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound && source_name == ENV_TOKEN_PATH {
            AuthError::PathMissing { path: path.to_path_buf() }
        } else {
            AuthError::Unreadable { source_name, path: path.to_path_buf(), error }
        }
    })?;
    ClusterToken::new(&raw, source_name, Some(path))
}

/// Looks for the token in its three places. A `RAY_AUTH_TOKEN_PATH` that names a
/// missing, unreadable or empty file is an error, never a silent fallback.
pub fn find_token() -> Result<Option<(ClusterToken, TokenSource)>, AuthError> {
    if let Ok(v) = std::env::var(ENV_TOKEN) {
        return Ok(Some((ClusterToken::new(&v, ENV_TOKEN, None)?, TokenSource::EnvVar)));
    }
    if let Some(p) = std::env::var_os(ENV_TOKEN_PATH) {
        let path = PathBuf::from(p);
        let token = read_token_file(&path, ENV_TOKEN_PATH)?;
        return Ok(Some((token, TokenSource::EnvPath(path))));
    }
    let path = default_token_path()?;
    match std::fs::metadata(&path) {
        Ok(_) => {
            let token = read_token_file(&path, "~/.ray/auth_token")?;
            Ok(Some((token, TokenSource::DefaultFile(path))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(AuthError::Unreadable { source_name: "~/.ray/auth_token", path, error }),
    }
}

/// Writes a fresh token to `path` with mode 0600, failing if the file exists.
pub fn create_token_file(path: &Path) -> Result<ClusterToken, AuthError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |error| AuthError::CreateFailed { path: path.to_path_buf(), error };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let token = ClusterToken::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    f.write_all(token.expose_secret().as_bytes()).map_err(fail)?;
    f.write_all(b"\n").map_err(fail)?;
    Ok(token)
}

/// What a process needs to know about authentication.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `None` when `RAY_AUTH_MODE=disabled`.
    pub token: Option<ClusterToken>,
}

impl AuthConfig {
    /// For clients and joining nodes: the token must already exist.
    pub fn from_env() -> Result<Self, AuthError> {
        match auth_mode()? {
            AuthMode::Disabled => Ok(Self { token: None }),
            AuthMode::Token => match find_token()? {
                Some((t, _)) => Ok(Self { token: Some(t) }),
                None => Err(AuthError::NotFound),
            },
        }
    }

    /// For `ray start --head` and a local `ray.init()`: creates `~/.ray/auth_token`
    /// when no token exists anywhere. Returns whether a file was created.
    pub fn from_env_or_create() -> Result<(Self, Option<PathBuf>), AuthError> {
        match auth_mode()? {
            AuthMode::Disabled => Ok((Self { token: None }, None)),
            AuthMode::Token => match find_token()? {
                Some((t, _)) => Ok((Self { token: Some(t) }, None)),
                None => {
                    let path = default_token_path()?;
                    match create_token_file(&path) {
                        Ok(t) => Ok((Self { token: Some(t) }, Some(path))),
                        // Another process created it first: use theirs.
                        Err(AuthError::CreateFailed { error, .. })
                            if error.kind() == std::io::ErrorKind::AlreadyExists =>
                        {
                            Ok((Self { token: Some(read_token_file(&path, "~/.ray/auth_token")?) }, None))
                        }
                        Err(e) => Err(e),
                    }
                }
            },
        }
    }

    /// No authentication (tests of the disabled mode, in-process tools).
    pub fn disabled() -> Self {
        Self { token: None }
    }

    /// The warning every process prints when authentication is off.
    pub fn disabled_warning(&self) -> Option<&'static str> {
        self.token.is_none().then_some(
            "WARNING: RAY_AUTH_MODE=disabled: cluster token authentication is OFF. Anyone who can \
             reach this cluster's ports can run code on it. Unset RAY_AUTH_MODE to turn it back on.",
        )
    }

    /// The environment a child process needs to find the same token.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        match &self.token {
            Some(t) => vec![(ENV_TOKEN, t.expose_secret().to_string()), (ENV_MODE, "token".into())],
            None => vec![(ENV_MODE, "disabled".into())],
        }
    }

    /// The server-side check.
    pub fn server_check(&self) -> ServerAuth {
        ServerAuth { token: self.token.clone() }
    }

    /// The client-side header.
    pub fn client_attach(&self) -> ClientAuth {
        ClientAuth {
            header: self.token.as_ref().and_then(|t| {
                MetadataValue::try_from(format!("Bearer {}", t.expose_secret())).ok().map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
            }),
        }
    }
}

/// The interceptor every server installs (one layer for all its services).
#[derive(Clone)]
pub struct ServerAuth {
    token: Option<ClusterToken>,
}

impl ServerAuth {
    /// Checks a header value as sent by the peer.
    pub fn check_header(&self, header: Option<&[u8]>) -> Result<(), Status> {
        let Some(token) = &self.token else { return Ok(()) };
        let presented = header.and_then(|h| h.strip_prefix(b"Bearer ".as_slice()));
        match presented {
            Some(p) if token.matches(p) => Ok(()),
            Some(_) => Err(Status::unauthenticated(format!(
                "invalid cluster token: this cluster uses a different token; {WHERE_TOKENS_COME_FROM}"
            ))),
            None => Err(Status::unauthenticated(format!(
                "missing cluster token (expected an 'authorization: Bearer <token>' header); {WHERE_TOKENS_COME_FROM}"
            ))),
        }
    }
}

impl Interceptor for ServerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization").map(|v| v.as_bytes());
        match self.check_header(header) {
            Ok(()) => Ok(request),
            Err(status) => {
                crate::logging::warn_rate_limited(format_args!(
                    "refused a call without a valid cluster token (peer {:?})",
                    request.remote_addr()
                ));
                Err(status)
            }
        }
    }
}

/// The interceptor every client installs: attaches the token.
#[derive(Clone)]
pub struct ClientAuth {
    header: Option<MetadataValue<Ascii>>,
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_only_the_right_token() {
        let cfg = AuthConfig { token: Some(ClusterToken::new("s3cret", ENV_TOKEN, None).unwrap()) };
        let check = cfg.server_check();
        assert!(check.check_header(Some(b"Bearer s3cret")).is_ok());
        let wrong = check.check_header(Some(b"Bearer s3cres")).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(!wrong.message().contains("s3cre"), "message must not echo tokens");
        assert!(wrong.message().contains("RAY_AUTH_TOKEN_PATH"));
        assert!(check.check_header(Some(b"s3cret")).is_err());
        assert!(check.check_header(None).is_err());
        assert!(check.check_header(Some(b"Bearer ")).is_err());
    }

    #[test]
    fn disabled_mode_accepts_everything() {
        let check = AuthConfig::disabled().server_check();
        assert!(check.check_header(None).is_ok());
    }

    #[test]
    fn token_is_redacted_in_debug_and_display() {
        let t = ClusterToken::new("topsecret", ENV_TOKEN, None).unwrap();
        assert!(!format!("{t:?} {t}").contains("topsecret"));
        let cfg = AuthConfig { token: Some(t) };
        assert!(!format!("{cfg:?}").contains("topsecret"));
    }

    #[test]
    fn created_file_is_private_and_readable_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("auth_token");
        let t = create_token_file(&path).unwrap();
        assert_eq!(t.expose_secret().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = read_token_file(&path, ENV_TOKEN_PATH).unwrap();
        assert!(back.matches(t.expose_secret().as_bytes()));
        assert!(matches!(create_token_file(&path), Err(AuthError::CreateFailed { .. })));
    }

    #[test]
    fn empty_or_missing_files_are_errors_naming_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "  \n").unwrap();
        let e = read_token_file(&empty, ENV_TOKEN_PATH).unwrap_err().to_string();
        assert!(e.contains("RAY_AUTH_TOKEN_PATH") && e.contains("empty"), "{e}");
        let e = read_token_file(&dir.path().join("nope"), ENV_TOKEN_PATH).unwrap_err().to_string();
        assert!(e.contains("RAY_AUTH_TOKEN_PATH") && e.contains("does not exist"), "{e}");
    }
}
