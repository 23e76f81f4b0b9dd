//! `kubectl-herald`: the same tool as a kubectl plugin (`kubectl herald status`).

fn main() -> std::process::ExitCode {
    herald_cli::cli::main("kubectl herald")
}
