//! The `pare` command line: `inspect` a model, `optimize` it (for now the
//! lossless round trip, `--passes none`). Exit codes: 0 success, 2 bad input or
//! usage (with a message naming the file and node), nothing written on error.

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
        Ok(()) => ExitCode::SUCCESS,
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

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { model, shapes, json } => {
            let loaded = pipeline::load(&model, &shapes.parse()?)?;
            let report = inspect::inspect(&loaded.model);
            let text =
                if json { serde_json::to_string_pretty(&report)? + "\n" } else { inspect::table(&report) };
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
    Ok(())
}
