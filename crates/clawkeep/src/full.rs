//! `clawkeep-full`: every command (see the crate's docs).

fn main() -> std::process::ExitCode {
    clawkeep::full_main()
}
