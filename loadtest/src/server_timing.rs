//! The service's `Server-Timing` header, summed over a run: where the time of a request went
//! (SQL, Redis round trips, DataLoader batch windows, serialisation, the service's total), as
//! the service itself measured it.
//!
//! Each measured answer's header is parsed where it arrives (the engine keeps the header's
//! bytes, not a copy) and added to the client's [`TimingSums`]: one entry per metric name,
//! allocated the first time a client sees that name, so the hot path allocates nothing.
//! The report divides the sums by the answers of the run: the mean per request.
//!
//! The header is the W3C one: `name;dur=1.23;desc="2 queries", name2;dur=0.5`. Anything
//! malformed (not UTF-8, an unterminated quote, a `dur` that is not a non-negative number, a
//! name that is not a token) loses its entry, or the header if it cannot be split, and
//! never stops the run. An entry without `dur` counts 0 ms, as the specification says. A
//! `desc` that starts with a number (`"2 queries"`) also adds that number to the metric's
//! count.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One metric's totals over some answers.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSum {
    pub name: String,
    /// Sum of `dur`, milliseconds.
    pub dur_ms: f64,
    /// Sum of the numbers their `desc` started with.
    pub count: f64,
    /// Answers whose entry had such a number.
    pub counted: u64,
}

/// Every metric's totals, in first-seen order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimingSums {
    metrics: Vec<MetricSum>,
}

impl TimingSums {
    /// Adds the entries of one answer's header.
    pub fn add_header(&mut self, header: &[u8]) {
        for entry in entries(header) {
            self.add(entry.name, entry.dur_ms, entry.count);
        }
    }

    fn add(&mut self, name: &str, dur_ms: f64, count: Option<f64>) {
        let at = match self.metrics.iter().position(|m| m.name == name) {
            Some(at) => at,
            None => {
                self.metrics.push(MetricSum {
                    name: name.to_owned(),
                    dur_ms: 0.0,
                    count: 0.0,
                    counted: 0,
                });
                self.metrics.len() - 1
            }
        };
        let metric = &mut self.metrics[at];
        metric.dur_ms += dur_ms;
        if let Some(count) = count {
            metric.count += count;
            metric.counted += 1;
        }
    }

    /// Adds another client's sums.
    pub fn merge(&mut self, other: &Self) {
        for metric in &other.metrics {
            self.add(&metric.name, metric.dur_ms, None);
            if let Some(mine) = self.metrics.iter_mut().find(|m| m.name == metric.name) {
                mine.count += metric.count;
                mine.counted += metric.counted;
            }
        }
    }

    pub fn metrics(&self) -> &[MetricSum] {
        &self.metrics
    }

    /// Each metric's mean per answer, over `answers` answers (those without the entry count
    /// as 0); empty without answers.
    pub fn means(&self, answers: u64) -> BTreeMap<String, TimingMean> {
        if answers == 0 {
            return BTreeMap::new();
        }
        let n = answers as f64;
        self.metrics
            .iter()
            .map(|m| {
                let mean = TimingMean {
                    ms: m.dur_ms / n,
                    count: (m.counted > 0).then(|| m.count / n),
                };
                (m.name.clone(), mean)
            })
            .collect()
    }
}

/// One metric's mean per request over a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimingMean {
    /// Mean `dur`, milliseconds per request.
    pub ms: f64,
    /// Mean of the number its `desc` gives (queries, round trips, batches) per request;
    /// `None` when the metric has no such number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<f64>,
}

/// One entry of a header, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub dur_ms: f64,
    pub count: Option<f64>,
}

/// The well-formed entries of `header`; nothing when it is not UTF-8.
pub fn entries(header: &[u8]) -> impl Iterator<Item = Entry<'_>> {
    let text = std::str::from_utf8(header).unwrap_or_default();
    Split::new(text, b',').filter_map(entry)
}

