//! clawkeep-shim: installed in the jail under the name of every gated
//! command. It asks the gate to run the command and becomes it (see
//! `clawkeep_shim::client`).

fn main() {
    clawkeep_shim::client::run("this jail")
}
