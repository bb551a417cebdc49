//! `usersvc`: see `usersvc --help`. Everything is in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    usersvc::cli::main()
}
