//! The `pare` command line: `inspect` a model, `optimize` it (for now the
//! lossless round trip, `--passes none`), `verify` a candidate against a
//! reference or golden outputs. Exit codes: 0 success (verify: passed), 1
//! verification failed, 2 bad input or usage (with a message naming the file
//! and node), nothing written on error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use pare::inspect;
use pare::ir::infer::parse_input_shape;
use pare::onnx::{ExternalData, WriteOptions};
use pare::pipeline;

#[derive(Parser)]
#[command(name = "pare", version, about = "An ONNX-to-ONNX optimizing compiler for low-power inference")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-layer table of output shapes, parameters, MACs and bytes, with totals.
    Inspect {
        /// The model (a path, or - for stdin).
        model: PathBuf,
        #[command(flatten)]
        shapes: ShapeArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Optimize a model and write the result (only if it verifies).
    Optimize(Box<OptimizeArgs>),
    /// List every pass family and rule, with the guards and appliers rules may use.
    Passes,
    /// Compare a candidate model's outputs with a reference model's or with golden outputs.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct OptimizeArgs {
    /// The input model (a path, or - for stdin).
    input: PathBuf,
    /// Where to write the result (a path, or - for stdout).
    #[arg(short, long)]
    output: PathBuf,
    /// Pass families to run: none (lossless round trip), all, or a comma-separated list.
    #[arg(long, default_value = "all")]
    passes: String,
    /// Extra rules in pare's rule syntax (repeatable; see passes/README.md).
    #[arg(long = "rules", value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// What extraction minimizes.
    #[arg(long, value_enum, default_value = "latency")]
    objective: ObjectiveArg,
    /// Device profile the costs are estimated on (x86-avx2, cortex-a, mcu).
    #[arg(long, default_value = pare::cost::profile::DEFAULT_DEVICE, conflicts_with = "device_file")]
    device: String,
    /// A device profile in TOML (see src/cost/devices/).
    #[arg(long, value_name = "FILE")]
    device_file: Option<PathBuf>,
    /// Largest summed error estimate of approximate rewrites (default: 0,
    /// exact only). With --quantize auto the estimate of each layer is its
    /// measured effect on the output (relative L2, quantized alone on the
    /// calibration data) and the default is 0.05; inf: no limit, cost decides.
    #[arg(long)]
    budget: Option<f64>,
    /// Newest default-domain opset a rewrite may raise the model to, for a
    /// fused operator newer than the model's opset (HardSwish 14,
    /// LayerNormalization 17, Mish 18, Gelu 20, Swish 24); the model is
    /// raised only as far as the operators it gets need. Default: the device
    /// profile's max_opset (22 for the shipped ones).
    #[arg(long, value_name = "N")]
    target_opset: Option<i64>,
    /// Quantize with QDQ nodes: auto (each layer where the cost model finds
    /// its integer form cheaper, within --budget), all (every layer that can
    /// be), weights (int8 weights behind DequantizeLinear, float compute).
    #[arg(long, value_enum)]
    quantize: Option<QuantizeArg>,
    /// Factorize layers (MatMul, Gemm, Conv) into two low-rank factors: auto
    /// (each layer at the rank whose measured cost and error win, within
    /// --budget, default 0.05) or R in (0, 1), the share of each eligible
    /// layer's MACs every one keeps. Factors fit --calib data when given.
    #[arg(long, value_name = "auto|R")]
    lowrank: Option<String>,
    /// With --lowrank: the weights' plain truncated SVD, even with --calib data.
    #[arg(long)]
    plain_svd: bool,
    /// With --lowrank: the Conv forms offered. best (per share, of SVD,
    /// spatial SVD and Tucker-2, the one of lowest estimated error), svd
    /// (kh×kw then 1x1; MatMul and Gemm have only this form), spatial (kh×1
    /// then 1×kw) or tucker2 (1x1, kh×kw, 1x1). A named form leaves layers
    /// it does not apply to alone.
    #[arg(long, value_name = "best|svd|spatial|tucker2", default_value = "best", requires = "lowrank")]
    lowrank_form: String,
    /// A layer every compression family leaves alone: its node's name (or
    /// its output's), or op:TYPE for every node of an operator type. Repeatable.
    #[arg(long, value_name = "NAME|op:TYPE")]
    exclude: Vec<String>,
    /// Calibration inputs: a test_data_set folder (or folder of them), or
    /// .npy/.pb files. Without it, seeded random inputs (accuracy suffers).
    #[arg(long, value_name = "DIR")]
    calib: Option<PathBuf>,
    /// How activation ranges are chosen from the calibration statistics.
    #[arg(long, value_enum, default_value = "minmax")]
    calib_method: CalibMethodArg,
    /// The share of values --calib-method percentile keeps inside the range.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Random calibration samples when no --calib is given.
    #[arg(long, default_value_t = 8)]
    calib_samples: usize,
    /// Where latencies come from for --quantize auto's layers and the fused
    /// activations: measured (each form timed alone in ONNX Runtime, cached
    /// by configuration) or profile (the device profile's roofline).
    #[arg(long, value_enum, default_value = "measured")]
    cost_model: CostModelArg,
    /// Integer type of quantized activations.
    #[arg(long, value_enum, default_value = "u8")]
    activations: ActivationsArg,
    /// One weight scale per tensor instead of per output channel.
    #[arg(long)]
    per_tensor: bool,
    /// Weight storage: s8 (int8), s8-7bit (int8 limited to ±63, so kernels
    /// that add product pairs in int16 cannot saturate), u8 (uint8 around
    /// zero point 128: 8 bits, and u8×u8 kernels do not saturate), or auto
    /// (s8; on devices whose profile says int8 pairs saturate, such as
    /// x86-avx2, each layer whose int8 kernel saturates in ONNX Runtime on
    /// the calibration data stores u8). With --quantize weights also s4
    /// (int4) and u4 (uint4 around 8), opset 21.
    #[arg(long, value_enum, default_value = "auto")]
    weights: WeightsArg,
    /// With --quantize weights: one weight scale per block of this many
    /// elements along the input axis (opset 21) instead of per channel.
    #[arg(long, value_name = "N")]
    block_size: Option<usize>,
    /// Keep measured timings in this JSON file and reuse them: a rerun with
    /// the same cache makes the same choices and writes the same bytes. Keyed
    /// by operator configuration (or set of candidates), ONNX Runtime
    /// version and CPU features; timings it lacks are measured and added.
    #[arg(long, value_name = "FILE.json")]
    cost_cache: Option<PathBuf>,
    /// With --cost-cache: a timing the cache lacks is an error (exit 2), so
    /// a pipeline never measures, and its output never changes.
    #[arg(long, requires = "cost_cache")]
    cost_cache_frozen: bool,
    /// Keep each quantized Conv's and Gemm's bias as it was. By default,
    /// with --calib, the bias takes back the mean shift that rounding the
    /// layer's weights causes on the calibration data (bias correction;
    /// also with --quantize weights).
    #[arg(long)]
    no_bias_correction: bool,
    /// Saturation limits: iterations, e-nodes, seconds.
    #[arg(long, default_value_t = 30)]
    iter_limit: usize,
    #[arg(long, default_value_t = 500_000)]
    node_limit: usize,
    #[arg(long, default_value_t = 120)]
    time_limit: u64,
    /// Write the before/after summary, rule firings and verification as JSON.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Write the result without checking it against the input.
    #[arg(long)]
    no_verify: bool,
    /// Verification: seeded random samples, tolerance and runtime.
    #[arg(long, default_value_t = 2)]
    samples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Verification tolerance, as in `pare verify` (default: allclose with
    /// rtol 1e-4, atol 1e-5; the report also gives each output's rel L2).
    #[arg(long)]
    max_rel_l2: Option<f64>,
    #[arg(long)]
    rtol: Option<f64>,
    #[arg(long)]
    atol: Option<f64>,
    #[arg(long, value_enum, default_value = "tract")]
    runtime: RuntimeArg,
    #[arg(long, value_enum, default_value = "none")]
    ort_opt: OrtOptArg,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// Pieces of work run side by side (ONNX Runtime sessions, calibration
    /// samples); default one per core. The output does not depend on it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    threads: Option<u64>,
    /// Store tensors in OUTPUT.data (default: only when the input did, or
    /// when the model would exceed protobuf's 2 GiB limit).
    #[arg(long, conflicts_with = "no_external_data")]
    external_data: bool,
    /// Keep every tensor inside the model file (fails above 2 GiB).
    #[arg(long)]
    no_external_data: bool,
    /// Tensors smaller than this many bytes stay in the model file.
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    external_threshold: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ObjectiveArg {
    Latency,
    Energy,
    Size,
}

#[derive(Args)]
struct VerifyArgs {
    /// REFERENCE CANDIDATE, or only CANDIDATE with --golden.
    #[arg(num_args = 1..=2, required = true, value_name = "MODEL")]
    models: Vec<PathBuf>,
    /// Inputs: an ONNX test_data_set folder (or a folder of them), or .npy/.pb files.
    #[arg(long, value_name = "DIR")]
    inputs: Option<PathBuf>,
    /// Compare the candidate with the outputs stored in DIR (test_data_set layout)
    /// instead of running a reference model.
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    golden: Option<PathBuf>,
    /// Number of seeded random samples when neither --inputs nor --golden is given.
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Seed of the random samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// Elementwise tolerance, numpy's allclose rule: |c - r| <= atol + rtol·|r|.
    #[arg(long)]
    rtol: Option<f64>,
    #[arg(long)]
    atol: Option<f64>,
    /// Largest relative L2 error allowed per output.
    #[arg(long)]
    max_rel_l2: Option<f64>,
    /// Smallest top-1 agreement allowed on class-score outputs (0..1).
    #[arg(long)]
    min_top1: Option<f64>,
    /// tract (embedded, default) or ort (ONNX Runtime, loaded at run time).
    #[arg(long, value_enum, default_value = "tract")]
    runtime: RuntimeArg,
    /// ONNX Runtime graph optimizations: none (reference semantics) or all (deployed kernels).
    #[arg(long, value_enum, default_value = "none")]
    ort_opt: OrtOptArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum QuantizeArg {
    Auto,
    All,
    Weights,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum CostModelArg {
    Measured,
    Profile,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CalibMethodArg {
    Minmax,
    Percentile,
    Entropy,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ActivationsArg {
    U8,
    S8,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum WeightsArg {
    Auto,
    S8,
    #[value(name = "s8-7bit")]
    S8SevenBit,
    U8,
    S4,
    U4,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RuntimeArg {
    Tract,
    Ort,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OrtOptArg {
    None,
    All,
}

#[derive(Args)]
struct ShapeArgs {
    /// Fix a dynamic graph input to a shape, e.g. x=1,3,224,224 (repeatable).
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    input_shapes: Vec<String>,
}

impl ShapeArgs {
    fn parse(&self) -> Result<Vec<(String, Vec<i64>)>> {
        self.input_shapes.iter().map(|spec| Ok(parse_input_shape(spec)?)).collect()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::VerificationFailed) => ExitCode::from(1),
        Err(error) => {
            eprintln!("pare: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints a report to stdout; a reader that stops early (`| head`) is not an error.
fn print_report(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// How a command that ran to the end came out.
enum Outcome {
    Success,
    VerificationFailed,
}

fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Verify(args) => return verify(args),
        Command::Inspect { model, shapes, json } => {
            let loaded = pipeline::load(&model, &shapes.parse()?)?;
            let report = inspect::inspect(&loaded.model);
            let text = if json { serde_json::to_string_pretty(&report)? + "\n" } else { inspect::table(&report) };
            print_report(&text)?;
        }
        Command::Optimize(args) => return optimize(*args),
        Command::Passes => print_report(&pare::passes::listing()?)?,
    }
    Ok(Outcome::Success)
}

fn runtime_choice(runtime: RuntimeArg, ort_opt: OrtOptArg) -> pare::runtime::RuntimeChoice {
    use pare::onnxruntime::GraphOptimization;
    use pare::runtime::RuntimeChoice;
    match (runtime, ort_opt) {
        (RuntimeArg::Tract, _) => RuntimeChoice::Tract,
        (RuntimeArg::Ort, OrtOptArg::None) => RuntimeChoice::Ort(GraphOptimization::None),
        (RuntimeArg::Ort, OrtOptArg::All) => RuntimeChoice::Ort(GraphOptimization::All),
    }
}

fn optimize(args: OptimizeArgs) -> Result<Outcome> {
    use pare::cost::{DeviceProfile, Objective};
    use pare::egraph::{Limits, Options};
    use pare::optimize_report::{self, OptimizeReport};
    use pare::runtime::Runtime;
    use pare::verify::Tolerance;

    let fixed = args.shapes.parse()?;
    let exclude = args
        .exclude
        .iter()
        .map(|text| text.parse::<pare::egraph::alternatives::Exclusion>().map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    let mut families = pipeline::parse_passes(&args.passes)?;
    if args.quantize.is_some() {
        families.push(pare::families::quantize::NAME.to_string());
    }
    if args.lowrank.is_some() {
        families.push(pare::families::lowrank::NAME.to_string());
    }
    let user_rules = args
        .rules
        .iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the rules", path.display()))?;
            Ok((path.display().to_string(), text))
        })
        .collect::<Result<Vec<_>>>()?;
    let profile = match &args.device_file {
        Some(path) => DeviceProfile::from_file(path)?,
        None => DeviceProfile::shipped(&args.device)?,
    };
    let target_opset = args.target_opset.unwrap_or(profile.max_opset);
    let opsets = pare::ir::opset::MIN_SOURCE_OPSET..=pare::ir::opset::MAX_TARGET_OPSET;
    if !opsets.contains(&target_opset) {
        anyhow::bail!(
            "--target-opset must be in {}..={}, not {target_opset}",
            pare::ir::opset::MIN_SOURCE_OPSET,
            pare::ir::opset::MAX_TARGET_OPSET
        );
    }
    let lowrank = args.lowrank.as_deref().map(|text| lowrank_settings(&args, text, &profile)).transpose()?;
    let lowrank_auto = lowrank.as_ref().is_some_and(|e| !e.forced);
    // Each enabled family's default budget (its budgeted mode) and broken-model bound (forced).
    let mut families_enabled: Vec<(&dyn pare::families::Family, bool)> = Vec::new();
    if let Some(mode) = args.quantize {
        families_enabled.push((&pare::families::quantize::Quantize, mode == QuantizeArg::Auto));
    }
    if lowrank.is_some() {
        families_enabled.push((&pare::families::lowrank::LowRank, lowrank_auto));
    }
    let budgeted = families_enabled.iter().any(|&(_, auto)| auto);
    let budget = match args.budget {
        Some(budget) if budget.is_nan() || budget < 0.0 => {
            anyhow::bail!("--budget must be a number >= 0 or inf, not {budget}")
        }
        Some(budget) => budget,
        None => families_enabled
            .iter()
            .filter(|&&(_, auto)| auto)
            .map(|(f, _)| f.default_budget())
            .reduce(f64::min)
            .unwrap_or(0.0),
    };
    let mut tolerance = Tolerance { rtol: args.rtol, atol: args.atol, max_rel_l2: args.max_rel_l2, min_top1: None };
    let no_tolerance_given = args.rtol.is_none() && args.atol.is_none() && args.max_rel_l2.is_none();
    if no_tolerance_given && budgeted && budget.is_finite() {
        // The probe error fits --budget; other samples may read a few times
        // higher (held-out quantization errors 1.3-3x the probe's).
        tolerance.max_rel_l2 = Some((VERIFY_BUDGET_MARGIN * budget).max(VERIFY_BUDGET_FLOOR));
    } else if no_tolerance_given && !families_enabled.is_empty() {
        // A forced mode is the user's accuracy choice: verification checks
        // the written model reproduces the error measured for it, and
        // catches a broken one (integer kernels, factors) beyond this.
        tolerance.max_rel_l2 = families_enabled.iter().map(|(f, _)| f.broken_rel_l2()).reduce(f64::max);
    } else if no_tolerance_given {
        // Exact rewrites reorder float arithmetic, which moves a few elements
        // of a steep output beyond verify's default (PP-OCR det on rendered
        // pages: 4 of 1.4 M sigmoid outputs off by 5e-5 at rel L2 2e-6); a
        // broken rewrite is off by far more.
        tolerance = Tolerance { rtol: Some(EXACT_RTOL), atol: Some(EXACT_ATOL), max_rel_l2: None, min_top1: None };
    }
    tolerance.validate()?;
    let options = Options {
        families,
        user_rules,
        limits: Limits {
            iterations: args.iter_limit,
            nodes: args.node_limit,
            time: std::time::Duration::from_secs(args.time_limit),
        },
        objective: match args.objective {
            ObjectiveArg::Latency => Objective::Latency,
            ObjectiveArg::Energy => Objective::Energy,
            ObjectiveArg::Size => Objective::Size,
        },
        budget,
        compression: None,
        target_opset: Some(target_opset),
        measured: None,
        profile,
    };

    if let Some(threads) = args.threads {
        pare::parallel::set_threads(threads as usize);
    }
    let loaded = pipeline::load(&args.input, &fixed)?;
    let mut options = options;
    let cost_cache = match &args.cost_cache {
        Some(path) => Some(
            pare::cost::cache::CostCache::open(path, args.cost_cache_frozen, pare::cost::cache::this_machine())?
                .shared(),
        ),
        None => None,
    };
    // Without samples, open dims run at guessed sizes, which may not suit the model.
    let guess = (args.calib.is_none() && pare::samples::has_open_dims(&loaded.model)).then(|| {
        let shapes = pare::samples::representative_shapes(&loaded.model).unwrap_or_default();
        format!(
            "the model's inputs leave dims open and no sample shows their size, so pare ran it at {}; \
             if it cannot run there, give --input-shape NAME=DIMS or --calib DIR",
            pare::samples::shapes_text(&shapes).join(", ")
        )
    });
    if args.cost_model == CostModelArg::Measured && options.objective == Objective::Latency {
        // The fused alternatives are priced by operator latencies timed in ONNX Runtime.
        let cache = cost_cache
            .clone()
            .unwrap_or_else(|| pare::cost::cache::CostCache::in_memory(pare::cost::cache::this_machine()).shared());
        let shapes = match &args.calib {
            Some(dir) => {
                let samples = pare::samples::from_folder(dir, &pare::samples::input_names(&loaded.model))?
                    .take(MEDIAN_SHAPE_SAMPLES)
                    .collect::<Result<Vec<_>, _>>()?;
                let tensors: Vec<_> = samples.into_iter().map(|sample| sample.inputs).collect();
                pare::samples::median_shapes(&tensors)
            }
            None => pare::samples::representative_shapes(&loaded.model).unwrap_or_default(),
        };
        options.measured = Some(pare::egraph::MeasuredCosts { cost_cache: cache, shapes });
    }
    let mut enabled = Vec::new();
    if let Some(mode) = args.quantize {
        enabled.push(quant_settings(&args, mode, &options.profile, &loaded.model)?);
    }
    enabled.extend(lowrank);
    if !enabled.is_empty() {
        let budgeted = enabled.iter().any(|e| !e.forced);
        let cache = cost_cache.clone().unwrap_or_else(|| {
            let machine = if args.cost_model == CostModelArg::Measured && budgeted {
                pare::cost::cache::this_machine()
            } else {
                String::new()
            };
            pare::cost::cache::CostCache::in_memory(machine).shared()
        });
        let shared = compression(&args, enabled, &loaded.model, &fixed, cache);
        let mut shared = at_guessed_shape(shared, &guess)?;
        shared.exclude = exclude;
        options.compression = Some(shared);
    }
    let had_external_data = loaded.had_external_data;
    let before = pipeline::summarize(&loaded.model, &options.profile);
    let original = loaded.model.clone();
    let optimized = pipeline::optimize(loaded.model, &args.input, &fixed, &options).map_err(anyhow::Error::from);
    let (optimized, engine) = at_guessed_shape(optimized, &guess)?;
    for warning in engine.iter().flat_map(|e| &e.warnings) {
        eprintln!("pare: warning: {warning}");
    }
    // The timings are kept whatever verification says of the model.
    let cost_cache = match &cost_cache {
        Some(cache) => {
            let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.save()?;
            Some(cache.summary())
        }
        None => None,
    };
    let after = pipeline::summarize(&optimized, &options.profile);
    let label = format!("{} (optimized)", args.input.display());
    let proto = pare::ir::export(optimized).with_context(|| label.clone())?;

    let verification = if args.no_verify || engine.is_none() {
        None
    } else {
        let choice = runtime_choice(args.runtime, args.ort_opt);
        let hint = "(pass --runtime ort, or --no-verify to skip verification)";
        let reference_proto = pare::ir::export(original.clone()).with_context(|| args.input.display().to_string())?;
        let mut reference = Runtime::from_model(&reference_proto, &args.input.display().to_string(), choice, &fixed)
            .with_context(|| format!("cannot verify {hint}"))?;
        let mut candidate =
            Runtime::from_model(&proto, &label, choice, &fixed).with_context(|| format!("cannot verify {hint}"))?;
        // Real samples when there are any (each at its own shape), else
        // seeded random ones at the representative shapes.
        let samples: Box<dyn Iterator<Item = Result<pare::samples::Sample, pare::samples::SampleError>>> =
            match &args.calib {
                Some(dir) => Box::new(
                    pare::samples::from_folder(dir, &pare::samples::input_names(&original))?.take(args.samples),
                ),
                None => {
                    let specs = pare::samples::representative_specs(&original)?;
                    Box::new(pare::samples::random(&specs, args.samples, args.seed)?.map(Ok))
                }
            };
        let verified = pare::verify::compare(&mut candidate, Some(&mut reference), samples, &tolerance, &label);
        let mut verified = at_guessed_shape(verified.map_err(anyhow::Error::from), &guess)?;
        verified.warn_if_degenerate(&original);
        // The written model must reproduce the output error measured for
        // the candidate it was written from.
        let probe = options.compression.as_ref().map_or(&[][..], |c| &c.probe[..]);
        if let Some(measured) = engine.as_ref().and_then(|e| e.probe_error).filter(|_| !probe.is_empty()) {
            match pipeline::probe_error(&reference_proto, &proto, &args.input, probe) {
                Ok(written) => {
                    let faithful = pare::verify::Faithful { measured, written, samples: probe.len() };
                    if !faithful.agrees() {
                        verified.failures.push(format!(
                            "the written model's output error on the {} probe samples is {written:.3e}, not the \
                             {measured:.3e} measured for the chosen candidate: the written model is not the one chosen",
                            probe.len()
                        ));
                        verified.passed = false;
                    }
                    verified.probe = Some(faithful);
                }
                Err(reason) => verified.warnings.push(format!("the probe samples could not run again: {reason}")),
            }
        }
        // A quantized model also needs its integer kernels to agree with its
        // reference semantics within the tolerance.
        let sections = engine.iter().flat_map(|e| &e.sections.0);
        for failure in sections.filter_map(|s| s.verification_failure(tolerance.max_rel_l2?)) {
            verified.failures.push(failure);
            verified.passed = false;
        }
        Some(verified)
    };
    let passed = verification.as_ref().is_none_or(|v| v.passed);
    let mut report = OptimizeReport::new(&options, before, after, engine, verification);
    report.cost_cache = cost_cache;
    for warning in report.verification.iter().flat_map(|v| &v.warnings) {
        eprintln!("pare: warning: {warning}");
    }
    let text = optimize_report::table(&report);
    if args.output.as_os_str() == "-" {
        eprint!("{text}");
    } else {
        print_report(&text)?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("{}: cannot write the report", path.display()))?;
    }
    if !passed {
        eprintln!("pare: verification failed; {} was not written", args.output.display());
        return Ok(Outcome::VerificationFailed);
    }
    let write_options = WriteOptions {
        external: if args.external_data {
            ExternalData::Always
        } else if args.no_external_data {
            ExternalData::Never
        } else {
            ExternalData::Auto
        },
        external_threshold: args.external_threshold,
        source_had_external_data: had_external_data,
        ..Default::default()
    };
    let written = pare::onnx::write_model(proto, &args.output, &write_options)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if args.output.as_os_str() != "-" {
        let external = written
            .external
            .map(|(path, size)| format!(" + {} ({})", path.display(), inspect::human_bytes(size)))
            .unwrap_or_default();
        eprintln!("wrote {} ({}){external}", args.output.display(), inspect::human_bytes(written.model_bytes));
    }
    Ok(Outcome::Success)
}

/// An error of a run at guessed input shapes, with the guess said beside it.
fn at_guessed_shape<T>(result: Result<T>, guess: &Option<String>) -> Result<T> {
    match guess {
        Some(guess) => result.context(guess.clone()),
        None => result,
    }
}

/// The default elementwise tolerance of exact rewrites.
const EXACT_RTOL: f64 = 1e-3;
const EXACT_ATOL: f64 = 1e-4;
/// Calibration samples whose median shape measured operator latencies are taken at.
const MEDIAN_SHAPE_SAMPLES: usize = 64;

/// A budgeted mode without a tolerance given verifies against this many
/// times `--budget` (0.1 at the default budget),
const VERIFY_BUDGET_MARGIN: f64 = 2.0;
/// and at least this: a budget of 0 keeps every layer float, whose exact
/// rewrites still reorder float arithmetic (PP-OCR det: rel L2 2e-6).
const VERIFY_BUDGET_FLOOR: f64 = 1e-3;

/// The `quant` family's settings from the flags, checked.
fn quant_settings(
    args: &OptimizeArgs,
    mode: QuantizeArg,
    profile: &pare::cost::DeviceProfile,
    model: &pare::ir::Model,
) -> Result<pare::families::Enabled> {
    use pare::families::quantize::{ActivationType, QuantMode, QuantSettings};

    let settings = QuantSettings {
        mode: if mode == QuantizeArg::Weights { QuantMode::WeightsOnly } else { QuantMode::Static },
        activations: match args.activations {
            ActivationsArg::U8 => ActivationType::Uint8,
            ActivationsArg::S8 => ActivationType::Int8,
        },
        per_channel: !args.per_tensor,
        reduced_range: args.weights == WeightsArg::S8SevenBit,
        unsigned_weights: matches!(args.weights, WeightsArg::U8 | WeightsArg::U4),
        weight_bits: if matches!(args.weights, WeightsArg::S4 | WeightsArg::U4) { 4 } else { 8 },
        block_size: args.block_size,
        // Means of random inputs say nothing of real data's.
        bias_correction: !args.no_bias_correction && args.calib.is_some(),
        // Signed weights where the runtime's kernels agree with its reference
        // semantics on the calibration data; unsigned in the layers that saturate.
        check_saturation: args.weights == WeightsArg::Auto && profile.int8_pairs_saturate,
    };
    if settings.mode == QuantMode::Static && (settings.weight_bits == 4 || settings.block_size.is_some()) {
        // No integer kernel takes 4-bit or block-scaled weights with quantized activations.
        anyhow::bail!("--weights s4|u4 and --block-size need --quantize weights (float compute)");
    }
    let target = args.target_opset.unwrap_or(profile.max_opset);
    let needed = settings.opset().max(pare::families::quantize::QUANT_OPSET);
    if target < needed && model.opset("").unwrap_or(0) < needed {
        anyhow::bail!("--quantize needs opset {needed} (QDQ with per-axis scales), above --target-opset {target}");
    }
    if args.block_size.is_some_and(|b| b < 2) {
        anyhow::bail!("--block-size must be at least 2");
    }
    Ok(pare::families::Enabled {
        family: &pare::families::quantize::Quantize,
        settings: pare::families::Settings(std::sync::Arc::new(settings)),
        forced: mode != QuantizeArg::Auto,
    })
}

/// The `lowrank` family's settings from `--lowrank auto|R` and
/// `--lowrank-form`: data-aware factors when --calib gives real data.
fn lowrank_settings(
    args: &OptimizeArgs,
    text: &str,
    profile: &pare::cost::DeviceProfile,
) -> Result<pare::families::Enabled> {
    use pare::families::lowrank::{LowRank, LowrankSettings};
    let data_aware = args.calib.is_some() && !args.plain_svd;
    let settings = LowrankSettings::parse(text, &args.lowrank_form, profile.channel_multiple, data_aware)
        .map_err(anyhow::Error::msg)?;
    let forced = settings.fixed.is_some();
    Ok(pare::families::Enabled {
        family: &LowRank,
        settings: pare::families::Settings(std::sync::Arc::new(settings)),
        forced,
    })
}

/// What the enabled families share: calibrates the model once for the
/// statistics they ask for (random seeded inputs when they need ranges and
/// no --calib is given; none when nothing needs data), keeps probe samples,
/// and the representative shapes latencies are measured at.
fn compression(
    args: &OptimizeArgs,
    enabled: Vec<pare::families::Enabled>,
    model: &pare::ir::Model,
    fixed: &[(String, Vec<i64>)],
    cost_cache: pare::cost::cache::SharedCostCache,
) -> Result<pare::egraph::Compression> {
    use pare::eval::calibrate::RangeMethod;

    if !(args.percentile > 0.0 && args.percentile <= 100.0) {
        anyhow::bail!("--percentile must be in (0, 100], not {}", args.percentile);
    }
    let method = match args.calib_method {
        CalibMethodArg::Minmax => RangeMethod::MinMax,
        CalibMethodArg::Percentile => RangeMethod::Percentile(args.percentile),
        CalibMethodArg::Entropy => RangeMethod::Entropy,
    };
    let mut request = pare::families::StatisticsRequest::default();
    for e in &enabled {
        request.merge(e.family.statistics(e, model));
    }
    // A budgeted family measures each alternative on probe samples, held out when there are enough.
    let budgeted = enabled.iter().any(|e| !e.forced);
    request.held_out_probe = budgeted;
    let needs_ranges = !request.ranges.is_empty() && needs_activation_ranges(&enabled);
    let source = match &args.calib {
        Some(dir) if needs_ranges || !request.means.is_empty() || !request.second_moments.is_empty() || budgeted => {
            Some(pipeline::CalibrationSource::Folder(dir.clone()))
        }
        None if needs_ranges || budgeted => {
            eprintln!(
                "pare: warning: no --calib DIR given; calibrating on {} seeded random inputs, \
                 so activation ranges (and accuracy) will not match real data",
                args.calib_samples
            );
            Some(pipeline::CalibrationSource::Random { count: args.calib_samples, seed: args.seed })
        }
        _ => None,
    };
    let calibrated = match source {
        Some(source) => Some(pipeline::calibrate(model, &args.input, fixed, &source, method, &request)?),
        None => None,
    };
    // Where the model leaves dims open, latencies are measured at the
    // median calibration sample's shapes (or the guessed ones).
    let representative = match &calibrated {
        Some(calibrated) => calibrated.representative.clone(),
        None => pare::samples::representative_shapes(model)?,
    };
    let (ranges, means, second_moments, probe, calibration) = match calibrated {
        Some(calibrated) => {
            let summary = pare::eval::statistics::CalibrationSummary {
                source: args
                    .calib
                    .as_ref()
                    .map_or_else(|| pare::eval::statistics::RANDOM_SOURCE.into(), |dir| dir.display().to_string()),
                samples: calibrated.calibration.samples,
                method,
            };
            let c = calibrated.calibration;
            (c.ranges, c.means, c.second_moments, calibrated.probe, Some(summary))
        }
        None => Default::default(),
    };
    Ok(pare::egraph::Compression {
        enabled,
        ranges,
        means,
        second_moments,
        measure: args.cost_model == CostModelArg::Measured,
        probe,
        measured_errors: Default::default(),
        exclude: Vec::new(),
        calibration,
        representative,
        cost_cache,
        pinned: None,
    })
}

/// Whether an enabled family computes on integer activations (static
/// quantization), whose ranges only calibration data gives.
fn needs_activation_ranges(enabled: &[pare::families::Enabled]) -> bool {
    use pare::families::quantize::{QuantMode, QuantSettings};
    enabled.iter().filter_map(|e| e.settings::<QuantSettings>()).any(|s| s.mode == QuantMode::Static)
}

fn verify(args: VerifyArgs) -> Result<Outcome> {
    use pare::runtime::Runtime;
    use pare::samples;
    use pare::verify::Tolerance;

    let tolerance =
        Tolerance { rtol: args.rtol, atol: args.atol, max_rel_l2: args.max_rel_l2, min_top1: args.min_top1 };
    tolerance.validate()?;
    let fixed = args.shapes.parse()?;
    let (reference_path, candidate_path) = match (args.models.as_slice(), &args.golden) {
        ([candidate], Some(_)) => (None, candidate.clone()),
        ([reference, candidate], None) => (Some(reference.clone()), candidate.clone()),
        ([_], None) => anyhow::bail!("give REFERENCE and CANDIDATE, or CANDIDATE with --golden DIR"),
        (_, _) => anyhow::bail!("with --golden DIR give only the CANDIDATE model"),
    };
    let choice = runtime_choice(args.runtime, args.ort_opt);

    // Both models load before any sample is made, so a bad model is reported first.
    let mut reference = match &reference_path {
        Some(path) => Some(Runtime::load(path, choice, &fixed)?),
        None => None,
    };
    let candidate_model = pipeline::load(&candidate_path, &fixed)?.model;
    let mut candidate = Runtime::load(&candidate_path, choice, &fixed)?;
    let sample_source: Box<dyn Iterator<Item = Result<samples::Sample, samples::SampleError>>> =
        match (&args.inputs, &args.golden) {
            (Some(dir), _) | (None, Some(dir)) => {
                Box::new(samples::from_folder(dir, &samples::input_names(&candidate_model))?)
            }
            (None, None) => {
                let specs = samples::representative_specs(&candidate_model)?;
                Box::new(samples::random(&specs, args.samples, args.seed)?.map(Ok))
            }
        };

    let label = candidate_path.display().to_string();
    let mut report = pare::verify::compare(&mut candidate, reference.as_mut(), sample_source, &tolerance, &label)?;
    report.warn_if_degenerate(&candidate_model);
    for warning in &report.warnings {
        eprintln!("pare: warning: {warning}");
    }
    let text = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { pare::verify::table(&report) };
    print_report(&text)?;
    Ok(if report.passed { Outcome::Success } else { Outcome::VerificationFailed })
}
