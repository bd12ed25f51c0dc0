//! A real service for deploy tests: a C HTTP server built by the worker, started by the service's own
//! `activate`, checked by its health endpoint; helpers to reach it and to reap what the hosts started.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tiny HTTP server: `/healthz` answers `HEALTH`, everything else `hello VERSION`.
pub const SERVER_C: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    const char *port_text = argc > 1 ? argv[1] : getenv("PORT");
    int port = port_text ? atoi(port_text) : 0;
    if (port <= 0) { fprintf(stderr, "usage: server PORT\n"); return 2; }
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a; memset(&a, 0, sizeof a);
    a.sin_family = AF_INET; a.sin_port = htons(port); a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) { perror("bind"); return 1; }
    for (;;) {
        int c = accept(s, 0, 0);
        if (c < 0) continue;
        /* One connection at a time: a client that connects and sends nothing must not hold the server. */
        struct timeval t = {1, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
        char buf[1024];
        ssize_t n = read(c, buf, sizeof buf - 1);
        if (n > 0) {
            buf[n] = 0;
            int health = strncmp(buf, "GET /healthz", 12) == 0;
            char body[128], out[512];
            snprintf(body, sizeof body, "%s %s\n", health ? "health" : "hello", VERSION);
            int len = snprintf(out, sizeof out, "HTTP/1.0 %d X\r\nContent-Length: %zu\r\n\r\n%s",
                               health ? HEALTH : 200, strlen(body), body);
            if (write(c, out, len) < 0) perror("write");
        }
        close(c);
    }
}
"#;

/// Starts the server in the background from the release dir and records its pid; stops the old one first.
pub const ACTIVATE: &str = r#"if [ -f "$CASCADE_RUN_DIR/pid" ]; then kill "$(cat "$CASCADE_RUN_DIR/pid")" 2>/dev/null; fi; nohup ./server "$PORT" >"$CASCADE_RUN_DIR/out.log" 2>&1 & echo $! >"$CASCADE_RUN_DIR/pid""#;
/// Stops the server and waits (bounded) until it is gone, so the next one can bind its port.
pub const STOP: &str = r#"pid=$(cat "$CASCADE_RUN_DIR/pid" 2>/dev/null) || exit 0; kill "$pid" 2>/dev/null; for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done; rm -f "$CASCADE_RUN_DIR/pid""#;

/// A build of [`SERVER_C`] answering `hello VERSION`, its health endpoint `health`; `deploy_extra` adds
/// lines to `[deploy]` (placement, rollout policy).
pub fn recipe(version: &str, health: u16, activate: &str, deploy_extra: &str) -> String {
    format!(
        "[build]\ncommand = 'mkdir -p out && cc -O2 -DVERSION=\\\"{version}\\\" -DHEALTH={health} -o out/server server.c && chmod 0644 out/server'\nartifact = \"out/server\"\n\n[deploy]\nactivate = '{activate}'\nstop = '{STOP}'\nactivate_timeout_secs = 20\n{deploy_extra}\n[deploy.health]\nhttp = \"http://127.0.0.1:${{PORT}}/healthz\"\ninterval_ms = 200\nsuccesses = 2\ndeadline_secs = 4\n"
    )
}

/// Kills every service process the hosts started (their pid files), whatever the test's outcome.
pub struct Reaper(pub PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in service_pids(&self.0) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

pub fn service_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for host in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for service in std::fs::read_dir(host.path().join("services")).into_iter().flatten().flatten() {
            if let Ok(text) = std::fs::read_to_string(service.path().join("run/pid")) {
                pids.extend(text.trim().parse::<u32>().ok());
            }
        }
    }
    pids
}

/// The hosts' step logs and service output, for a failure message.
pub fn service_logs(dir: &Path) -> String {
    let mut out = String::new();
    for host in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for service in std::fs::read_dir(host.path().join("services")).into_iter().flatten().flatten() {
            for log in ["activate.log", "stop.log", "run/out.log"] {
                if let Ok(text) = std::fs::read_to_string(service.path().join(log)) {
                    out.push_str(&format!("--- {}: {}\n{text}\n", service.path().display(), log));
                }
            }
        }
    }
    out
}

/// One `GET`, tried a few times (bounded): the server is another process, serving one request at a time.
pub fn http(port: u16, path: &str) -> Option<(u16, String)> {
    for _ in 0..20 {
        if let Some(answer) = http_once(port, path) {
            return Some(answer);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    None
}

pub fn http_once(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string()))
}
