//! `pare optimize --quantize` pinned byte for byte: each case quantizes a
//! model and compares the SHA-256 of the file written (and of its external
//! data file, when there is one) with golden/quantize_hashes.json. The hashes
//! were recorded before a refactor of the quantization code, so that the
//! refactor can show it changed no output byte.
//!
//! Every case runs with `--cost-model profile` (measured costs time operators
//! in ONNX Runtime, so which activations fuse and what `auto` keeps would
//! follow timing noise) and `--no-verify` (verification only decides whether
//! the file is written, never its bytes; ShuffleNet's random weights measure
//! above the default rel L2 0.1 even with int8 weights alone).
//!
//! Which hashes hold where:
//! - `cpu_independent`: `--quantize weights` without `--calib` (or with
//!   `--no-bias-correction`, which leaves `--calib` unread). Nothing is
//!   calibrated, so no sample runs through tract and ONNX Runtime is never
//!   loaded (no kernel check, no layer sensitivity, no measured costs): the
//!   weights are rounded in plain Rust, and tract only folds constant
//!   elementwise and shape operators, which are exact on any CPU. Recorded
//!   hashes came out the same with tract's kernels restricted to AVX2 or to
//!   SSE (`TRACT_CPU_ISA=-avx512f,-avx512vnni[,-fma,-avx2]`) and with its
//!   Intel or AMD kernel choice (`TRACT_X86_KIND`). Always checked.
//! - `cpus`: every calibrated case (`all`, `auto`, and `weights` with
//!   `--calib`, for bias correction). Calibration runs f32 convolutions in
//!   tract, whose kernels depend on the instruction set and on the CPU vendor:
//!   on the recording machine 6 of the 41 calibrated hashes changed under
//!   `TRACT_X86_KIND=intel` (tract's Intel kernel choice on the same AMD CPU)
//!   and 9 under `TRACT_CPU_ISA=-avx512f,-avx512vnni` (AVX2 kernels). `all`
//!   and `auto` also run ONNX Runtime's integer kernels (the kernel check
//!   stores u8 weights where int8 pairs saturate, which they cannot with VNNI;
//!   `auto`'s layer sensitivities). Keyed by [`cpu_key`] — the sorted words of
//!   /proc/cpuinfo among avx2, avx512_vnni, avx_vnni, avx512f, fma, then the
//!   vendor — and by the ONNX Runtime version (`onnxruntime`). Checked when
//!   this CPU's key is recorded with the same ONNX Runtime; otherwise the test
//!   says so (uncaptured, on stderr) and passes.
//! - `inputs`: the SHA-256 of each model's files (model, external data,
//!   test_data_set inputs). A model whose files differ from the recorded ones
//!   is not checked, and the test says so: scripts/fetch_models.py sets the
//!   zoo models' BatchNormalization statistics from ONNX Runtime outputs, so
//!   ShuffleNet itself may differ on another CPU.
//!
//! Record (or update) this CPU's entries and `cpu_independent`:
//!
//!     PARE_BLESS_HASHES=1 PARE_PYTHON=$PWD/.venv/bin/python cargo test --test quantize_hashes
//!
//! (the fetched models come from .cache/models, or PARE_MODELS_DIR; with
//! PARE_REQUIRE_MODELS=1 their absence fails, else their cases are skipped).
//! Blessing runs every case twice and refuses a case whose two runs differ.
//! Without PARE_BLESS_HASHES a mismatch fails, naming the case, the expected
//! and the actual hash. `-- --nocapture` prints each case's time.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

const BLESS: &str = "PARE_BLESS_HASHES";

/// Flags every case shares (see the module docs).
const COMMON_FLAGS: &[&str] = &["--cost-model", "profile", "--no-verify"];

/// The three modes each model runs in.
const MODES: &[&str] = &["--quantize weights", "--quantize all", "--quantize auto"];

/// A model the cases quantize.
struct Subject {
    /// The label case names start with.
    label: String,
    model: PathBuf,
    /// Its folder: `DATA` in a case's flags (test_data_set_0 inside is a calibration set).
    data: PathBuf,
    /// `--input-shape` arguments.
    shapes: Vec<String>,
}