fn entry(text: &str) -> Option<Entry<'_>> {
    let mut params = Split::new(text, b';');
    let name = params.next()?.trim();
    if !is_token(name) {
        return None;
    }
    let (mut dur, mut desc) = (None, None);
    for param in params {
        let (key, value) = param.split_once('=')?;
        let value = unquote(value.trim())?;
        let key = key.trim();
        if key.eq_ignore_ascii_case("dur") && dur.is_none() {
            dur = Some(value);
        } else if key.eq_ignore_ascii_case("desc") && desc.is_none() {
            desc = Some(value);
        }
    }
    let dur_ms = match dur {
        Some(dur) => dur
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite() && *d >= 0.0)?,
        None => 0.0,
    };
    let count = desc.and_then(|desc| {
        let end = desc
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(desc.len());
        desc[..end].parse::<f64>().ok().filter(|c| c.is_finite())
    });
    Some(Entry {
        name,
        dur_ms,
        count,
    })
}

/// RFC 9110's token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The content of a quoted string (escapes left as they are: only a count is read from it),
/// or a bare value; `None` for an unterminated quote.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// Splits on `sep` outside quoted strings (a `desc` may hold commas and semicolons).
struct Split<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Split<'a> {
    fn new(text: &'a str, sep: u8) -> Self {
        Self {
            rest: Some(text),
            sep,
        }
    }
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, b) in text.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == self.sep && !quoted => {
                    // `sep` is ASCII, so `i` and `i + 1` are character boundaries.
                    self.rest = Some(&text[i + 1..]);
                    return Some(&text[..i]);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(header: &str) -> Vec<(&str, f64, Option<f64>)> {
        entries(header.as_bytes())
            .map(|e| (e.name, e.dur_ms, e.count))
            .collect()
    }

    #[test]
    fn the_services_header_parses_into_durations_and_counts() {
        assert_eq!(
            parsed(
                "db;dur=1.23;desc=\"2 queries\", cache;dur=0.31;desc=\"1 round trip\", batch;dur=20.1, ser;dur=0.05, total;dur=23.4"
            ),
            [
                ("db", 1.23, Some(2.0)),
                ("cache", 0.31, Some(1.0)),
                ("batch", 20.1, None),
                ("ser", 0.05, None),
                ("total", 23.4, None),
            ]
        );
    }

    #[test]
    fn other_servers_spellings_parse_too() {
        assert_eq!(
            parsed(
                "cdn-cache;desc=HIT,edge;DUR=2, app ; dur = 3 ; desc=\"a, b; c\",db;desc=7;dur=1"
            ),
            [
                ("cdn-cache", 0.0, None),
                ("edge", 2.0, None),
                ("app", 3.0, None),
                ("db", 1.0, Some(7.0)),
            ],
            "no dur is 0, names and params are trimmed, quoted separators stay in their value"
        );
    }

    #[test]
    fn malformed_entries_are_dropped_and_never_panic() {
        assert_eq!(
            parsed(
                "ok;dur=1, bad;dur=abc, neg;dur=-1, inf;dur=inf, ;dur=2, sp ace;dur=1, open;desc=\"x, noeq;dur, fine;dur=4"
            ),
            [("ok", 1.0, None)],
            "everything after the unterminated quote is inside it"
        );
        assert_eq!(parsed(""), []);
        assert_eq!(parsed(",,;;"), []);
        assert_eq!(parsed("é;dur=1, ok;dur=2"), [("ok", 2.0, None)]);
        assert_eq!(entries(b"db;dur=1\xff").count(), 0, "not UTF-8");
        assert_eq!(parsed("x;desc=\"\\\"\";dur=5"), [("x", 5.0, None)]);
    }

    #[test]
    fn sums_add_answers_and_clients_and_means_divide_by_every_answer() {
        let mut a = TimingSums::default();
        a.add_header(b"db;dur=2;desc=\"1 query\", total;dur=5");
        a.add_header(b"total;dur=1");
        let mut b = TimingSums::default();
        b.add_header(b"total;dur=2, db;dur=4;desc=\"3 queries\", junk;dur=x");
        a.merge(&b);
        let means = a.means(4);
        assert_eq!(means.len(), 2, "{means:?}");
        assert_eq!(
            means["db"],
            TimingMean {
                ms: 1.5,
                count: Some(1.0)
            }
        );
        assert_eq!(
            means["total"],
            TimingMean {
                ms: 2.0,
                count: None
            }
        );
        assert!(a.means(0).is_empty());
    }
}
