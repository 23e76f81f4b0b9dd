//! The README's layout table is the tree's: regenerate it with
//! `cargo run -q -p herald-tests --bin herald-layout -- --write` when modules change.

use herald_tests::layout;

#[test]
fn readme_layout_matches_the_tree() -> anyhow::Result<()> {
    let root = layout::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let expected = layout::with_table(&readme, &layout::table(&root)?)?;
    assert!(
        readme == expected,
        "README.md's layout table is stale: run `cargo run -q -p herald-tests --bin herald-layout -- --write`"
    );
    Ok(())
}
