//! `herald`: the operator's command-line tool.

fn main() -> std::process::ExitCode {
    herald_cli::cli::main("herald")
}
