//! Three `nats-server` processes with JetStream, clustered on loopback (Debian's `nats-server`):
//! the cluster `custos bench cluster` measures through and the scale-out tests kill and restart
//! servers of. Killed on drop.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;

/// A 3-server NATS cluster with JetStream on loopback.
pub struct NatsCluster {
    store: PathBuf,
    name: String,
    /// Each server's (client port, cluster port).
    ports: Vec<(u16, u16)>,
    servers: Vec<Option<Child>>,
}

/// The lowest and one past the highest port [`reserve_port`] hands out: below Linux's ephemeral
/// range (32768–60999), from which both `bind(0)` and every outgoing connection's source port
/// are drawn.
const RESERVED: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port for a server this process is about to start: free when checked, never handed
/// out twice by this process, and outside the ephemeral range, so that no other test's listener
/// or connection takes it before the server binds it (a NATS server whose port was taken exits,
/// and a cluster of two cannot place three replicas).
pub fn reserve_port() -> anyhow::Result<u16> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let span = RESERVED.end - RESERVED.start;
    let first = rand::random_range(0..span);
    (0..span)
        .map(|i| RESERVED.start + (first + i) % span)
        .find(|port| {
            !given.contains(port) && std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok()
        })
        .inspect(|port| {
            given.insert(*port);
        })
        .context("no free loopback port below the ephemeral range")
}

/// How long a started `nats-server` may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(20);

impl NatsCluster {
    /// Starts the three servers, each storing JetStream data under `dir`, and waits until each
    /// accepts connections; servers that could not start are started again on other ports.
    pub fn start(dir: &Path) -> anyhow::Result<NatsCluster> {
        let mut failure = None;
        for _ in 0..3 {
            let ports: Vec<(u16, u16)> = (0..3)
                .map(|_| Ok((reserve_port()?, reserve_port()?)))
                .collect::<anyhow::Result<_>>()?;
            let mut cluster = NatsCluster {
                store: dir.to_path_buf(),
                // A cluster name of its own, so that no route to a port another cluster reused
                // can join the two.
                name: format!("custos-{}", ports[0].0),
                ports,
                servers: vec![None, None, None],
            };
            for i in 0..3 {
                // What a server of an earlier attempt stored belongs to another cluster name.
                let _ = std::fs::remove_dir_all(dir.join(format!("n{i}")));
                cluster.spawn(i)?;
            }
            match (0..3).try_for_each(|i| cluster.ready(i)) {
                Ok(()) => return Ok(cluster),
                Err(error) => failure = Some(error),
            }
        }
        Err(failure.expect("three attempts were made"))
    }

    /// Starts server `i` again after [`NatsCluster::kill`], on its ports and its storage, and
    /// waits until it accepts connections.
    pub fn run(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.ready(i)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let routes: Vec<String> = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!("nats://127.0.0.1:{}", self.ports[j].1))
            .collect();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.ports[i].0.to_string())
            .arg("-sd")
            .arg(self.store.join(format!("n{i}")))
            .args(["-n", &format!("n{i}"), "--cluster_name", &self.name])
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{}", self.ports[i].1))
            .arg("--routes")
            .arg(routes.join(","))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server (Debian's nats-server; scripts/test installs it)")?;
        self.servers[i] = Some(child);
        Ok(())
    }

    /// Waits until server `i` accepts connections on its client port; an error (and the server
    /// killed) if it exits first or does not within [`READY_WITHIN`].
    fn ready(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.ports[i].0));
        loop {
            let child = self.servers[i]
                .as_mut()
                .context("the server is not running")?;
            if let Some(status) = child.try_wait()? {
                self.servers[i] = None;
                anyhow::bail!(
                    "nats-server n{i} exited ({status}); was port {} taken?",
                    address.port()
                );
            }
            if std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill(i);
                anyhow::bail!(
                    "nats-server n{i} did not accept connections on {address} within {READY_WITHIN:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills server `i` (SIGKILL) and waits for it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The servers' client URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|(client, _)| format!("nats://127.0.0.1:{client}"))
            .collect()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
