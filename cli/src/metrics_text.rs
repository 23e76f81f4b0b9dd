//! Reading the Prometheus text exposition of Herald's own `/metrics` (what `herald status`
//! learns from a speaker it can reach): sample lines only, `name{label="value",…} number`.

use std::collections::BTreeMap;

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name as exposed (with any `_total` suffix).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Why a line is not a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

/// Parses every sample; comments (`# HELP`, `# TYPE`, `# EOF`) and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|why| ParseError { line: i + 1, why })?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next().ok_or("unterminated labels")?;
            match c {
                '}' => {
                    rest = &body[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return Err(format!("label {key} has no quoted value"));
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next().ok_or("unterminated label value")?;
                        match c {
                            '"' => break,
                            '\\' => match chars.next().map(|(_, c)| c) {
                                Some('n') => value.push('\n'),
                                Some(other) => value.push(other),
                                None => return Err("unterminated escape".into()),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    let value_text = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("{v:?} is not a number"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// What a speaker's metrics say about it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SpeakerMetrics {
    /// Live members it hears, itself included.
    pub members: Option<i64>,
    /// Whether it hears a majority and may announce.
    pub quorum: Option<bool>,
    /// Interfaces with packet sockets open (0: it cannot answer anywhere).
    pub interfaces_answering: Option<i64>,
    /// The IPs it announces.
    pub announced: Vec<String>,
    /// Foreign MACs seen answering for its IPs, per IP.
    pub conflicts: BTreeMap<String, u64>,
}

impl SpeakerMetrics {
    /// Reads the speaker's exposition.
    pub fn from_text(text: &str) -> Result<SpeakerMetrics, ParseError> {
        let mut m = SpeakerMetrics::default();
        for sample in parse(text)? {
            let ip = sample.labels.get("ip").cloned();
            match (sample.name.as_str(), ip) {
                ("herald_speaker_members", _) => m.members = Some(sample.value as i64),
                ("herald_speaker_quorum", _) => m.quorum = Some(sample.value >= 1.0),
                ("herald_speaker_interfaces_answering", _) => {
                    m.interfaces_answering = Some(sample.value as i64)
                }
                ("herald_speaker_announced", Some(ip)) if sample.value >= 1.0 => {
                    m.announced.push(ip)
                }
                ("herald_speaker_conflicts_total", Some(ip)) if sample.value > 0.0 => {
                    m.conflicts.insert(ip, sample.value as u64);
                }
                _ => {}
            }
        }
        m.announced.sort();
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics_samples() {
        let text = "# HELP herald_speaker_quorum 1 while …\n# TYPE herald_speaker_quorum gauge\nherald_speaker_quorum 1\nherald_speaker_members 3\nherald_speaker_interfaces_answering 2\nherald_speaker_announced{ip=\"192.0.2.5\",interface=\"eth0\"} 1\nherald_speaker_announced{ip=\"2001:db8::5\",interface=\"eth0,eth1\"} 1\nherald_speaker_conflicts_total{ip=\"192.0.2.5\"} 2\nx{a=\"q\\\"uote\",b=\"\"} 1.5e3\n# EOF\n";
        let samples = parse(text).expect("parses");
        assert_eq!(samples.len(), 7);
        assert_eq!(samples[6].labels["a"], "q\"uote");
        assert_eq!(samples[6].labels["b"], "");
        assert_eq!(samples[6].value, 1500.0);
        let m = SpeakerMetrics::from_text(text).expect("parses");
        assert_eq!(m.members, Some(3));
        assert_eq!(m.quorum, Some(true));
        assert_eq!(m.interfaces_answering, Some(2));
        assert_eq!(m.announced, ["192.0.2.5", "2001:db8::5"]);
        assert_eq!(m.conflicts["192.0.2.5"], 2);
    }

    #[test]
    fn garbage_is_an_error_naming_the_line() {
        for bad in ["a{b=c} 1", "a{b=\"c\" 1", "a", "a{} x"] {
            let e = parse(&format!("# fine\n{bad}\n")).expect_err(bad);
            assert_eq!(e.line, 2, "{bad}: {e}");
        }
    }
}
