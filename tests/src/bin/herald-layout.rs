//! `herald-layout`: prints the README's layout table generated from the tree, or with
//! `--write` puts it into `README.md` (between its layout markers).

use anyhow::Context;
use herald_tests::layout;

fn main() -> anyhow::Result<()> {
    let root = layout::repo_root();
    let table = layout::table(&root)?;
    if std::env::args().nth(1).as_deref() == Some("--write") {
        let path = root.join("README.md");
        let readme = std::fs::read_to_string(&path).context("reading README.md")?;
        std::fs::write(&path, layout::with_table(&readme, &table)?).context("writing README.md")?;
    } else {
        print!("{table}");
    }
    Ok(())
}
