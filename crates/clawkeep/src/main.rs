//! `clawkeep`: the launcher (see the crate's docs).

fn main() -> std::process::ExitCode {
    clawkeep::launcher_main()
}
