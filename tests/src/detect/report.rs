//! The suite's table: per scenario, the rules at each scrape and
//! evaluation interval and the detector live and in replay, against the
//! goals.
use std::fmt::Write as _;

use super::{scenario::Scenario, score::Score};

/// Pages within this long of onset, resolved within this long of the end.
pub const RULES_GOAL_S: f64 = 180.0;
pub const DETECTOR_FIRE_GOAL_S: f64 = 15.0;
pub const DETECTOR_RESOLVE_GOAL_S: f64 = 30.0;

/// (scrape interval, evaluation interval) the rules are scored at; the
/// first ones are graded.
pub const RULE_SETTINGS: &[(u64, u64, bool)] = &[(5, 5, true), (15, 15, true), (30, 60, false)];

/// One scenario's scores.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: Scenario,
    /// One per [`RULE_SETTINGS`].
    pub rules: Vec<Score>,
    pub detector: Score,
    pub replay: Option<Score>,
    /// A real Prometheus scraping and evaluating every 5 s (the lab only).
    pub live: Option<Score>,
    /// Whether the live detector's firing line named port 8080.
    pub detector_named_port: Option<bool>,
    pub note: String,
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "never".to_owned(),
        Some(s) => format!("{s:.0}"),
    }
}

fn met(s: &Score, incident: bool, fire: f64, resolve: f64) -> bool {
    s.false_s == 0.0
        && (!incident
            || (s.fire_s.is_some_and(|f| f <= fire) && s.resolve_s.is_some_and(|r| r <= resolve)))
}

impl Row {
    pub fn rules_met(&self, i: usize) -> bool {
        self.rules
            .get(i)
            .is_some_and(|s| met(s, self.scenario.incident, RULES_GOAL_S, RULES_GOAL_S))
    }

    pub fn detector_met(&self) -> bool {
        met(
            &self.detector,
            self.scenario.incident,
            DETECTOR_FIRE_GOAL_S,
            DETECTOR_RESOLVE_GOAL_S,
        ) && self.detector_named_port != Some(false)
    }

    /// Every graded goal met.
    pub fn met(&self) -> bool {
        RULE_SETTINGS
            .iter()
            .enumerate()
            .filter(|(_, (_, _, graded))| *graded)
            .all(|(i, _)| self.rules_met(i))
            && self.detector_met()
            && self
                .live
                .as_ref()
                .is_none_or(|s| met(s, self.scenario.incident, RULES_GOAL_S, RULES_GOAL_S))
    }
}

fn cell(s: &Score, incident: bool) -> String {
    let fr = if incident {
        format!("{} / {}", secs(s.fire_s), secs(s.resolve_s))
    } else {
        "-".to_owned()
    };
    let false_part = if s.false_s > 0.0 {
        let names: Vec<&str> = s.false_names.iter().map(String::as_str).collect();
        format!(" · **false {:.0} s** ({})", s.false_s, names.join(", "))
    } else {
        String::new()
    };
    format!("{fr}{false_part}")
}

/// The Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | what | ");
    for (scrape, eval, graded) in RULE_SETTINGS {
        let _ = write!(
            out,
            "rules, scrape {scrape}s eval {eval}s{} | ",
            if *graded { "" } else { " (ungraded)" }
        );
    }
    out.push_str(
        "real Prometheus, scrape 5s eval 5s | detector live | detector in replay | goals |\n| --- | --- |",
    );
    for _ in RULE_SETTINGS {
        out.push_str(" --- |");
    }
    out.push_str(" --- | --- | --- | --- |\n");
    for r in rows {
        let sc = &r.scenario;
        let _ = write!(
            out,
            "| {} | {} ({}) | ",
            sc.name,
            sc.about,
            if sc.incident { "incident" } else { "benign" }
        );
        for s in &r.rules {
            let _ = write!(out, "{} | ", cell(s, sc.incident));
        }
        match &r.live {
            Some(s) => {
                let _ = write!(out, "{} | ", cell(s, sc.incident));
            }
            None => out.push_str("- | "),
        }
        let named = match r.detector_named_port {
            Some(false) => " · **port not named**",
            _ => "",
        };
        let _ = write!(out, "{}{named} | ", cell(&r.detector, sc.incident));
        match &r.replay {
            Some(s) => {
                let _ = write!(out, "{} | ", cell(s, sc.incident));
            }
            None => out.push_str("- | "),
        }
        let _ = writeln!(
            out,
            "{}{} |",
            if r.met() { "met" } else { "**MISSED**" },
            if r.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.note)
            }
        );
    }
    out.push_str(
        "\nCells: seconds from onset to the first expected page / seconds from the end \
         until every alert of the incident is quiet; `false`: seconds of alerts that \
         should not have fired. Goals: rules page within 180 s and resolve within 180 s, \
         the detector within 15 s and 30 s, no false alarm, and the detector's line names \
         the port for the listener conditions.\n",
    );
    out.push_str(
        "\nHow the scenarios are made: the floods and the scan are frames sent on the \
         client's veth (spoofed sources from 198.19.0.0/16, which the server routes back \
         into the client namespace); the clients are real sockets, except the slow ones \
         (and those of the SYN-queue scenario), whose handshakes are made by hand so that \
         their final ACK leaves a round trip late: this kernel has no netem, which also \
         makes the lossy path nftables' random drops. A hung listener shows nothing on \
         the wire until its accept queue is full (18 s at 7/s with a backlog of 128): it is \
         seen sooner in the accept queue itself (sock_diag), which replay does not have.\n",
    );
    out
}

const BEGIN: &str = "<!-- detection:begin (written by `cargo xtask detect`) -->";
const END: &str = "<!-- detection:end -->";

/// `doc` with its detection section replaced by `section` (appended if it
/// has none).
pub fn replace_section(doc: &str, section: &str) -> String {
    let block = format!("{BEGIN}\n{section}{END}\n");
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!(
                "{}{block}{}",
                &doc[..a],
                doc[b + END.len()..].trim_start_matches('\n')
            )
        }
        _ => format!("{}\n{block}", doc.trim_end_matches('\n').to_owned() + "\n"),
    }
}

/// `new` (a rewrite of BENCHMARKS.md by the benchmarks) with the detection
/// section of `old` kept.
pub fn keep_section(old: &str, new: &str) -> String {
    match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => {
            let section = &old[a + BEGIN.len()..b];
            replace_section(new, section.trim_start_matches('\n'))
        }
        _ => new.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_survives_a_rewrite_by_the_benchmarks() {
        let doc = replace_section("# Benchmarks\n\ntable\n", "## Detection\n\nrows\n");
        assert!(doc.starts_with("# Benchmarks\n\ntable\n\n<!-- detection:begin"));
        let again = replace_section(&doc, "## Detection\n\nnew rows\n");
        assert_eq!(again.matches("detection:begin").count(), 1);
        assert!(again.contains("new rows") && !again.contains("\nrows\n"));
        let rewritten = keep_section(&again, "# Benchmarks\n\nother table\n");
        assert!(rewritten.contains("other table") && rewritten.contains("new rows"));
    }
}
