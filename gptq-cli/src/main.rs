//! `gptq`: GPT-2 on the CPU from one GGUF file. Completion, perplexity, file
//! info and tokenization, with llama.cpp's flag names.

mod args;
mod bench;
mod chat;
mod complete;
mod imatrix;
mod info;
mod load;
mod model_path;
mod perplexity;
mod serve;
mod timing;
mod tokenize;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// GPT-2 inference on the CPU from one GGUF file.
///
/// Without a subcommand, `gptq -m FILE -p TEXT` completes the prompt.
#[derive(Debug, Parser)]
#[command(name = "gptq", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    complete: complete::CompleteArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Complete a prompt, streaming the continuation to stdout.
    Complete(complete::CompleteArgs),
    /// Interactive session: extend the text, the model continues it (`/help`
    /// inside). With stdin not a terminal: complete what it holds and exit.
    Chat(complete::CompleteArgs),
    /// Perplexity of a text file (llama-perplexity's method).
    Perplexity(perplexity::PerplexityArgs),
    /// Importance matrix of the model over a text (llama-imatrix's method and
    /// file format).
    Imatrix(imatrix::ImatrixArgs),
    /// Prompt-processing and generation speed (llama-bench's pp and tg).
    Bench(bench::BenchArgs),
    /// OpenAI-compatible HTTP server with continuous batching (llama-server's
    /// flags and endpoints).
    Serve(serve::ServeArgs),
    /// Metadata and tensors of a GGUF file.
    Info(info::InfoArgs),
    /// Token ids of a text.
    Tokenize(tokenize::TokenizeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(serve::llama_flags(std::env::args_os()));
    let result = match &cli.command {
        None => complete::run(&cli.complete),
        Some(Command::Complete(a)) => complete::run(a),
        Some(Command::Chat(a)) => chat::run(a),
        Some(Command::Perplexity(a)) => perplexity::run(a),
        Some(Command::Imatrix(a)) => imatrix::run(a),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::Serve(a)) => serve::run(a),
        Some(Command::Info(a)) => info::run(a),
        Some(Command::Tokenize(a)) => tokenize::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Broken pipe (e.g. `gptq ... | head`) is not an error worth a message.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("gptq: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
