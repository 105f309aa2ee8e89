//! `gptq`: GPT-2 on the CPU from one GGUF file. Completion, interactive
//! sessions, perplexity, benchmarks, file info and tokenization, with
//! llama.cpp's flag names.

mod bench;
mod chat;
mod complete;
mod imatrix;
mod info;
mod perplexity;
mod report;
mod timing;
mod tokenize;

// The library's modules, under the names the subcommands use (`crate::args`).
use gptq_cli::{args, load, model_path, serve};

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

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
    /// Complete a prompt, streaming the continuation to stdout (`-i`: an
    /// interactive session, as `gptq chat`).
    Complete(complete::CompleteArgs),
    /// Interactive session: extend the text, the model continues it (`/help`
    /// inside). With stdin not a terminal: complete what it holds and exit.
    Chat(chat::ChatArgs),
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
    let result = match cli.command {
        None => run_complete(cli.complete, None),
        Some(Command::Complete(a)) => run_complete(a, Some("complete")),
        Some(Command::Chat(a)) => run_chat(a, Some("chat")),
        Some(Command::Perplexity(a)) => perplexity::run(&a),
        Some(Command::Imatrix(a)) => imatrix::run(&a),
        Some(Command::Bench(a)) => bench::run(&a),
        Some(Command::Serve(a)) => serve::run(&a),
        Some(Command::Info(a)) => info::run(&a),
        Some(Command::Tokenize(a)) => tokenize::run(&a),
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
            eprintln!("gptq: error: {}", report::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `gptq complete` (or `gptq` alone): a one-shot completion, or with `-i` the
/// interactive session. Flags of the other mode are refused.
fn run_complete(args: complete::CompleteArgs, subcommand: Option<&str>) -> anyhow::Result<()> {
    if args.interactive {
        if let Some(flag) = args.completion_flags_given().first() {
            usage_error(
                subcommand,
                format!(
                    "{flag} is for a one-shot completion; an interactive session (-i) does not use it"
                ),
            );
        }
        let chat = chat::ChatArgs {
            model: args.model,
            prompt: args.prompt,
            sampling: args.sampling,
            generation: args.generation,
            session: args.session,
        };
        return run_chat(chat, subcommand);
    }
    if let Some(flag) = args.session.given().first() {
        usage_error(
            subcommand,
            format!("{flag} is for an interactive session: add -i (or use gptq chat)"),
        );
    }
    complete::run(&args)
}

/// `gptq chat`: refuses the line editor's flags when there is no terminal to
/// edit lines on.
fn run_chat(args: chat::ChatArgs, subcommand: Option<&str>) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal()
        && let Some(flag) = args.session.terminal_flags_given().first()
    {
        usage_error(
            subcommand,
            format!(
                "{flag} is for a session at a terminal; stdin is not a terminal, so the input is read as one prompt"
            ),
        );
    }
    chat::run(&args)
}

/// Exits with clap's usage error (status 2, the usage of `subcommand`).
fn usage_error(subcommand: Option<&str>, msg: String) -> ! {
    let mut cli = Cli::command();
    cli.build();
    if let Some(sub) = subcommand.and_then(|s| cli.find_subcommand_mut(s)) {
        sub.error(ErrorKind::ArgumentConflict, msg).exit()
    }
    cli.error(ErrorKind::ArgumentConflict, msg).exit()
}
