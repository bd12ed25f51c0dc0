//! The sandbox a build runs in: bubblewrap (`bwrap`), a fresh mount, PID, IPC, UTS, user and (unless the
//! recipe asks for the host's and the worker allows it) network namespace per build.
//!
//! Inside, a build sees the system's programs and libraries read-only (`/usr`, `/bin`, `/lib*`, a few files
//! of `/etc` that programs need: the dynamic linker's cache, `alternatives`, certificates, name resolution),
//! its checkout read-write, its own mirror read-only (the checkout borrows its objects), a private `HOME`,
//! an empty `/tmp`, a `/proc` of its own processes only, and whatever the worker's config lists as extra
//! read-only paths (toolchains such as `~/.rustup`). It does not see the worker's config, token or
//! credentials, the other mirrors, other builds, or other processes. It runs as uid and gid 65534 (nobody)
//! with no capabilities. Every process it starts lives in its PID namespace, so when its shell exits, or
//! the worker kills it, the kernel kills the rest, `setsid` or not.
//!
//! The opt-out (`[sandbox] kind = "none"`) is explicit: a worker that finds no usable `bwrap` refuses to
//! start rather than run builds with its own rights.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where bwrap is looked for.
pub const BWRAP: &str = "/usr/bin/bwrap";

/// The uid and gid a build runs as inside its sandbox.
pub const BUILD_UID: u32 = 65534;

/// Read-only system paths every build sees (those that exist on this machine).
const SYSTEM_PATHS: [&str; 6] = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32"];

/// Files and directories of `/etc` that compilers, git and TLS clients read; nothing else of `/etc`
/// (which holds the worker's own config on a typical install) is visible.
const ETC_PATHS: [&str; 12] = [
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/gitconfig",
    "/etc/os-release",
];

/// `[sandbox]` of the worker's config.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// `bwrap` (the default) or `none`: builds run with the worker's own rights (only for machines
    /// without user namespaces, and said at start-up).
    #[serde(default)]
    pub kind: SandboxKind,
    /// Whether a recipe may ask for `network = "host"` (fetching dependencies). Off by default: a build
    /// has no network at all.
    #[serde(default)]
    pub allow_host_network: bool,
    /// Extra paths every build sees read-only at the same place, e.g. a toolchain (`/root/.rustup`,
    /// `/root/.cargo/bin`) or a package cache.
    #[serde(default)]
    pub read_only: Vec<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self { kind: SandboxKind::Bwrap, allow_host_network: false, read_only: Vec::new() }
    }
}

/// How builds are isolated.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SandboxKind {
    /// bubblewrap namespaces (the default).
    #[default]
    Bwrap,
    /// No isolation: the build runs as the worker.
    None,
}

/// The network a recipe asks for (`[build] network`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No interface but a loopback of its own (the default).
    #[default]
    None,
    /// The host's network (the worker's config must allow it).
    Host,
}

/// What one build's sandbox binds.
#[derive(Debug, Clone)]
pub struct Mounts<'a> {
    /// The checkout: read-write, the working directory.
    pub checkout: &'a Path,
    /// The build's private HOME: read-write.
    pub home: &'a Path,
    /// Read-only at the same path: the build's own mirror (its checkout's objects live there).
    pub read_only: Vec<&'a Path>,
    /// The recipe's network.
    pub network: Network,
}

