//! The `coercion` command-line tool: see [`coercion::cli`].

fn main() -> std::process::ExitCode {
    coercion::cli::main()
}
