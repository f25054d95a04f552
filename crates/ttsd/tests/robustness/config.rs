//! Bad configuration: ttsd refuses to start and names every problem at once. No server runs, so
//! these kinds need no bystander; each start still takes its turn, not to disturb another test's.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{ESPEAK, root, temp_path};

/// Runs `ttsd serve` with `config` (and `env`), which must fail: its exit code and stderr.
fn refused(name: &str, config: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let _turn = crate::harness::turn_blocking();
    let path = temp_path(&format!("robustness-config-{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ttsd"))
        .current_dir(root())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--voice", ESPEAK, "--config", path.to_str().unwrap()])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{name}: ttsd started with a bad configuration");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status.code(), stderr)
}

#[test]
fn overflowing_and_non_finite_durations_are_refused_all_at_once() {
    let config = "[server]\ndrain_seconds = 9223372036854775807\n\n\
                  [gateway]\nidle_timeout_seconds = 1000000000000\nmax_session_seconds = 9223372036854775807\n\
                  slow_client_timeout_seconds = 0\n\n\
                  [workers]\nstall_timeout_seconds = nan\nrpc_timeout_seconds = inf\nhealth_interval_seconds = -1.0\n\
                  start_timeout_seconds = 1e300\n";
    let (code, stderr) = refused("durations", config, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    for field in [
        "server.drain_seconds",
        "idle_timeout_seconds",
        "max_session_seconds",
        "slow_client_timeout_seconds",
        "workers.stall_timeout_seconds",
        "workers.rpc_timeout_seconds",
        "workers.health_interval_seconds",
        "workers.start_timeout_seconds",
    ] {
        assert!(stderr.contains(field), "{field} is named: {stderr}");
    }
}

#[test]
fn unknown_keys_wrong_types_and_bad_variables_are_refused_by_name() {
    for (name, config, env, needle) in [
        (
            "unknown-key",
            "[gateway]\nmax_sesions = 4\n",
            &[][..],
            "max_sesions",
        ),
        (
            "unknown-section",
            "[gatewya]\nmax_sessions = 4\n",
            &[][..],
            "gatewya",
        ),
        (
            "wrong-type",
            "[gateway]\nmax_sessions = \"many\"\n",
            &[][..],
            "max_sessions",
        ),
        (
            "negative-count",
            "[gateway]\nmax_sessions = -1\n",
            &[][..],
            "max_sessions",
        ),
        (
            "float-count",
            "[gateway]\nmax_text_chars = 1.5\n",
            &[][..],
            "max_text_chars",
        ),
        ("not-toml", "[gateway\nmax_sessions = = 4\n", &[][..], "TOML"),
        (
            "bad-variable",
            "",
            &[("TTSD_GATEWAY__MAX_SESIONS", "4")][..],
            "max_sesions",
        ),
        (
            "bad-variable-shape",
            "",
            &[("TTSD_NONSENSE", "1")][..],
            "TTSD_NONSENSE",
        ),
        (
            "bad-address",
            "[server]\nwyoming_listen = \"nowhere\"\n",
            &[][..],
            "server.wyoming_listen",
        ),
    ] {
        let (code, stderr) = refused(name, config, env);
        assert_ne!(code, Some(0), "{name}");
        assert!(code.is_some(), "{name}: ended by a signal: {stderr}");
        assert!(stderr.contains(needle), "{name}: {needle} is named: {stderr}");
    }
}