impl SandboxConfig {
    /// Checks at start-up that builds can be sandboxed here: `bwrap` exists and can create the namespaces
    /// and binds a build gets (a sandboxed `true` runs with `work_dir` as its checkout and HOME). The error
    /// says what to do.
    pub fn check(&self, work_dir: &Path) -> Result<(), String> {
        if self.kind == SandboxKind::None {
            return Ok(());
        }
        if !Path::new(BWRAP).is_file() {
            return Err(format!(
                "builds run in a bubblewrap sandbox, but {BWRAP} is missing: install it (apt-get install \
                 bubblewrap), or set [sandbox] kind = \"none\" to run builds with the worker's own rights"
            ));
        }
        for path in &self.read_only {
            if !path.is_absolute() {
                return Err(format!("[sandbox] read_only: {} is not an absolute path", path.display()));
            }
        }
        let probe = std::process::Command::new(BWRAP)
            .args(self.args(&Mounts {
                checkout: work_dir,
                home: work_dir,
                read_only: Vec::new(),
                network: Network::None,
            }))
            .arg("/bin/true")
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {BWRAP}: {e}"))?;
        if !probe.status.success() {
            let stderr = String::from_utf8_lossy(&probe.stderr);
            return Err(format!(
                "{BWRAP} cannot create a sandbox on this machine ({}: {}); enable user namespaces \
                 (sysctl kernel.unprivileged_userns_clone=1, or run the worker as root), or set [sandbox] \
                 kind = \"none\" to run builds with the worker's own rights",
                probe.status,
                stderr.trim()
            ));
        }
        Ok(())
    }

    /// Whether a recipe's network is allowed; the error names the config switch.
    pub fn allows(&self, network: Network) -> Result<(), String> {
        match (network, self.kind, self.allow_host_network) {
            (Network::Host, SandboxKind::Bwrap, false) => {
                Err("the recipe asks for network = \"host\", which this worker does not allow: build offline \
                 (vendor the dependencies), or ask the operator to set [sandbox] allow_host_network = true"
                    .into())
            }
            _ => Ok(()),
        }
    }

    /// bwrap's arguments for one build, up to (not including) the command.
    pub fn args(&self, mounts: &Mounts<'_>) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(std::ffi::OsString::from));
        push(&["--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
        push(&["--uid", &BUILD_UID.to_string(), "--gid", &BUILD_UID.to_string()]);
        if mounts.network == Network::Host {
            push(&["--share-net"]);
        }
        for path in SYSTEM_PATHS.iter().chain(ETC_PATHS.iter()) {
            push(&["--ro-bind-try", path, path]);
        }
        push(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        let mut bind = |flag: &str, path: &Path| {
            args.push(flag.into());
            args.push(path.into());
            args.push(path.into());
        };
        for path in self.read_only.iter().map(PathBuf::as_path).chain(mounts.read_only.iter().copied()) {
            bind("--ro-bind-try", path);
        }
        bind("--bind", mounts.checkout);
        bind("--bind", mounts.home);
        args.push("--chdir".into());
        args.push(mounts.checkout.into());
        args.push("--".into());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_network_needs_the_operator() {
        let strict = SandboxConfig::default();
        assert!(strict.allows(Network::None).is_ok());
        let refused = strict.allows(Network::Host).expect_err("refused");
        assert!(refused.contains("allow_host_network = true"), "{refused}");
        let open = SandboxConfig { allow_host_network: true, ..SandboxConfig::default() };
        assert!(open.allows(Network::Host).is_ok());
    }

    #[test]
    fn the_checkout_is_the_only_writable_path_besides_home() {
        let config = SandboxConfig { read_only: vec!["/opt/toolchain".into()], ..SandboxConfig::default() };
        let mirror = Path::new("/w/mirrors/abc.git");
        let mounts = Mounts {
            checkout: Path::new("/w/b/src"),
            home: Path::new("/w/b/home"),
            read_only: vec![mirror],
            network: Network::None,
        };
        let args: Vec<String> = config.args(&mounts).iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let writable: Vec<&str> = args.windows(2).filter(|w| w[0] == "--bind").map(|w| w[1].as_str()).collect();
        assert_eq!(writable, ["/w/b/src", "/w/b/home"]);
        assert!(args.windows(2).any(|w| w[0] == "--ro-bind-try" && w[1] == "/opt/toolchain"));
        assert!(args.windows(2).any(|w| w[0] == "--ro-bind-try" && w[1] == "/w/mirrors/abc.git"));
        assert!(!args.iter().any(|a| a == "--share-net"), "no network unless asked");
        assert!(!args.iter().any(|a| a == "/etc"), "never the whole of /etc");
        assert_eq!(args.last().map(String::as_str), Some("--"));
    }
}
