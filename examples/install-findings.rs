//! Prints what `overlimit check` would report about the local-mail install
//! (`overlimit::local::install::findings`), one finding a line: a stand-in
//! for the tests until check shows them itself.

fn main() {
    for f in overlimit::local::install::findings() {
        println!("{f}");
    }
}
