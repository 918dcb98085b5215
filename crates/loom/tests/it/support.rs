//! Fixtures: a bare "remote" repository, `loom up` as a child process with a fresh environment,
//! and the CLI.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const LOOM: &str = env!("CARGO_BIN_EXE_loom");

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A bare repository at `dir/origin.git` whose `main` has one commit, `init` (a README).
pub fn bare_repo(dir: &Path) -> PathBuf {
    let origin = dir.join("origin.git");
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(dir, &["init", "-q", "--bare", "-b", "main", origin.to_str().unwrap()]);
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README"), "demo\n").unwrap();
    git(&seed, &["add", "README"]);
    git(&seed, &["commit", "-qm", "init"]);
    git(&seed, &["push", "-q", origin.to_str().unwrap(), "main"]);
    origin
}

/// Commit subjects of `main` in a bare repository, newest first.
pub fn log(origin: &Path) -> Vec<String> {
    let out = git(origin, &["--git-dir", origin.to_str().unwrap(), "log", "--format=%s", "main"]);
    out.lines().map(str::to_owned).collect()
}

/// `git show main:{path}` in a bare repository.
pub fn show(origin: &Path, path: &str) -> String {
    git(origin, &["--git-dir", origin.to_str().unwrap(), "show", &format!("main:{path}")])
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A command with none of the caller's `LOOM_*` variables (as in a fresh shell), then `env`.
/// The directory of the built `loom` goes first on `PATH`, as `cargo install` would put it.
pub fn fresh(program: &str, cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(program);
    let bin = Path::new(LOOM).parent().unwrap();
    let path = std::env::join_paths(
        std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    cmd.current_dir(cwd).env("PATH", path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LOOM_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// A process group, killed (with everything it started) on drop.
pub struct Group(pub Child);

impl Group {
    /// Spawns `cmd` in a group of its own, its stdout (and stderr) collected line by line.
    pub fn spawn(mut cmd: Command) -> (Group, Lines) {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let lines = Lines::default();
        lines.collect(child.stdout.take().unwrap());
        lines.collect(child.stderr.take().unwrap());
        (Group(child), lines)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

/// Everything a process printed so far.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(&self, from: impl std::io::Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.all().join("\n")
    }

    /// Waits until a line satisfies `found`, and returns it.
    pub fn wait_for(&self, what: &str, within: Duration, found: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.all().into_iter().find(|l| found(l)) {
                return line;
            }
            assert!(Instant::now() < deadline, "no {what} within {within:?}; output so far:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `loom up` in `dir`, with `env` on top of a fresh environment and its API on a free port.
pub struct Up {
    _group: Group,
    pub output: Lines,
    pub addr: String,
    /// The admin key the first start printed.
    pub key: String,
}

impl Up {
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Up {
        Up::run("loom up", dir, env)
    }

    /// Runs `command` (a shell command line that runs `loom up`).
    pub fn run(command: &str, dir: &Path, env: &[(&str, &str)]) -> Up {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut all = vec![("LOOM_HTTP_ADDR", addr.as_str())];
        all.extend_from_slice(env);
        let mut sh = fresh("sh", dir, &all);
        sh.args(["-c", command]);
        let (group, output) = Group::spawn(sh);
        output.wait_for("\"control plane at\"", Duration::from_secs(60), |l| l.contains("control plane at"));
        let key = output
            .all()
            .iter()
            .find_map(|l| l.trim().strip_prefix("export LOOM_API_KEY=").map(str::to_owned))
            .expect("the first start prints an admin key");
        Up { _group: group, output, addr, key }
    }

    /// Runs a CLI command against this instance; panics unless it succeeds.
    pub fn loom(&self, args: &[&str]) -> String {
        let out = self.loom_in(&std::env::temp_dir(), args);
        assert!(out.status.success(), "loom {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a CLI command against this instance in `dir`.
    pub fn loom_in(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        let env = [("LOOM_HTTP_ADDR", self.addr.as_str()), ("LOOM_API_KEY", &self.key)];
        fresh(LOOM, dir, &env).args(args).output().unwrap()
    }

    /// `loom bead show ID --json`, polled until its status is `want` (or a minute passed).
    pub fn wait_status(&self, bead: &str, want: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let shown: serde_json::Value = serde_json::from_str(&self.loom(&["bead", "show", bead, "--json"])).unwrap();
            if shown["status"] == want || Instant::now() > deadline {
                return shown;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