/// One `pare optimize` run.
struct Case {
    /// `label: flags`, the key of its hashes.
    name: String,
    subject: usize,
    args: Vec<String>,
    /// Whether it calibrates (so its output may depend on the CPU), see the module docs.
    calibrated: bool,
}

/// Whether a case calibrates: `--quantize weights` does only for bias
/// correction, which needs `--calib` (and no `--no-bias-correction`); without
/// it no sample runs through tract and ONNX Runtime is never loaded.
fn calibrated(flags: &str) -> bool {
    let words: Vec<&str> = flags.split_whitespace().collect();
    let weights_only = words.windows(2).any(|w| w == ["--quantize", "weights"]);
    !weights_only || (words.contains(&"--calib") && !words.contains(&"--no-bias-correction"))
}

fn fetched_subject(name: &str) -> Option<Subject> {
    let Some(model) = common::fetched(name) else {
        assert!(std::env::var_os("PARE_REQUIRE_MODELS").is_none(), "{name} was not fetched");
        return None;
    };
    let data = model.path.parent().unwrap().to_path_buf();
    Some(Subject { label: name.to_string(), model: model.path, data, shapes: model.input_shapes })
}

fn golden_subject(name: &str, shapes: Option<&[&str]>) -> Subject {
    let model = common::repo().join("golden").join(name).join("model.onnx");
    assert!(model.is_file(), "{} is missing", model.display());
    let shapes = match shapes {
        Some(shapes) => shapes.iter().map(|s| s.to_string()).collect(),
        None => common::golden_input_shapes(&model),
    };
    Subject { label: format!("golden/{name}"), data: model.parent().unwrap().to_path_buf(), model, shapes }
}

