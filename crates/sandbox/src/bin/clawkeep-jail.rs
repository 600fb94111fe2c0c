//! clawkeep-jail: the sandbox helper as its own small binary (the
//! Firecracker jailer's shape). `clawkeep run` re-executes it — rather than
//! the much larger clawkeep binary — for every jail, which keeps the exec on
//! the start-up path short and the helper's code auditable on its own.

fn main() {
    std::process::exit(clawkeep_sandbox::helper::main());
}
