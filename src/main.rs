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
    Optimize {
        /// The input model (a path, or - for stdin).
        input: PathBuf,
        /// Where to write the result (a path, or - for stdout).
        #[arg(short, long)]
        output: PathBuf,
        /// Pass families to run: none, all, or a comma-separated list.
        #[arg(long, default_value = "all")]
        passes: String,
        #[command(flatten)]
        shapes: ShapeArgs,
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
    },
    /// Compare a candidate model's outputs with a reference model's or with golden outputs.
    Verify(VerifyArgs),
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
        Command::Optimize { input, output, passes, shapes, external_data, no_external_data, external_threshold } => {
            let families = pipeline::parse_passes(&passes)?;
            let loaded = pipeline::load(&input, &shapes.parse()?)?;
            debug_assert!(families.is_empty(), "no pass family is implemented yet");
            let options = WriteOptions {
                external: if external_data {
                    ExternalData::Always
                } else if no_external_data {
                    ExternalData::Never
                } else {
                    ExternalData::Auto
                },
                external_threshold,
                source_had_external_data: loaded.had_external_data,
                ..Default::default()
            };
            let written = pipeline::save(loaded.model, &output, &options)
                .with_context(|| format!("writing {}", output.display()))?;
            if output.as_os_str() != "-" {
                let external = written
                    .external
                    .map(|(path, size)| format!(" + {} ({})", path.display(), inspect::human_bytes(size)))
                    .unwrap_or_default();
                eprintln!("wrote {} ({}){external}", output.display(), inspect::human_bytes(written.model_bytes));
            }
        }
    }
    Ok(Outcome::Success)
}

fn verify(args: VerifyArgs) -> Result<Outcome> {
    use pare::onnxruntime::GraphOptimization;
    use pare::runtime::{Runtime, RuntimeChoice};
    use pare::samples;
    use pare::verify::{OutputStats, Report, TensorView, Tolerance};

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
    let choice = match (args.runtime, args.ort_opt) {
        (RuntimeArg::Tract, _) => RuntimeChoice::Tract,
        (RuntimeArg::Ort, OrtOptArg::None) => RuntimeChoice::Ort(GraphOptimization::None),
        (RuntimeArg::Ort, OrtOptArg::All) => RuntimeChoice::Ort(GraphOptimization::All),
    };

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
                let specs = samples::input_specs(&candidate_model)?;
                Box::new(samples::random(&specs, args.samples, args.seed)?.map(Ok))
            }
        };

    let mut stats: Vec<OutputStats> = Vec::new();
    for (index, sample) in sample_source.enumerate() {
        let sample = sample?;
        let produced = candidate.run(&sample.inputs)?;
        let expected = match reference.as_mut() {
            Some(reference) => reference.run(&sample.inputs)?,
            None if sample.expected.is_empty() => {
                anyhow::bail!("sample {index} of --golden has no output_N.pb to compare with")
            }
            None => sample.expected,
        };
        if expected.len() != produced.len() {
            anyhow::bail!(
                "{}: the candidate has {} outputs, the reference {}",
                candidate_path.display(),
                produced.len(),
                expected.len()
            );
        }
        for (position, (want, got)) in expected.iter().zip(&produced).enumerate() {
            // Outputs pair up by position; the name shown is the candidate's.
            let name = if got.name.is_empty() { want.name.as_str() } else { got.name.as_str() };
            if stats.len() <= position {
                let dtype = got.tensor.dtype().map_or("unknown".to_string(), |d| d.to_string());
                stats.push(OutputStats::new(name, &dtype, &tolerance)?);
            }
            let numbers = |t: &pare::eval::NamedTensor| {
                t.tensor.to_f64().ok_or_else(|| anyhow::anyhow!("output '{}' holds no numbers to compare", t.name))
            };
            let (want_values, got_values) = (numbers(want)?, numbers(got)?);
            stats[position].add(
                TensorView::new(&want_values, want.tensor.shape()),
                TensorView::new(&got_values, got.tensor.shape()),
            )?;
        }
    }
    let report = Report::new(tolerance, stats.iter().map(OutputStats::report).collect());
    let text = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { pare::verify::table(&report) };
    print_report(&text)?;
    Ok(if report.passed { Outcome::Success } else { Outcome::VerificationFailed })
}
