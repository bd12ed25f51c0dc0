//! The demo's example git repositories, one per example service ([`SERVICES`]): a tiny HTTP server in C and
//! the `cascade.toml` that builds it with `cc` and tells the hosts how to start, stop and health-check it.
//! Built with the `git` CLI, so the workers clone real repositories.

use anyhow::Context;
use std::path::Path;
use std::process::Command;

use super::layout::ServiceSlot;

/// The service's source (`@NAME@` and `@GREETING@` filled in per service): listens on 127.0.0.1:PORT (its
/// first argument, or `$PORT`), answers `GET /healthz` with `ok` and `GET /` with the commit it was built
/// from (stamped by the build as `COMMIT`) and the host it runs on, one request at a time, forever.
const SERVER_C: &str = r#"/* The Cascade demo's @NAME@ service: a tiny HTTP server on 127.0.0.1:PORT (argv[1] or $PORT).
 * GET /healthz answers "ok"; GET / names the commit it was built from and the host it runs on. */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef COMMIT
#define COMMIT "unknown"
#endif

static void send_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        data += n;
        len -= (size_t)n;
    }
}

static void reply(int fd, const char *status, const char *body) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.0 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, strlen(body));
    send_all(fd, head, (size_t)n);
    send_all(fd, body, strlen(body));
}

/* Reads the request head (bounded in size and time) and answers it. */
static void serve(int fd, const char *hello) {
    char req[4096];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t n = recv(fd, req + got, sizeof req - 1 - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n")) break;
    }
    req[got] = '\0';
    char path[256] = "";
    if (sscanf(req, "GET %255s", path) != 1) {
        reply(fd, "400 Bad Request", "bad request\n");
    } else if (strcmp(path, "/healthz") == 0) {
        reply(fd, "200 OK", "ok\n");
    } else if (strcmp(path, "/") == 0) {
        reply(fd, "200 OK", hello);
    } else {
        reply(fd, "404 Not Found", "not found\n");
    }
}

