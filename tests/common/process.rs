//! `orgd serve` as a real child process, for tests of the binary itself.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An `orgd serve` child process, killed if a test fails before stopping it.
pub struct ServeProcess {
    pub child: Child,
    pub base: String,
    pub log: std::path::PathBuf,
}

impl ServeProcess {
    /// Starts `orgd serve` on `data_dir` and waits until `/healthz` answers.
    pub async fn start(data_dir: &Path, log_dir: &Path) -> ServeProcess {
        Self::start_with(data_dir, log_dir, &[]).await
    }

    /// The same, with extra `ORGD_*` variables (every inherited one is removed first).
    pub async fn start_with(data_dir: &Path, log_dir: &Path, env: &[(&str, &str)]) -> ServeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = log_dir.join(format!("serve-{port}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_orgd"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ORGD_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("serve")
            .env("ORGD_DATA_DIR", data_dir)
            .env("ORGD_LISTEN", format!("127.0.0.1:{port}"))
            .env("ORGD_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("orgd starts");
        let mut process = ServeProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", process.base)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("orgd serve exited early ({status}):\n{}", process.log());
            }
            assert!(
                Instant::now() < deadline,
                "orgd serve did not become healthy:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process
    }

    /// `GET path` with `key`, as JSON (panics on a transport or decoding error).
    pub async fn get_json(&self, path: &str, key: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("orgd answers")
            .json()
            .await
            .expect("a JSON answer")
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.send_sigterm();
        self.wait_for_exit(within)
    }

    pub fn send_sigterm(&self) {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM failed");
    }

    pub fn wait_for_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "orgd did not stop within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits (up to `within`) until the log contains `text`.
    pub async fn wait_for_log(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the log never said {text:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
