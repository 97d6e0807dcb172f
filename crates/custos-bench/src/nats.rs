//! Three `nats-server` processes with JetStream, clustered on loopback (Debian's `nats-server`):
//! the cluster `custos bench cluster` measures through and the scale-out tests kill and restart
//! servers of. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// A 3-server NATS cluster with JetStream on loopback.
pub struct NatsCluster {
    store: PathBuf,
    name: String,
    /// Each server's (client port, cluster port).
    ports: Vec<(u16, u16)>,
    servers: Vec<Option<Child>>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl NatsCluster {
    /// Starts the three servers, each storing JetStream data under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<NatsCluster> {
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let mut cluster = NatsCluster {
            store: dir.to_path_buf(),
            // A cluster name of its own, so that no route to a port another cluster reused can
            // join the two.
            name: format!("custos-{}", ports[0].0),
            ports,
            servers: vec![None, None, None],
        };
        for i in 0..3 {
            cluster.run(i)?;
        }
        Ok(cluster)
    }

    /// Starts server `i` (again, after [`NatsCluster::kill`]), on its ports and its storage.
    pub fn run(&mut self, i: usize) -> anyhow::Result<()> {
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
