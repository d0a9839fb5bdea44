//! Real servers on loopback for fault tests: a private PostgreSQL cluster and a private NATS server, each
//! on a free port in its own temporary directory, stoppable and restartable on the same port and data.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768 – 60999 by default).
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A port free right now, for a server a test starts. Taken from below the ephemeral range: a port that
/// `bind(0)` handed out could be taken by any parallel test's outgoing connection before the server bound
/// it ("Address already in use", seen in CI). Each test process starts at its own random point and
/// never hands out the same port twice.
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(2_654_435_761) ^ nanos) % span
    });
    for _ in 0..span {
        let port = PORTS.start + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(port).expect("PORTS fits in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

fn scratch_dir(tag: &str) -> PathBuf {
    let base =
        std::env::var("SOCIALNET_TEST_TMP").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = PathBuf::from(base).join(format!("{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A PostgreSQL cluster of its own (initdb runs as `postgres` when we are root, as initdb requires).
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

impl PgServer {
    pub fn start() -> Self {
        let bin = PathBuf::from(
            std::env::var("SOCIALNET_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        let dir = scratch_dir("pg");
        let port = free_port();
        if is_root() {
            Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
        }
        let data = dir.join("data");
        let status = Self::as_pg(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed in {}", data.display());
        let server = Self { dir, port, bin };
        server.start_again();
        server
    }

    fn as_pg(program: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Start (again) on the same port and data directory.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let status = Self::as_pg(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start failed; see {}", self.dir.join("log").display());
        assert!(wait_port(self.port, Duration::from_secs(10)));
    }

    /// Stop at once, as a crash would (`-m immediate`).
    pub fn stop(&self) {
        let _ = Self::as_pg(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A NATS server with JetStream of its own.
#[derive(Debug)]
pub struct NatsServer {
    dir: PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl NatsServer {
    pub fn start() -> Self {
        let mut s = Self { dir: scratch_dir("nats"), port: free_port(), child: None };
        s.start_again();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn start_again(&mut self) {
        let child =
            Command::new(std::env::var("SOCIALNET_NATS_BIN").unwrap_or_else(|_| "nats-server".into()))
                .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
                .arg(self.dir.join("js"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server must be installed (make test installs it)");
        self.child = Some(child);
        assert!(wait_port(self.port, Duration::from_secs(10)), "nats-server did not start");
    }

    /// Kill it (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis server of its own, without persistence: restarting it gives an empty Redis, like a lost node.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut s = Self { port: free_port(), child: None };
        s.start_again();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make test installs it)");
        self.child = Some(child);
        assert!(wait_port(self.port, Duration::from_secs(10)), "redis-server did not start");
    }

    /// Kill it (SIGKILL): its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of its own: 3 masters with one replica each, failover after 1 s without a master, no
/// persistence. Its nodes can be killed one by one.
#[derive(Debug)]
pub struct RedisCluster {
    dir: PathBuf,
    pub ports: Vec<u16>,
    children: Vec<Option<std::process::Child>>,
}

/// A port whose cluster-bus port (+10 000) is free and valid too.
fn free_bus_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = scratch_dir("redis-cluster");
        let ports: Vec<u16> = (0..6).map(|_| free_bus_port()).collect();
        let children = ports.iter().map(|p| Some(Self::node(&dir, *p))).collect();
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (make test installs it)");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Self { dir, ports, children };
        for p in &cluster.ports {
            assert!(cluster.wait_ok(*p, Duration::from_secs(20)), "node {p} never saw the cluster ok");
        }
        // A replica that never finished its first sync would not be promoted.
        let started = Instant::now();
        while cluster
            .ports
            .iter()
            .filter(|p| Self::cli(**p, &["info", "replication"]).contains("master_link_status:up"))
            .count()
            < 3
        {
            assert!(started.elapsed() < Duration::from_secs(20), "the replicas never synchronised");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn node(dir: &Path, port: u16) -> std::process::Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("{port}.conf")))
            .arg("--dir")
            .arg(dir)
            .args([
                "--dbfilename",
                &format!("{port}.rdb"),
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (make test installs it)");
        assert!(wait_port(port, Duration::from_secs(10)), "redis-server {port} did not start");
        child
    }

    fn cli(port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    }

    /// Whether node `port` reports `cluster_state:ok` within `limit`.
    pub fn wait_ok(&self, port: u16, limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            if Self::cli(port, &["cluster", "info"]).contains("cluster_state:ok") {
                return true;
            }
            if started.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `host:port` of every node, for a `redis+cluster://` URL.
    pub fn seeds(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
    }

    /// The ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|p| self.children[self.index(*p)].is_some())
            .filter(|p| Self::cli(*p, &["role"]).starts_with("master"))
            .collect()
    }

    fn index(&self, port: u16) -> usize {
        self.ports.iter().position(|p| *p == port).expect("a node of this cluster")
    }

    /// SIGKILL node `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.index(port);
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-node NATS cluster with JetStream of its own (streams can be R3); nodes can be killed and restarted
/// on the same ports and data.
#[derive(Debug)]
pub struct NatsCluster {
    dir: PathBuf,
    pub ports: Vec<u16>,
    routes: Vec<u16>,
    children: Vec<Option<std::process::Child>>,
}

impl NatsCluster {
    pub fn start() -> Self {
        let dir = scratch_dir("nats-cluster");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut cluster = Self { dir, ports, routes, children: vec![None, None, None] };
        for i in 0..3 {
            cluster.start_node(i);
        }
        cluster
    }

    /// Start node `i` (again).
    pub fn start_node(&mut self, i: usize) {
        let routes: Vec<String> = self.routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
        let child =
            Command::new(std::env::var("SOCIALNET_NATS_BIN").unwrap_or_else(|_| "nats-server".into()))
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.ports[i].to_string(),
                    "-n",
                    &format!("n{i}"),
                    "-js",
                    "-sd",
                ])
                .arg(self.dir.join(format!("n{i}")))
                .args([
                    "--cluster_name",
                    "socialnet",
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", self.routes[i]),
                ])
                .args(["--routes", &routes.join(",")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server must be installed (make test installs it)");
        self.children[i] = Some(child);
        assert!(wait_port(self.ports[i], Duration::from_secs(10)), "nats-server n{i} did not start");
    }

    /// Every node, comma-separated, for `--nats-url`.
    pub fn url(&self) -> String {
        self.ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