/// Every model and the flags it runs with (`DATA`: the model's folder).
fn cases() -> (Vec<Subject>, Vec<Case>) {
    let with_modes = |extra: &[&'static str]| -> Vec<&'static str> { MODES.iter().chain(extra).copied().collect() };
    let table: Vec<(Option<Subject>, Vec<&str>)> = vec![
        (fetched_subject("squeezenet"), with_modes(&["--quantize all --calib DATA"])),
        (fetched_subject("shufflenet"), with_modes(&[])),
        (fetched_subject("ppocr_cls"), with_modes(&["--quantize all --calib DATA", "--quantize weights --calib DATA"])),
        (fetched_subject("orientation"), with_modes(&[])),
        // `auto` is left out where it takes several seconds (a sensitivity run per layer).
        (fetched_subject("ppocr_rec"), vec!["--quantize weights", "--quantize all"]),
        (fetched_subject("ppocr_det"), vec!["--quantize weights", "--quantize all"]),
        (fetched_subject("resnet50"), vec!["--quantize weights", "--quantize all"]),
        (fetched_subject("inception_v1"), vec!["--quantize weights", "--quantize all"]),
        (fetched_subject("inception_v2"), vec!["--quantize weights"]),
        (fetched_subject("densenet121"), vec!["--quantize weights"]),
        (fetched_subject("alexnet"), vec!["--quantize weights"]),
        (
            Some(golden_subject("resnet_block_op13", None)),
            with_modes(&[
                "--quantize weights --weights s4",
                "--quantize weights --weights u4 --block-size 8",
                "--quantize weights --per-tensor",
                "--quantize weights --calib DATA",
                "--quantize weights --calib DATA --no-bias-correction",
                "--quantize all --calib DATA",
                "--quantize all --calib DATA --calib-method entropy",
                "--quantize all --calib DATA --calib-method percentile --percentile 99.9",
                "--quantize all --activations s8 --weights s8-7bit",
                "--quantize all --weights u8",
                "--quantize all --device cortex-a",
                "--quantize auto --budget inf",
            ]),
        ),
        (Some(golden_subject("se_hardsigmoid_op17", None)), with_modes(&[])),
        (
            Some(golden_subject("transformer_block_op17", None)),
            with_modes(&["--quantize weights --weights s4 --block-size 16"]),
        ),
        (Some(golden_subject("vgg_bn_op21", None)), with_modes(&[])),
        (Some(golden_subject("ppocr_constants_op11", None)), with_modes(&[])),
        (Some(golden_subject("inception_concat_op13", None)), with_modes(&[])),
        (Some(golden_subject("gemm_mlp_op21", None)), with_modes(&[])),
        // External data in, external data out.
        (Some(golden_subject("ext_data", None)), vec!["--quantize weights", "--quantize all"]),
        // Its first layers' int8 pairs saturate on x86 without VNNI: the kernel check stores them u8 there.
        (
            Some(golden_subject("qdq_saturation/fp32", Some(&["input=1,3,16,16"]))),
            vec!["--quantize all", "--quantize all --calib DATA"],
        ),
    ];
    let mut subjects = Vec::new();
    let mut cases = Vec::new();
    for (subject, flags) in table {
        let Some(subject) = subject else { continue };
        for flags in flags {
            let mut args = Vec::new();
            for shape in &subject.shapes {
                args.extend(["--input-shape".to_string(), shape.clone()]);
            }
            args.extend(COMMON_FLAGS.iter().map(|s| s.to_string()));
            for word in flags.split_whitespace() {
                args.push(if word == "DATA" { subject.data.display().to_string() } else { word.to_string() });
            }
            cases.push(Case {
                name: format!("{}: {flags}", subject.label),
                subject: subjects.len(),
                args,
                calibrated: calibrated(flags),
            });
        }
        subjects.push(subject);
    }
    (subjects, cases)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a model's files: the model, its external data and its
/// test_data_set inputs (the calibration sets `DATA` names), with their names.
fn inputs_hash(subject: &Subject) -> String {
    let mut files = vec![subject.model.clone()];
    let external = subject.model.with_extension("onnx.data");
    if external.is_file() {
        files.push(external);
    }
    let mut sets: Vec<PathBuf> = std::fs::read_dir(&subject.data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with("test_data_set_"))
        .collect();
    sets.sort();
    for set in sets {
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&set)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("input_"))
            .collect();
        inputs.sort();
        files.extend(inputs);
    }
    let mut hasher = Sha256::new();
    for file in files {
        let name = file.strip_prefix(&subject.data).unwrap_or(&file).display().to_string();
        let bytes = std::fs::read(&file).unwrap();
        hasher.update(format!("{name}\0{}\0", bytes.len()).as_bytes());
        hasher.update(&bytes);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of this machine's calibrated hashes: the sorted, unique words of
/// /proc/cpuinfo among the SIMD features that choose tract's and ONNX
/// Runtime's f32 and int8 kernels, then the vendor (tract picks its kernels
/// by vendor too), and tract's kernel overrides when set.
fn cpu_key() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let wanted = ["avx2", "avx512_vnni", "avx_vnni", "avx512f", "fma"];
    let mut words: Vec<&str> = info.split_whitespace().filter(|w| wanted.contains(w)).collect();
    words.sort();
    words.dedup();
    let vendor = info
        .lines()
        .find_map(|line| line.strip_prefix("vendor_id").map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim()))
        .unwrap_or(std::env::consts::ARCH)
        .to_string();
    let mut key = if words.is_empty() { "(none)".to_string() } else { words.join(" ") };
    key.push_str(&format!(" ({vendor}"));
    for knob in ["TRACT_X86_KIND", "TRACT_CPU_ISA"] {
        if let Ok(value) = std::env::var(knob) {
            key.push_str(&format!(", {knob}={value}"));
        }
    }
    key.push(')');
    key
}

/// The files `pare optimize` wrote, by name (`out.onnx`, `out.onnx.data`), with their SHA-256.
fn run_case(case: &Case, subject: &Subject) -> (BTreeMap<String, String>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let mut args: Vec<&str> = vec!["optimize", subject.model.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend(case.args.iter().map(String::as_str));
    let start = Instant::now();
    let run = common::pare(&args);
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(run.status.code(), Some(0), "{}: pare {}\n{}", case.name, args.join(" "), common::stderr(&run));
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        files.insert(name, sha256(&std::fs::read(entry.path()).unwrap()));
    }
    assert!(files.contains_key("out.onnx"), "{}: nothing written", case.name);
    (files, seconds)
}

/// The hash entries of a case: `name` for the model file, `name [file]` for any other.
fn entries(case: &Case, files: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(file, hash)| {
            let key = if file == "out.onnx" { case.name.clone() } else { format!("{} [{file}]", case.name) };
            (key, hash.clone())
        })
        .collect()
}

