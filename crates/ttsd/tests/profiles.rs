//! CPU and heap profiles from the running binary, read back by a real pprof reader (`go tool pprof`).
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::process::Command;

use common::*;
use tts_test_support::http_request;

fn pprof_top(profile: &[u8], name: &str, extra: &[&str]) -> String {
    let path = temp_path(name);
    std::fs::write(&path, profile).unwrap();
    let output = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .args(extra)
        // The profiles carry symbol names; passing the binary would make pprof re-symbolise addresses.
        .arg(&path)
        .output()
        .expect("go is installed (make test installs Debian's golang-go)");
    let _ = std::fs::remove_file(&path);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "go tool pprof failed:\n{text}");
    text
}

/// The profile's total from `go tool pprof -top`'s header ("... of 2.63s total"), in its own unit.
fn total(top: &str) -> f64 {
    let line = top
        .lines()
        .find(|line| line.contains(" total"))
        .unwrap_or_else(|| panic!("no total in:\n{top}"));
    let value = line
        .split_whitespace()
        .rev()
        .nth(1)
        .unwrap_or_else(|| panic!("no value before `total` in {line:?}"));
    let number: String = value
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number
        .parse()
        .unwrap_or_else(|_| panic!("no number in {value:?} ({line:?})"))
}

/// Rows of `-top` output (flat, flat%, sum%, cum, cum%, name) whose function name contains `needle`.
fn rows_naming<'a>(top: &'a str, needle: &str) -> Vec<&'a str> {
    top.lines()
        .filter(|line| line.split_whitespace().count() >= 6 && line.contains(needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_profile_under_load_and_heap_profile_parse_and_name_ttsd_functions() {
    let config = temp_path("profiling.toml");
    std::fs::write(&config, "[profiling]\nenabled = true\nmemory = true\n").unwrap();
    let server = start_espeak(&["--config", config.to_str().unwrap()]);
    let admin = server.admin_base.clone();

    let mut clients = Vec::new();
    for _ in 0..8 {
        let (mut client, _) = connect(&server, "/v1/stream").await;
        client.send_text(LONG_TEXT, true).await.unwrap();
        clients.push(client);
    }
    let cpu = tokio::task::spawn_blocking(move || {
        http_request(
            "GET",
            &admin,
            "/debug/pprof/profile?seconds=3&frequency=99",
            None,
            None,
        )
        .unwrap()
    });
    let mut readers = Vec::new();
    for mut client in clients {
        readers.push(tokio::spawn(async move { read_utterance(&mut client).await }));
    }
    let cpu = cpu.await.unwrap();
    assert_eq!(cpu.status, 200, "{}", cpu.body);
    // Cumulative, so the synthesis code shows even while the samples land in espeak-ng's C below it.
    let top = pprof_top(&cpu.bytes, "cpu.pb.gz", &["-cum"]);
    assert!(top.contains("Type: cpu"), "{top}");
    assert!(total(&top) > 0.0, "the profile holds samples:\n{top}");
    // 8 sessions synthesising for the whole 3 s: the espeak engine's synthesis is where a user looking
    // for the CPU time must find it, and pprof lists only functions with samples.
    assert!(
        !rows_naming(&top, "engine::espeak").is_empty(),
        "the espeak engine's synthesis is not in the profile:\n{top}"
    );
    for reader in readers {
        reader.await.unwrap();
    }
    let heap = http_request("GET", &server.admin_base, "/debug/pprof/heap", None, None).unwrap();
    assert_eq!(heap.status, 200, "{}", heap.body);
    // ttsd symbolises heap profiles itself, so pprof need not (and, on a debug binary, would take minutes).
    let top = pprof_top(&heap.bytes, "heap.pb.gz", &["-cum", "-symbolize=none"]);
    assert!(top.contains("inuse_space"), "{top}");
    assert!(total(&top) > 0.0, "the heap profile holds live bytes:\n{top}");
    assert!(
        !rows_naming(&top, "tts_").is_empty() || !rows_naming(&top, "ttsd::").is_empty(),
        "no live allocation made by ttsd's code:\n{top}"
    );
}

#[test]
fn profiles_are_off_unless_enabled() {
    let server = start_espeak(&[]);
    let response = http_request("GET", &server.admin_base, "/debug/pprof/heap", None, None).unwrap();
    assert_eq!(response.status, 404);
    assert!(
        response.body.to_lowercase().contains("profil"),
        "says how to enable: {}",
        response.body
    );
}
