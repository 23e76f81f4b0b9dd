//! One Markdown table printer for the benchmark reports: a header with each column's
//! alignment, then rows of cells.

/// How a column is aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A Markdown table under construction.
#[derive(Clone, Debug)]
pub struct Table {
    header: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            header: columns.iter().map(|(c, a)| (c.to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are left empty, extra ones dropped).
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) -> &mut Table {
        let mut cells: Vec<String> = cells.into_iter().collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
        self
    }

    /// The table, ending in a blank line.
    pub fn render(&self) -> String {
        let line = |cells: Vec<&str>| format!("| {} |\n", cells.join(" | "));
        let mut out = line(self.header.iter().map(|(c, _)| c.as_str()).collect());
        let rule: Vec<&str> = self
            .header
            .iter()
            .map(|(_, a)| match a {
                Align::Left => "---",
                Align::Right => "---:",
            })
            .collect();
        out.push_str(&format!("|{}|\n", rule.join("|")));
        for row in &self.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown() {
        let mut t = Table::new(&[("node", Align::Left), ("MiB", Align::Right)]);
        t.row(["hl-node1".to_string(), "12.5".to_string()]);
        t.row(["hl-node2".to_string()]);
        assert_eq!(
            t.render(),
            "| node | MiB |\n|---|---:|\n| hl-node1 | 12.5 |\n| hl-node2 |  |\n\n"
        );
    }
}