int main(int argc, char **argv) {
    const char *arg = argc > 1 ? argv[1] : getenv("PORT");
    long port = arg ? strtol(arg, NULL, 10) : 0;
    if (port < 1 || port > 65535) {
        fprintf(stderr, "usage: %s PORT (or set PORT)\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *host = getenv("CASCADE_HOST");
    char hello[512];
    snprintf(hello, sizeof hello, "@GREETING@ from cascade: @NAME@ built from commit %s, on host %s\n", COMMIT,
             host ? host : "unknown");

    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* The previous release may still be letting go of the port: try for 5 s. */
    int tries = 0;
    while (bind(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (errno != EADDRINUSE || ++tries == 50) {
            perror("bind");
            return 1;
        }
        usleep(100 * 1000);
    }
    if (listen(s, 64) != 0) {
        perror("listen");
        return 1;
    }
    fprintf(stderr, "@NAME@ (commit %s) listening on 127.0.0.1:%ld\n", COMMIT, port);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) {
            if (errno != EINTR && errno != ECONNABORTED) usleep(100 * 1000); /* e.g. out of fds: wait */
            continue;
        }
        /* A client that stalls cannot hold the one-at-a-time loop for more than 2 s. */
        struct timeval limit = {2, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
        serve(c, hello);
        close(c);
    }
}
"#;

/// How the workers build it (`cc`, libc only) and how the hosts run it. `activate` must return, so it
/// starts the server in the background and keeps its pid in `$CASCADE_RUN_DIR` (which outlives releases);
/// `stop` (and, first, `activate`, in case an old one still runs) stops the pid if it is still this service.
const RECIPE: &str = r#"[build]
command = 'mkdir -p out && cc -O2 -Wall -DCOMMIT="\"$CASCADE_COMMIT\"" -o out/@NAME@ @NAME@.c'
artifact = "out/@NAME@"
timeout_secs = 120

# Installed as `current/@NAME@` (the artifact's name), mode 0755.
[deploy]
activate = '''
running() { case "$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n 1)" in */@NAME@) return 0;; esac; return 1; }
pid=$(cat "$CASCADE_RUN_DIR/pid" 2>/dev/null)
i=0
while [ -n "$pid" ] && running "$pid" && [ "$i" -lt 50 ]; do kill "$pid"; sleep 0.1; i=$((i + 1)); done
nohup "$CASCADE_RELEASE/@NAME@" "$PORT" >>"$CASCADE_RUN_DIR/@NAME@.log" 2>&1 </dev/null &
echo $! >"$CASCADE_RUN_DIR/pid"
'''
activate_timeout_secs = 30
stop = '''
running() { case "$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n 1)" in */@NAME@) return 0;; esac; return 1; }
pid=$(cat "$CASCADE_RUN_DIR/pid" 2>/dev/null)
i=0
while [ -n "$pid" ] && running "$pid" && [ "$i" -lt 50 ]; do kill "$pid"; sleep 0.1; i=$((i + 1)); done
rm -f "$CASCADE_RUN_DIR/pid"
'''
stop_timeout_secs = 15
placement = { pool = "@POOL@" }
# One canary first; the rest only after it stayed healthy for 5 s. A canary that fails its health check
# rolls the service back to the previous build by itself.
waves = [{hosts = 1}, {percent = 100}]
bake_secs = 5
on_failure = "rollback"

[deploy.health]
http = "http://127.0.0.1:${PORT}/healthz"
interval_ms = 300
successes = 2
deadline_secs = 20
"#;

fn fill(template: &str, service: &ServiceSlot) -> String {
    template.replace("@NAME@", service.name).replace("@GREETING@", service.greeting).replace("@POOL@", service.pool)
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Cascade demo", "-c", "user.email=demo@localhost", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .context("cannot run git: install it (Debian: `apt-get install git`) and run the demo again")?;
    anyhow::ensure!(
        output.status.success(),
        "git {} in {} failed: {}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Creates `service`'s repository at `dir` unless it exists; returns the commit to build (the tip of
/// `main`). A repository an older demo created (a shell script, no `<name>.c`) gets one more commit with
/// the server, so a resumed installation deploys a service too.
pub fn ensure_repo(dir: &Path, service: &ServiceSlot) -> anyhow::Result<String> {
    let source = format!("{}.c", service.name);
    if !dir.join(".git").exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        git(dir, &["init", "-q"])?;
    }
    let tracked = git(dir, &["ls-files"])?;
    if !tracked.lines().any(|f| f == source) {
        if tracked.lines().any(|f| f == "hello.sh") {
            git(dir, &["rm", "-q", "hello.sh"])?;
        }
        std::fs::write(dir.join(&source), fill(SERVER_C, service))?;
        std::fs::write(dir.join("cascade.toml"), fill(RECIPE, service))?;
        git(dir, &["add", &source, "cascade.toml"])?;
        let message = format!("{}: the demo service, a tiny HTTP server", service.name);
        git(dir, &["commit", "-q", "-m", &message])?;
    }
    git(dir, &["rev-parse", "HEAD"])
}

#[cfg(test)]
mod tests {
    use super::super::layout::SERVICES;
    use super::*;

    #[test]
    fn repository_is_created_once_and_its_commit_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("example.git");
        let first = ensure_repo(&repo, &SERVICES[0]).unwrap();
        assert_eq!(first.len(), 40, "a full SHA: {first}");
        assert_eq!(ensure_repo(&repo, &SERVICES[0]).unwrap(), first);
        let recipe = std::fs::read_to_string(repo.join("cascade.toml")).unwrap();
        assert!(recipe.contains("artifact = \"out/hello\""));
        assert!(repo.join("hello.c").exists());
    }

    #[test]
    fn an_older_demo_repository_gets_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("example");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q"]).unwrap();
        std::fs::write(repo.join("hello.sh"), "#!/bin/sh\necho hello\n").unwrap();
        std::fs::write(repo.join("cascade.toml"), "[build]\ncommand = \"true\"\nartifact = \"hello.sh\"\n").unwrap();
        git(&repo, &["add", "hello.sh", "cascade.toml"]).unwrap();
        git(&repo, &["commit", "-q", "-m", "old"]).unwrap();
        let old = git(&repo, &["rev-parse", "HEAD"]).unwrap();
        let new = ensure_repo(&repo, &SERVICES[0]).unwrap();
        assert_ne!(new, old);
        assert_eq!(git(&repo, &["ls-files"]).unwrap(), "cascade.toml\nhello.c");
        assert_eq!(ensure_repo(&repo, &SERVICES[0]).unwrap(), new, "upgraded once");
    }

    /// The recipe is one the worker accepts, with the deploy the demo relies on.
    #[test]
    fn the_recipe_is_valid() {
        for service in &SERVICES {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("cascade.toml"), fill(RECIPE, service)).unwrap();
            let recipe = cascade_worker::recipe::Recipe::load(dir.path(), 600).unwrap();
            assert_eq!(recipe.deploy.install_as, service.name);
            assert_eq!(recipe.deploy.mode, 0o755);
            assert!(recipe.deploy.health.is_some() && recipe.deploy.activate.is_some() && recipe.deploy.stop.is_some());
            assert_eq!(recipe.deploy.placement.get("pool").map(String::as_str), Some(service.pool));
        }
    }
}
