//! The Prometheus text exposition (as `/metrics` serves it) parsed into samples: a metric
//! name, its labels and a value. Comments, blank lines and lines that do not parse are left
//! out; label values may hold escaped quotes.

use std::collections::BTreeMap;

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name (with `_total`, `_sum`, … as exposed).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples(pub Vec<Sample>);

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().trim_start_matches(',').trim();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

impl Samples {
    /// Parses a scrape.
    pub fn parse(text: &str) -> Samples {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|line| {
                let (head, value) = line.rsplit_once(' ')?;
                let value = value.trim().parse::<f64>().ok()?;
                let (name, labels) = match head.split_once('{') {
                    None => (head.trim().to_string(), BTreeMap::new()),
                    Some((name, rest)) => (
                        name.to_string(),
                        parse_labels(rest.trim_end().trim_end_matches('}')),
                    ),
                };
                Some(Sample {
                    name,
                    labels,
                    value,
                })
            })
            .collect();
        Samples(samples)
    }

    /// Every sample of `name` whose labels include all of `with`.
    pub fn of<'a>(
        &'a self,
        name: &'a str,
        with: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples of `name` whose labels include all of `with` (0 when none).
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.of(name, with).map(|s| s.value).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP herald_controller_api_writes API writes by kind and result.
# TYPE herald_controller_api_writes counter
herald_controller_api_writes_total{kind="service_status",result="ok"} 12
herald_controller_api_writes_total{kind="service_status",result="error"} 1
herald_controller_api_writes_total{kind="event",result="ok"} 3
herald_controller_leader 1
herald_speaker_announced{ip="2001:db8::1"} 1
odd{note="say \"hi\", ok"} 2.5
not a sample
# EOF
"#;

    #[test]
    fn parses_names_labels_and_values() {
        let s = Samples::parse(SCRAPE);
        assert_eq!(s.0.len(), 6);
        assert_eq!(s.sum("herald_controller_api_writes_total", &[]), 16.0);
        assert_eq!(
            s.sum(
                "herald_controller_api_writes_total",
                &[("kind", "service_status"), ("result", "ok")]
            ),
            12.0
        );
        assert_eq!(s.sum("herald_controller_leader", &[]), 1.0);
        assert_eq!(s.sum("missing", &[]), 0.0);
        let ip = s.of("herald_speaker_announced", &[]).next().unwrap();
        assert_eq!(ip.labels["ip"], "2001:db8::1");
        assert_eq!(
            s.of("odd", &[]).next().unwrap().labels["note"],
            r#"say "hi", ok"#
        );
    }
}
