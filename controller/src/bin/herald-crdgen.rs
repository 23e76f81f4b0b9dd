//! Prints the CustomResourceDefinitions as YAML: `cargo run --bin herald-crdgen > deploy/crds/herald.yaml`.
//! A test (`tests/crds.rs`) fails when the committed file differs.

fn main() -> anyhow::Result<()> {
    print!("{}", herald_controller::crds::render()?);
    Ok(())
}