/// Whether a recorded entry belongs to the case (its model file or another file it wrote).
fn belongs_to(key: &str, case: &Case) -> bool {
    key == case.name || key.strip_prefix(&case.name).is_some_and(|rest| rest.starts_with(" ["))
}

/// Says something even when the test passes (libtest captures `eprintln!`, not stderr itself).
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn object<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let root = value.as_object_mut().expect("quantize_hashes.json holds an object");
    root.entry(key).or_insert_with(|| json!({})).as_object_mut().unwrap_or_else(|| panic!("{key} is not an object"))
}

#[test]
fn quantized_outputs_match_the_recorded_hashes() {
    let bless = std::env::var(BLESS).is_ok_and(|v| v == "1");
    let path = common::repo().join("golden/quantize_hashes.json");
    let mut recorded: Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        Err(_) if bless => json!({}),
        Err(e) => panic!("{}: {e} (record it with {BLESS}=1 cargo test --test quantize_hashes)", path.display()),
    };
    let (subjects, cases) = cases();
    let key = cpu_key();
    let how = format!("record them with {BLESS}=1 PARE_PYTHON=.venv/bin/python cargo test --test quantize_hashes");
    // Calibrated cases run ONNX Runtime (`all`'s kernel check, `auto`'s sensitivities).
    let runtime = pare::onnxruntime::version().ok();
    let mut notes: Vec<String> = Vec::new();

    // Models whose files differ from the recorded ones.
    let mut changed_inputs: Vec<usize> = Vec::new();
    for (index, subject) in subjects.iter().enumerate() {
        let hash = inputs_hash(subject);
        let inputs = object(&mut recorded, "inputs");
        match inputs.get(&subject.label).and_then(Value::as_str) {
            Some(known) if known == hash => {}
            // Not recorded yet: its cases find nothing recorded (and fail) unless blessed.
            None => {
                if bless {
                    inputs.insert(subject.label.clone(), hash.into());
                }
            }
            Some(known) => {
                let known = known.to_string();
                changed_inputs.push(index);
                if bless {
                    inputs.insert(subject.label.clone(), hash.clone().into());
                }
                notes.push(format!(
                    "{}: its files differ from those the hashes were recorded from (inputs {known}, now {hash}){}",
                    subject.label,
                    if bless {
                        "; its entries for other CPUs are dropped"
                    } else {
                        "; its cases were NOT checked (re-run scripts/fetch_models.py, or record anew)"
                    }
                ));
            }
        }
    }
    if bless {
        // Entries of other CPUs recorded from other files no longer hold.
        let stale: Vec<&Case> = cases.iter().filter(|c| changed_inputs.contains(&c.subject)).collect();
        for (cpu, entries) in object(&mut recorded, "cpus").iter_mut() {
            if *cpu != key {
                if let Some(entries) = entries.as_object_mut() {
                    entries.retain(|name, _| !stale.iter().any(|c| belongs_to(name, c)));
                }
            }
        }
    }

    // Whether the calibrated cases can run and be checked here.
    let recorded_runtime = recorded.get("onnxruntime").and_then(Value::as_str).map(str::to_string);
    let calibrated_check: Result<(), String> = match &runtime {
        None => Err("ONNX Runtime is not available".to_string()),
        Some(_) if bless => Ok(()),
        Some(version) if recorded_runtime.as_deref() != Some(version) => Err(format!(
            "they were recorded with {}, and this run loads {version}",
            recorded_runtime.as_deref().unwrap_or("no ONNX Runtime")
        )),
        Some(_) if recorded.get("cpus").and_then(|c| c.get(&key)).is_none() => {
            Err(format!("none are recorded for this CPU ({key})"))
        }
        Some(_) => Ok(()),
    };
    if bless {
        if let Some(version) = &runtime {
            if recorded_runtime.as_deref().is_some_and(|r| r != version) {
                notes.push(format!(
                    "ONNX Runtime changed from {} to {version}: the entries of other CPUs are dropped",
                    recorded_runtime.as_deref().unwrap()
                ));
                object(&mut recorded, "cpus").retain(|cpu, _| *cpu == key);
            }
            recorded["onnxruntime"] = version.clone().into();
        }
    }
    if let Err(why) = &calibrated_check {
        let names: Vec<&str> = cases.iter().filter(|c| c.calibrated).map(|c| c.name.as_str()).collect();
        let action = if runtime.is_some() { how.clone() } else { "set PARE_PYTHON to check them".to_string() };
        notes.push(format!(
            "{} calibrated cases were NOT checked: {why}; {action}. Not checked: {}",
            names.len(),
            names.join("; ")
        ));
    }

    let mut mismatches: Vec<String> = Vec::new();
    let mut fresh_independent: BTreeMap<String, String> = BTreeMap::new();
    let mut fresh_cpu: BTreeMap<String, String> = BTreeMap::new();
    let mut ran: Vec<&Case> = Vec::new();
    let mut total = 0.0;
    for case in &cases {
        if !bless && changed_inputs.contains(&case.subject) {
            continue;
        }
        if case.calibrated && calibrated_check.is_err() {
            continue;
        }
        let subject = &subjects[case.subject];
        let (files, seconds) = run_case(case, subject);
        total += seconds;
        let actual = entries(case, &files);
        if bless {
            // The same machine must write the same bytes twice.
            let (again, _) = run_case(case, subject);
            assert_eq!(files, again, "{}: two runs on this machine wrote different bytes; not recorded", case.name);
        }
        eprintln!(
            "{seconds:7.2} s  {}  {}",
            if case.calibrated { "calibrated     " } else { "cpu-independent" },
            case.name
        );
        ran.push(case);
        let section = if case.calibrated {
            recorded.get("cpus").and_then(|c| c.get(&key))
        } else {
            recorded.get("cpu_independent")
        };
        let expected: BTreeMap<String, String> = section
            .and_then(Value::as_object)
            .map(|entries| {
                entries
                    .iter()
                    .filter(|(name, _)| belongs_to(name, case))
                    .map(|(name, hash)| (name.clone(), hash.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if expected != actual && bless && !expected.is_empty() {
            notes.push(format!("{}: changed from {expected:?} to {actual:?}", case.name));
        } else if expected != actual {
            let show = |m: &BTreeMap<String, String>| {
                if m.is_empty() {
                    "nothing recorded".to_string()
                } else {
                    m.iter().map(|(name, hash)| format!("{name} = {hash}")).collect::<Vec<_>>().join(", ")
                }
            };
            mismatches.push(format!(
                "{} ({}):\n    expected {}\n    actual   {}",
                case.name,
                if case.calibrated { format!("CPU {key}") } else { "cpu_independent".to_string() },
                show(&expected),
                show(&actual)
            ));
        }
        if case.calibrated {
            fresh_cpu.extend(actual);
        } else {
            fresh_independent.extend(actual);
        }
    }
    eprintln!("{} cases in {total:.1} s", ran.len());

    if bless {
        // Every case that ran replaces its entries; entries of cases no longer defined go.
        let defined =
            |name: &String, calibrated: bool| cases.iter().any(|c| c.calibrated == calibrated && belongs_to(name, c));
        let replace = |section: &mut Map<String, Value>, fresh: &BTreeMap<String, String>, calibrated: bool| {
            section.retain(|name, _| {
                defined(name, calibrated) && !ran.iter().any(|c| c.calibrated == calibrated && belongs_to(name, c))
            });
            section.extend(fresh.iter().map(|(name, hash)| (name.clone(), Value::from(hash.clone()))));
        };
        replace(object(&mut recorded, "cpu_independent"), &fresh_independent, false);
        if calibrated_check.is_ok() {
            let cpus = object(&mut recorded, "cpus");
            let mine = cpus.entry(key.clone()).or_insert_with(|| json!({})).as_object_mut().unwrap();
            replace(mine, &fresh_cpu, true);
        }
        std::fs::write(&path, serde_json::to_string_pretty(&recorded).unwrap() + "\n").unwrap();
        notes.push(format!(
            "{BLESS}: recorded {} cpu-independent and {} calibrated hashes (CPU {key}) in {}",
            fresh_independent.len(),
            fresh_cpu.len(),
            path.display()
        ));
    }
    for note in &notes {
        say(&format!("quantize_hashes: {note}"));
    }
    assert!(
        bless || mismatches.is_empty(),
        "{} of {} cases wrote other bytes than recorded (only if the change is intended, {how}):\n{}",
        mismatches.len(),
        ran.len(),
        mismatches.join("\n")
    );
}
