//! A private PostgreSQL cluster for one test: `initdb` in a temporary directory, `pg_ctl start` on a free loopback
//! port with trust authentication, `pg_ctl stop` when dropped. As root (PostgreSQL refuses to run as root) the
//! binaries run as the `postgres` user through `runuser`, in a directory that user owns.
//!
//! Without the PostgreSQL binaries the test fails and says so: the tests that use this are `#[ignore]`d instead,
//! so a plain `cargo nextest run` does not need PostgreSQL, and CI runs them with `--run-ignored`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_postgres_user: bool,
    pub port: u16,
}

/// The directory holding `initdb` and `pg_ctl`: on PATH, else Debian's `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    // pg_dump too: the at-rest tests dump the database.
    let has_both = |d: &Path| {
        d.join("initdb").is_file() && d.join("pg_ctl").is_file() && d.join("pg_dump").is_file()
    };
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(d) = on_path.into_iter().find(|d| has_both(d)) {
        return d;
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_both(d))
        .collect();
    debian.sort_by_key(|d| {
        let version = d.parent().and_then(|v| v.file_name());
        version.and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    debian.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL binaries (initdb, pg_ctl) were not found on PATH nor under /usr/lib/postgresql/*/bin: \
             install PostgreSQL (Debian: apt-get install -y --no-install-recommends postgresql) to run this test"
        )
    })
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl PgCluster {
    /// Creates and starts a cluster; its superuser is `postgres`, with trust authentication on 127.0.0.1.
    pub fn start() -> Self {
        let bin = bin_dir();
        let as_postgres_user = is_root();
        let dir = tempfile::tempdir().expect("a temporary directory");
        if as_postgres_user {
            let chown = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(
                chown.status.success(),
                "running as root, the cluster runs as user postgres, which must exist: {}",
                String::from_utf8_lossy(&chown.stderr)
            );
        }
        let mut cluster = Self {
            bin,
            dir,
            as_postgres_user,
            port: 0,
        };
        let data = cluster.data_dir();
        cluster.run_ok(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        );
        // Another test may take the port between the probe and the start: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            let log = cluster.dir.path().join("log").display().to_string();
            let out = cluster.pg_ctl_start();
            if out.status.success() {
                return cluster;
            }
            last = format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("pg_ctl start failed: {last}");
    }

    /// A URL of a database in this cluster (`postgres` always exists).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A plain `pg_dump` of `database`: every byte a backup of it would hold.
    pub fn dump(&self, database: &str) -> Vec<u8> {
        let port = self.port.to_string();
        let out = self.run(
            "pg_dump",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", database],
        );
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Restarts the server (the data stays).
    pub fn restart(&self) {
        let data = self.data_dir();
        let log = self.dir.path().join("log").display().to_string();
        // pg_ctl restart reuses the server options of the last start; the log keeps the server's output off
        // the pipe this process reads.
        self.run_ok(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-m", "fast", "-w", "restart"],
        );
    }

    /// Stops the server (the data stays; [`PgCluster::start_again`] brings it back on the same port).
    pub fn stop(&self) {
        let data = self.data_dir();
        self.run_ok("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server stopped by [`PgCluster::stop`] again, on the same port.
    pub fn start_again(&self) {
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start` of the cluster's data on `self.port`, its output in the cluster's log.
    fn pg_ctl_start(&self) -> Output {
        let data = self.data_dir();
        let log = self.dir.path().join("log").display().to_string();
        let server_options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-o",
                &server_options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        )
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }

    fn run_ok(&self, program: &str, args: &[&str]) {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
