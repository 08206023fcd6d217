//! The cost cache (`--cost-cache FILE`): the timings that decide what pare
//! writes — each operator configuration's latency and the rounds of
//! `--quantize auto`'s whole-model candidates timed side by side — kept in a
//! JSON file a pipeline checks in. Entries are keyed by what was timed (a
//! SHA-256 of the timed model with its weights reduced to type and dims),
//! under the runtime's version and the CPU's features, so one file can serve
//! several machines without mixing their numbers. A rerun that finds every
//! timing in the cache measures nothing and writes byte-identical output; a
//! miss is measured and added (and listed in the report), or, when the cache
//! is frozen (`--cost-cache-frozen`), is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why the cache could not be read, written or used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: cannot read the cost cache: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: not a pare cost cache: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: cannot write the cost cache: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{path}: the cost cache is frozen and has no timing of {what} on {machine} (run once without --cost-cache-frozen to add it)")]
    FrozenMiss { path: PathBuf, what: String, machine: String },
}

/// The format tag written at the top of every cache file.
const FORMAT: &str = "pare-cost-cache 1";

/// A latency with its 95% confidence interval, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// The median of `runs` with the distribution-free 95% interval of the
    /// median: the order statistics n/2 ∓ 0.98·√n.
    pub fn of_runs(runs: &[f64]) -> Option<Interval> {
        let mut sorted: Vec<f64> = runs.iter().copied().filter(|r| r.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let reach = 0.98 * (n as f64).sqrt();
        let low = ((n as f64 / 2.0 - reach).floor().max(0.0)) as usize;
        let high = ((n as f64 / 2.0 + reach).ceil() as usize).min(n - 1);
        Some(Interval { median: sorted[n / 2], low: sorted[low], high: sorted[high] })
    }

    /// The same interval less a constant (an empty run's overhead), never below 0.
    pub fn less(self, seconds: f64) -> Interval {
        Interval {
            median: (self.median - seconds).max(0.0),
            low: (self.low - seconds).max(0.0),
            high: (self.high - seconds).max(0.0),
        }
    }
}

/// One operator configuration's timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorEntry {
    /// What was timed, for people reading the file.
    pub what: String,
    /// `None`: ONNX Runtime could not run it alone.
    pub seconds: Option<Interval>,
}

/// The rounds of whole models timed side by side: `rounds[m][r]` is model
/// `m`'s time in round `r` (or why ONNX Runtime could not run model `m`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundsEntry {
    pub what: Vec<String>,
    pub rounds: Vec<Result<Vec<f64>, String>>,
}

/// The timings of one machine (runtime version and CPU features).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct MachineEntries {
    #[serde(default)]
    operators: BTreeMap<String, OperatorEntry>,
    #[serde(default)]
    candidates: BTreeMap<String, RoundsEntry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    format: String,
    machines: BTreeMap<String, MachineEntries>,
}

/// A timing the cache did not have, measured in this run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Miss {
    pub key: String,
    pub what: String,
}

/// The cost cache of one run: what the file held, and what this run added.
#[derive(Debug)]
pub struct CostCache {
    /// `None`: in memory only (no `--cost-cache`).
    path: Option<PathBuf>,
    frozen: bool,
    machine: String,
    file: CacheFile,
    /// Timings measured in this run.
    pub misses: Vec<Miss>,
    /// Timings taken from the file.
    pub hits: usize,
}

/// The cache shared by every stage of one run.
pub type SharedCostCache = Arc<Mutex<CostCache>>;

impl CostCache {
    /// A cache that lives for this run only.
    pub fn in_memory(machine: String) -> CostCache {
        CostCache {
            path: None,
            frozen: false,
            machine,
            file: CacheFile { format: FORMAT.into(), machines: BTreeMap::new() },
            misses: Vec::new(),
            hits: 0,
        }
    }

    /// Reads the cache file at `path` (a missing file is an empty cache).
    pub fn open(path: &Path, frozen: bool, machine: String) -> Result<CostCache, CacheError> {
        let file = match std::fs::read(path) {
            Ok(bytes) => {
                let malformed = |reason: String| CacheError::Malformed { path: path.to_path_buf(), reason };
                let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
                if file.format != FORMAT {
                    return Err(malformed(format!("format is '{}', expected '{FORMAT}'", file.format)));
                }
                file
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                CacheFile { format: FORMAT.into(), machines: BTreeMap::new() }
            }
            Err(error) => return Err(CacheError::Read { path: path.to_path_buf(), reason: error.to_string() }),
        };
        Ok(CostCache { path: Some(path.to_path_buf()), frozen, machine, file, misses: Vec::new(), hits: 0 })
    }

    pub fn shared(self) -> SharedCostCache {
        Arc::new(Mutex::new(self))
    }

    /// The runtime and CPU the timings are filed under.
    pub fn machine(&self) -> &str {
        &self.machine
    }

    fn entries(&self) -> Option<&MachineEntries> {
        self.file.machines.get(&self.machine)
    }

    fn entries_mut(&mut self) -> &mut MachineEntries {
        self.file.machines.entry(self.machine.clone()).or_default()
    }

    /// A stored operator timing, or an error when the cache is frozen and has none.
    pub fn operator(&mut self, key: &str, what: impl FnOnce() -> String) -> Result<Option<OperatorEntry>, CacheError> {
        let found = self.entries().and_then(|e| e.operators.get(key)).cloned();
        self.checked(found, what)
    }

    pub fn put_operator(&mut self, key: String, entry: OperatorEntry) {
        self.misses.push(Miss { key: key.clone(), what: entry.what.clone() });
        self.entries_mut().operators.insert(key, entry);
    }

