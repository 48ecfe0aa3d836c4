//! The SQL migrations are compiled into the binary (`refinery::embed_migrations!`);
//! rebuild when one is added or changed, not only when Rust source changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
