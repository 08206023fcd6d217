//! Read + write throughput of pare's lossless round trip against the physical
//! limits, measured side by side in one run on every fetched model:
//! - `pare optimize M -o - > /dev/null` against `cat M > /dev/null` (the bytes
//!   read, decoded, carried through the IR, encoded and written to the same sink);
//! - `pare optimize M -o OUT` against `cp M OUT` (what writing a file costs here);
//!
//! It also reports pare's peak resident memory against the model's size.
//!
//! Run: `cargo bench --bench roundtrip` (after scripts/fetch_models.py).
//! Goal (issue 2): VGG-19 within 3x of cat, peak memory under 2x the model.
//! Exits 1 when VGG-19 misses the goal.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command to completion; returns its wall time and peak resident memory.
// The child is reaped by wait4 (which also yields its resource usage), not Child::wait.
#[allow(clippy::zombie_processes)]
fn measure(command: &mut Command) -> (Duration, u64) {
    let start = Instant::now();
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("command starts");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data, and wait4 reaps only the child we spawned.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(reaped, pid, "waited for the child");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{command:?} failed");
    (elapsed, usage.ru_maxrss as u64 * 1024)
}

fn best_of(runs: usize, mut once: impl FnMut() -> (Duration, u64)) -> (Duration, u64) {
    (0..runs).map(|_| once()).fold((Duration::MAX, 0), |(t, m), (t2, m2)| (t.min(t2), m.max(m2)))
}

fn models() -> Vec<(String, PathBuf)> {
    let dir = std::env::var_os("PARE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models"));
    let text = std::fs::read_to_string(dir.join("manifest.json"))
        .expect("the fetched models: run scripts/fetch_models.py first");
    let json: serde_json::Value = serde_json::from_str(&text).expect("manifest parses");
    json["models"]
        .as_array()
        .expect("models listed")
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_string(), dir.join(m["path"].as_str().unwrap())))
        .collect()
}

fn main() {
    let pare = env!("CARGO_BIN_EXE_pare");
    let out_dir = tempfile::tempdir().expect("temp dir");
    println!(
        "{:<13} {:>8} {:>7} {:>8} {:>6} {:>7} {:>8} {:>6} {:>8} {:>6}",
        "model", "MB", "cat s", "pare>null", "ratio", "cp s", "pare>file", "ratio", "peak MB", "/size"
    );
    let mut goal_met = true;
    for (name, path) in models() {
        let size = std::fs::metadata(&path).expect("model exists").len();
        let out = out_dir.path().join(format!("{name}.onnx"));
        let fresh = |out: &Path| {
            let _ = std::fs::remove_file(out);
        };
        let (cat, _) = best_of(3, || measure(Command::new("cat").arg(&path)));
        let (to_null, peak) =
            best_of(3, || measure(Command::new(pare).arg("optimize").arg(&path).args(["-o", "-", "--passes", "none"])));
        let (copy, _) = best_of(3, || {
            fresh(&out);
            measure(Command::new("cp").arg(&path).arg(&out))
        });
        let (to_file, file_peak) = best_of(3, || {
            fresh(&out);
            measure(Command::new(pare).arg("optimize").arg(&path).arg("-o").arg(&out).args(["--passes", "none"]))
        });
        fresh(&out);
        let null_ratio = to_null.as_secs_f64() / cat.as_secs_f64();
        let file_ratio = to_file.as_secs_f64() / copy.as_secs_f64();
        let memory = peak.max(file_peak) as f64 / size as f64;
        println!(
            "{name:<13} {:>8.1} {:>7.3} {:>8.3} {:>5.1}x {:>7.3} {:>8.3} {:>5.1}x {:>8.1} {:>5.2}x",
            size as f64 / 1e6,
            cat.as_secs_f64(),
            to_null.as_secs_f64(),
            null_ratio,
            copy.as_secs_f64(),
            to_file.as_secs_f64(),
            file_ratio,
            peak.max(file_peak) as f64 / 1e6,
            memory
        );
        if name == "vgg19" && (null_ratio > 3.0 || memory > 2.0) {
            goal_met = false;
        }
    }
    if !goal_met {
        println!("VGG-19 missed the goal: round trip within 3x of cat, peak memory under 2x the model");
        std::process::exit(1);
    }
}