    /// Stored rounds of a set of candidates, or an error when frozen and missing.
    pub fn candidates(&mut self, key: &str, what: impl FnOnce() -> String) -> Result<Option<RoundsEntry>, CacheError> {
        let found = self.entries().and_then(|e| e.candidates.get(key)).cloned();
        self.checked(found, what)
    }

    pub fn put_candidates(&mut self, key: String, entry: RoundsEntry) {
        self.misses.push(Miss { key: key.clone(), what: entry.what.join(" vs ") });
        self.entries_mut().candidates.insert(key, entry);
    }

    fn checked<T>(&mut self, found: Option<T>, what: impl FnOnce() -> String) -> Result<Option<T>, CacheError> {
        match (found, self.frozen, &self.path) {
            (Some(entry), _, _) => {
                self.hits += 1;
                Ok(Some(entry))
            }
            (None, true, Some(path)) => {
                Err(CacheError::FrozenMiss { path: path.clone(), what: what(), machine: self.machine.clone() })
            }
            (None, _, _) => Ok(None),
        }
    }

    /// Writes the cache back (atomically) when it has a file and this run added to it.
    pub fn save(&self) -> Result<(), CacheError> {
        let Some(path) = &self.path else { return Ok(()) };
        if self.misses.is_empty() {
            return Ok(());
        }
        let write_error = |reason: String| CacheError::Write { path: path.clone(), reason };
        let text = serde_json::to_string_pretty(&self.file).map_err(|e| write_error(e.to_string()))? + "\n";
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut temporary = tempfile::NamedTempFile::new_in(folder).map_err(|e| write_error(e.to_string()))?;
        std::io::Write::write_all(&mut temporary, text.as_bytes()).map_err(|e| write_error(e.to_string()))?;
        temporary.persist(path).map_err(|e| write_error(e.to_string()))?;
        Ok(())
    }
}

/// What a run did with the cache, for the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheSummary {
    pub file: Option<PathBuf>,
    pub machine: String,
    pub hits: usize,
    /// Timings measured in this run (and added to the file).
    pub misses: Vec<Miss>,
}

impl CostCache {
    pub fn summary(&self) -> CacheSummary {
        CacheSummary {
            file: self.path.clone(),
            machine: self.machine.clone(),
            hits: self.hits,
            misses: self.misses.clone(),
        }
    }
}

/// The machine timings are filed under: ONNX Runtime's version and the
/// CPU's features (`onnxruntime 1.23.2 | x86_64 avx2 fma`).
pub fn this_machine() -> String {
    let runtime = crate::onnxruntime::version().unwrap_or_else(|_| "onnxruntime (not loaded)".into());
    format!("{runtime} | {}", cpu_features())
}

/// The SHA-256 of some bytes, as lowercase hex: the key of a timed thing.
pub fn key_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The CPU features that change which kernels a runtime picks, as
/// `arch feature feature ...` (x86-64: AVX2, FMA, AVX-512F, AVX-512 VNNI, AVX-VNNI).
pub fn cpu_features() -> String {
    let mut features: Vec<&str> = vec![std::env::consts::ARCH];
    #[cfg(target_arch = "x86_64")]
    {
        let detected = [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512_vnni", std::arch::is_x86_feature_detected!("avx512vnni")),
            ("avx_vnni", std::arch::is_x86_feature_detected!("avxvnni")),
        ];
        features.extend(detected.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
    }
    #[cfg(target_arch = "aarch64")]
    {
        let detected = [
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            ("dotprod", std::arch::is_aarch64_feature_detected!("dotprod")),
            ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
        ];
        features.extend(detected.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
    }
    features.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_interval_widens_with_fewer_runs() {
        let runs: Vec<f64> = (1..=100).map(f64::from).collect();
        let interval = Interval::of_runs(&runs).unwrap();
        assert_eq!(interval.median, 51.0);
        // n/2 ∓ 0.98·√n = 50 ∓ 9.8: ranks 40 and 60 (values 41 and 61).
        assert_eq!((interval.low, interval.high), (41.0, 61.0));
        let few = Interval::of_runs(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((few.low, few.median, few.high), (1.0, 2.0, 3.0));
        assert_eq!(Interval::of_runs(&[]), None);
    }

    #[test]
    fn a_cache_file_round_trips_and_a_frozen_miss_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.json");
        let mut cache = CostCache::open(&path, false, "ort 1 | x86_64 avx2".into()).unwrap();
        assert_eq!(cache.operator("k", || "Conv".into()).unwrap(), None);
        let entry =
            OperatorEntry { what: "Conv".into(), seconds: Some(Interval { median: 2e-5, low: 1e-5, high: 3e-5 }) };
        cache.put_operator("k".into(), entry.clone());
        cache.save().unwrap();
        let mut again = CostCache::open(&path, true, "ort 1 | x86_64 avx2".into()).unwrap();
        assert_eq!(again.operator("k", || "Conv".into()).unwrap(), Some(entry));
        assert_eq!(again.hits, 1);
        let miss = again.operator("other", || "Gemm 1x4".into()).unwrap_err();
        assert!(miss.to_string().contains("costs.json") && miss.to_string().contains("Gemm 1x4"), "{miss}");
        // Another machine's timings are not this one's.
        let mut elsewhere = CostCache::open(&path, false, "ort 2 | aarch64 neon".into()).unwrap();
        assert_eq!(elsewhere.operator("k", || "Conv".into()).unwrap(), None);
        std::fs::write(&path, "{\"format\": \"something else\", \"machines\": {}}").unwrap();
        assert!(matches!(CostCache::open(&path, false, String::new()), Err(CacheError::Malformed { .. })));
    }
}
