//! The `keyless` binary: parse arguments, hand over to the library.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    keyless_cli::cli::main()
}
