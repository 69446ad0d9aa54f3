//! Operations test support: the activation binary with its log captured, the standard health
//! check as a client sees it, and the devstack's processes frozen or killed (fault tests only).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::Env;

/// The activation service's gRPC name (fixed: the proto package and service).
pub const ACTIVATION: &str = "scanloop.activation.v1.ActivationService";

/// The activation binary with stderr (its log) kept in memory for the test to read.
pub struct LoggedService {
    child: Child,
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl LoggedService {
    /// Starts the binary with `extra` environment on top of the test environment and waits
    /// until its health check answers SERVING (it probes Cassandra and Kafka first).
    pub async fn start(env: &Env, extra: &[(&str, &str)]) -> LoggedService {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = crate::common::command(env, &addr)
            .env("SCANLOOP_ENV", "dev")
            .env("RUST_LOG", "warn,scanloop_service=info")
            .env("NO_COLOR", "1")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the activation binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[activation] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let service = LoggedService { child, addr, log };
        assert!(
            service
                .wait_for(ACTIVATION, ServingStatus::Serving, Duration::from_secs(60))
                .await,
            "the service never reported SERVING"
        );
        service
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// What the health check answers for `service` ("" = the server as a whole), or the error.
    pub async fn health(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?;
        Ok(response.into_inner().status())
    }

    /// Polls the health check until `service` reports `want`; false if `timeout` passes first.
    pub async fn wait_for(&self, service: &str, want: ServingStatus, timeout: Duration) -> bool {
        scanloop_testkit::eventually(timeout, || async {
            self.health(service).await.ok() == Some(want)
        })
        .await
    }
}

impl Drop for LoggedService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn devstack_state() -> PathBuf {
    std::env::var("SCANLOOP_DEVSTACK_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.devstack"),
        PathBuf::from,
    )
}

/// The pid of the devstack's `component` (`cassandra` or `kafka`).
pub fn devstack_pid(component: &str) -> u32 {
    let file = devstack_state().join(format!("run/{component}.pid"));
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|status| status.success())
}

/// Panics, unless already unwinding (a second panic in a drop would abort the test binary and
/// hide the first failure): then only says it.
fn fail_in_drop(message: &str) {
    if std::thread::panicking() {
        eprintln!("{message}");
    } else {
        panic!("{message}");
    }
}

/// A devstack process stopped with SIGSTOP (a frozen JVM: connections stay open, nothing
/// answers) until this is dropped, which sends SIGCONT, also when the test fails.
pub struct Frozen {
    pid: u32,
}

impl Frozen {
    /// Returns once every thread of the process is stopped.
    pub fn freeze(component: &str) -> Frozen {
        let pid = devstack_pid(component);
        assert!(signal(pid, "STOP"), "kill -STOP {pid} ({component})");
        let frozen = Frozen { pid };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "{component} (pid {pid}) did not stop"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        frozen
    }

    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !signal(self.pid, "CONT") {
            fail_in_drop(&format!(
                "kill -CONT {} failed: resume it by hand",
                self.pid
            ));
        }
    }
}

/// True when every thread of `pid` is in the stopped state (`T` in /proc/<pid>/task/*/stat).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
                .is_some_and(|state| state == 'T' || state == 't')
        })
    })
}

/// The devstack's Cassandra killed with SIGKILL (a crashed node: connections refused) until
/// this is dropped, which runs `devstack up` and waits until CQL answers again, also when the
/// test fails.
pub struct CassandraDown;

impl CassandraDown {
    pub fn kill() -> CassandraDown {
        let pid = devstack_pid("cassandra");
        assert!(signal(pid, "KILL"), "kill -KILL {pid} (cassandra)");
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        CassandraDown
    }

    pub fn restart(self) {}
}

impl Drop for CassandraDown {
    fn drop(&mut self) {
        let devstack =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/devstack/devstack");
        let up = Command::new(devstack).arg("up").status();
        if !up.is_ok_and(|status| status.success()) {
            fail_in_drop("devstack up did not bring cassandra back: run it by hand");
        }
    }
}
