//! The command grammar on the shared table of commands (`support/table.rs`): every command it is meant to read, read right;
//! the ones left to the model, not claimed. Deterministic, so nothing less than all of them.

#[path = "support/table.rs"]
mod table;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use voice::grammar;
use voice::intent::{Intent, Reader};
use voice::when::Clock;

#[test]
fn the_grammar_reads_every_command_of_the_table() {
    let tz = TimeZone::get("America/New_York").expect("zone");
    let now = Timestamp::now();
    let clock = Clock { now, tz: tz.clone() };
    let zoned = now.to_zoned(tz);
    let mut wrong = Vec::new();
    let mut read = 0;
    for case in table::CASES {
        let said = case.said.replace("{post_id}", "post_0123456789abcdef");
        let p = grammar::read(&said, &clock);
        assert_eq!(p.reader, Reader::Grammar);
        if case.model {
            if p.intent != Intent::Unknown {
                wrong.push(format!("{said:?}: the grammar claimed it as {}, the model should read it", p.intent));
            }
            continue;
        }
        read += 1;
        let args = serde_json::to_value(&p.args).expect("json");
        let diff = table::differences(case, p.intent.as_str(), &args, &zoned, "post_0123456789abcdef");
        if !diff.is_empty() {
            wrong.push(format!("{said:?}: {} (read {args})", diff.join("; ")));
        }
    }
    assert!(wrong.is_empty(), "{} of {read} wrong:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn odd_input_reads_without_panicking() {
    let clock = Clock { now: Timestamp::now(), tz: TimeZone::get("Europe/Berlin").expect("zone") };
    // Curly quotes around a post's words.
    let p = grammar::read("Schedule a post saying \u{201c}Hi there\u{201d} tomorrow at 9", &clock);
    assert_eq!((p.intent, p.args.text.as_deref()), (Intent::SchedulePost, Some("Hi there")));
    let p = grammar::read("Schedule \u{201c}Hi\u{201d} tomorrow at 9", &clock);
    assert_eq!(p.args.text.as_deref(), Some("Hi"));
    // Numbers nobody means.
    for said in ["Post about coffee in 8000000 days", "What's scheduled for the next 4000000000 weeks", "How many clicks in the last 99999999 hours"] {
        let _ = grammar::read(said, &clock);
    }
    // A post's own words are not the command: "continue", "cancel" after "saying".
    let p = grammar::read("Post an update saying we continue the coffee sale tomorrow at noon", &clock);
    assert_eq!(p.intent, Intent::SchedulePost);
    assert_eq!(p.args.text.as_deref(), Some("we continue the coffee sale"));
    // A campaign change with no "campaign" said is confirmed first.
    let p = grammar::read("Resume coffee", &clock);
    assert_eq!(p.intent, Intent::ResumeCampaign);
    assert!(p.confidence < 0.7, "{p:?}");
}
