//! ttsd's configuration loader (`crates/ttsd/src/config.rs` and the `[alerts]` section from
//! `crates/ttsd/src/alerts.rs`, compiled in here unchanged: they live in the binary crate).
//!
//! Input: a TOML file, then `KEY=VALUE` environment overrides after each 0xFF byte (`TTSD_` is put in
//! front of each key). Invariants: `Config::load` never panics; an error lists problems in at most a
//! bounded number of bytes per input byte; an accepted configuration validates, serialises to TOML and
//! loads back equal (no value the loader accepts is lost or changed on the way to a file).
#![no_main]
#![allow(dead_code, unreachable_pub, clippy::all)]

#[path = "../../crates/ttsd/src/alerts.rs"]
mod alerts;
#[path = "../../crates/ttsd/src/config.rs"]
mod config;

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("ttsd-fuzz-config-{}.toml", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&byte| byte == 0xFF);
    let file = parts.next().unwrap_or_default();
    let env: Vec<(String, String)> = parts
        .map(|part| {
            let part = String::from_utf8_lossy(part);
            let (key, value) = part.split_once('=').unwrap_or((&part, ""));
            (format!("{}{key}", config::ENV_PREFIX), value.to_owned())
        })
        .collect();
    let path = scratch();
    std::fs::write(path, file).expect("writing the scratch config");
    match config::Config::load(Some(path), env) {
        Ok(loaded) => {
            loaded.validate().expect("a loaded configuration validates");
            let text = toml::to_string(&loaded).expect("an accepted configuration serialises");
            std::fs::write(path, &text).expect("writing the scratch config");
            let again = config::Config::load(Some(path), Vec::new())
                .unwrap_or_else(|e| panic!("the serialised configuration loads back: {e:#}\n{text}"));
            assert_eq!(again, loaded, "round trip through TOML:\n{text}");
        }
        Err(error) => {
            let text = format!("{error:#}");
            assert!(
                text.len() <= 16 * 1024 + 4 * data.len(),
                "a {}-byte input got a {}-byte error",
                data.len(),
                text.len()
            );
        }
    }
});
