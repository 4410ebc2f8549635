//! Test harness for cross-process tests: starts a real `aisle up` cluster (a gateway and
//! targets as separate processes on free loopback ports) in a temporary data directory and
//! hands out its endpoint and keys.
//!
//! It is for tests only: it knows nothing of aisle's internals, just the `aisle` binary, its
//! flags and the `aisle.env` file it writes once it serves — what any user has.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Path of the `aisle` binary: `$AISLE_BIN`, else the workspace's debug build.
pub fn aisle_bin() -> PathBuf {
    if let Ok(p) = std::env::var("AISLE_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    root.join("build").join("debug").join("aisle")
}

/// A running `aisle up`; stopped (and its data removed) on drop.
pub struct TestCluster {
    child: Option<Child>,
    data: PathBuf,
    /// `AWS_*` variables from `aisle.env`.
    pub env: HashMap<String, String>,
}

impl TestCluster {
    /// Start a cluster with `targets` targets in a fresh directory.
    pub fn start(targets: usize) -> anyhow::Result<TestCluster> {
        let data = std::env::temp_dir().join(format!(
            "aisle-conf-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ rand_suffix()
        ));
        std::fs::create_dir_all(&data)?;
        Self::start_in(data, targets)
    }

    /// Start (or restart) a cluster on an existing data directory.
    pub fn start_in(data: PathBuf, targets: usize) -> anyhow::Result<TestCluster> {
        let bin = aisle_bin();
        if !bin.exists() {
            bail!(
                "{} is missing: run `cargo build --bin aisle` first",
                bin.display()
            );
        }
        let log = std::fs::File::create(data.join("up.log"))?;
        let child = Command::new(&bin)
            .args([
                "up",
                "--port",
                "0",
                "--targets",
                &targets.to_string(),
                "--data",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut c = TestCluster {
            child: Some(child),
            data,
            env: HashMap::new(),
        };
        let env_file = c.data.join("aisle.env");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(s) = std::fs::read_to_string(&env_file)
                && s.lines().count() >= 4
            {
                for line in s.lines() {
                    if let Some((k, v)) = line.trim_start_matches("export ").split_once('=') {
                        c.env.insert(k.to_string(), v.to_string());
                    }
                }
                return Ok(c);
            }
            if let Some(status) = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten()) {
                bail!(
                    "aisle up exited with {status}; see {}/up.log",
                    c.data.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "aisle up did not become ready; see {}/up.log",
                    c.data.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The S3 endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.env["AWS_ENDPOINT_URL"]
    }

    /// Data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// Stop with SIGINT (as Ctrl-C) and wait; the data directory is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn rand_suffix() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u128
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
