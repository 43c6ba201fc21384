use super::*;
use crate::transforms::tests::{batch_of, refused, run0};

fn parse(settings: &str, message: &str) -> (Map, i64) {
    let data = serde_json::json!({ "message": message }).to_string();
    let (events, _) = run0("parse", settings, batch_of(&[&data]));
    let e = &events[0];
    (e.data.as_object().unwrap().clone(), e.time)
}

fn get<'a>(m: &'a Map, k: &str) -> &'a Value {
    m.get(k).unwrap_or_else(|| panic!("no `{k}` in {m:?}"))
}

#[test]
fn nginx_combined() {
    let line = r#"93.184.216.34 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?x=1 HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#;
    let (m, time) = parse("format: nginx_combined\ntime_field: time", line);
    assert_eq!(get(&m, "client"), &Value::from("93.184.216.34"));
    assert_eq!(get(&m, "user"), &Value::from("frank"));
    assert_eq!(get(&m, "time"), &Value::from("10/Oct/2000:13:55:36 -0700"));
    assert_eq!(get(&m, "method"), &Value::from("GET"));
    assert_eq!(get(&m, "path"), &Value::from("/apache_pb.gif?x=1"));
    assert_eq!(get(&m, "protocol"), &Value::from("HTTP/1.0"));
    assert_eq!(get(&m, "status"), &Value::Int(200));
    assert_eq!(get(&m, "bytes"), &Value::Int(2326));
    assert_eq!(get(&m, "referrer"), &Value::from("http://www.example.com/start.html"));
    assert_eq!(get(&m, "user_agent"), &Value::from("Mozilla/4.08 [en] (Win98; I ;Nav)"));
    assert_eq!(get(&m, "message"), &Value::from(line), "the line stays");
    assert_eq!(time, crate::event::time::parse_rfc3339("2000-10-10T20:55:36Z").unwrap());
}

#[test]
fn access_log_edge_cases() {
    // Nil user and referrer, "-" bytes, escaped quotes, garbage request.
    let (m, _) = parse(
        "format: nginx_combined",
        r#"::1 - - [27/Nov/2026:03:50:00 +0000] "\x16\x03\x01" 400 - "-" "say \"hi\"""#,
    );
    assert_eq!(get(&m, "user"), &Value::Null);
    assert_eq!(get(&m, "referrer"), &Value::Null);
    assert_eq!(get(&m, "bytes"), &Value::Int(0));
    assert_eq!(get(&m, "request"), &Value::from("\u{16}\u{3}\u{1}"));
    assert_eq!(get(&m, "user_agent"), &Value::from("say \"hi\""));
    let (m, _) = parse(
        "format: apache_common",
        r#"127.0.0.1 - - [27/Nov/2026:03:50:00 +0000] "POST /login HTTP/1.1" 302 0"#,
    );
    assert_eq!(get(&m, "status"), &Value::Int(302));
    assert!(m.get("user_agent").is_none());
    // Malformed lines: marked and counted.
    for bad in [
        "",
        "just some text",
        r#"1.2.3.4 - - [27/Nov/2026:03:50:00 +0000] "GET / HTTP/1.1" abc 12 "-" "-""#,
        r#"1.2.3.4 - - [27/Nov/2026:03:50:00 +0000] "GET / HTTP/1.1" 200 12"#,
    ] {
        let (m, _) = parse("format: nginx_combined", bad);
        assert!(m.get("parse_error").is_some(), "{bad:?} gave {m:?}");
    }
}

#[test]
fn referrer_and_user_agent_are_treated_alike() {
    // nginx writes `"` in a header as `\x22`; a header not sent is `-`.
    let (m, _) = parse(
        "format: nginx_combined",
        r#"::1 - - [27/Nov/2026:03:50:00 +0000] "GET / HTTP/1.1" 200 5 "http://a/?q=\x22x\x22" "-""#,
    );
    assert_eq!(get(&m, "referrer"), &Value::from("http://a/?q=\"x\""));
    assert_eq!(get(&m, "user_agent"), &Value::Null);
}

#[test]
fn malformed_lines_are_dropped_and_counted() {
    let data = [
        r#"{"message":"nope"}"#,
        r#"{"message":"1.2.3.4 - - [27/Nov/2026:03:50:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\""}"#,
    ];
    let (events, m) = run0("parse", "format: nginx_combined\non_error: drop", batch_of(&data));
    assert_eq!(events.len(), 1);
    assert_eq!(m.errors(), vec![("parse_failed", 1)]);
    assert_eq!(m.dropped(DropReason::Malformed), 1);
}

#[test]
fn syslog_rfc5424() {
    let line = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] An application event log entry..."#;
    let (m, time) = parse("format: syslog\ntime_field: timestamp", line);
    assert_eq!(get(&m, "facility"), &Value::from("local4"));
    assert_eq!(get(&m, "severity"), &Value::from("notice"));
    assert_eq!(get(&m, "version"), &Value::Int(1));
    assert_eq!(get(&m, "hostname"), &Value::from("mymachine.example.com"));
    assert_eq!(get(&m, "appname"), &Value::from("evntslog"));
    assert!(m.get("procid").is_none(), "nil");
    assert_eq!(get(&m, "msgid"), &Value::from("ID47"));
    let sd = get(&m, "structured_data").as_object().unwrap();
    assert_eq!(
        sd.get("exampleSDID@32473").unwrap().as_object().unwrap().get("eventID"),
        Some(&Value::from("1011"))
    );
    assert_eq!(
        sd.get("examplePriority@32473").unwrap().as_object().unwrap().get("class"),
        Some(&Value::from("high"))
    );
    assert_eq!(get(&m, "message"), &Value::from("An application event log entry..."));
    assert_eq!(time, crate::event::time::parse_rfc3339("2003-10-11T22:14:15.003Z").unwrap());
    let (m, _) = parse("format: syslog", "<34>1 2003-10-11T22:14:15.003Z host su - ID47 - 'su root' failed");
    assert_eq!(get(&m, "severity"), &Value::from("crit"));
    assert_eq!(get(&m, "message"), &Value::from("'su root' failed"));
}

#[test]
fn syslog_rfc3164() {
    let (m, _) = parse(
        "format: syslog",
        "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
    );
    assert_eq!(get(&m, "facility"), &Value::from("auth"));
    assert_eq!(get(&m, "severity"), &Value::from("crit"));
    assert_eq!(get(&m, "timestamp"), &Value::from("Oct 11 22:14:15"));
    assert_eq!(get(&m, "hostname"), &Value::from("mymachine"));
    assert_eq!(get(&m, "appname"), &Value::from("su"));
    assert_eq!(get(&m, "message"), &Value::from("'su root' failed for lonvick on /dev/pts/8"));
    // As written to files (no priority), with a pid.
    let (m, _) = parse(
        "format: syslog\ntime_field: timestamp",
        "Nov  7 03:50:00 web-01 sshd[4242]: Accepted publickey for root",
    );
    assert_eq!(get(&m, "appname"), &Value::from("sshd"));
    assert_eq!(get(&m, "procid"), &Value::from("4242"));
    assert_eq!(get(&m, "message"), &Value::from("Accepted publickey for root"));
    let (m, _) = parse("format: syslog", "<500>Oct 11 22:14:15 x y: z");
    assert!(m.get("parse_error").is_some());
    let (m, _) = parse("format: syslog", "hello world");
    assert!(m.get("parse_error").is_some());
}

#[test]
fn json_logfmt_regex_types_and_targets() {
    let (m, time) = parse(
        "format: json\ntime_field: ts\ntime_format: unix",
        r#"{"level":"info","ts":1700000000.5,"n":3}"#,
    );
    assert_eq!(get(&m, "level"), &Value::from("info"));
    assert_eq!(get(&m, "n"), &Value::Int(3));
    assert_eq!(time, 1_700_000_000_500_000);
    let (m, _) = parse("format: json", "[1,2]");
    assert!(get(&m, "parse_error").as_str().unwrap().contains("object"));

    let (m, _) = parse(
        "format: logfmt\ntypes: {status: int, ok: bool}",
        r#"level=warn msg="disk almost full" status=507 ok=false retry"#,
    );
    assert_eq!(get(&m, "msg"), &Value::from("disk almost full"));
    assert_eq!(get(&m, "status"), &Value::Int(507));
    assert_eq!(get(&m, "ok"), &Value::Bool(false));
    assert_eq!(get(&m, "retry"), &Value::Bool(true));

    let settings = "format: regex\npattern: '^(?P<ts>\\S+) (?P<level>\\w+) took (?P<ms>[0-9.]+)ms'\ntypes: {ms: float, ts: timestamp}\ntarget: data.parsed";
    let (m, _) = parse(settings, "2026-11-27T03:50:00Z WARN took 12.5ms");
    let parsed = get(&m, "parsed").as_object().unwrap();
    assert_eq!(parsed.get("level"), Some(&Value::from("WARN")));
    assert_eq!(parsed.get("ms"), Some(&Value::Float(12.5)));
    assert_eq!(parsed.get("ts"), Some(&Value::from("2026-11-27T03:50:00.000000Z")));
    let (m, _) = parse(settings, "no match here");
    assert!(get(&m, "parse_error").as_str().unwrap().contains("does not match"));
    let (m, _) = parse("format: regex\npattern: '(?P<n>\\w+)'\ntypes: {n: int}", "abc");
    assert!(get(&m, "parse_error").as_str().unwrap().contains("not an integer"));
}

#[test]
fn settings_are_checked() {
    assert!(refused("parse", "format: regex").contains("needs a `pattern`"));
    assert!(refused("parse", "format: regex\npattern: '(\\d+)'").contains("named captures"));
    assert!(refused("parse", "format: json\npattern: 'x'").contains("for `format: regex`"));
    assert!(refused("parse", "format: json\ntarget: subject").contains("target"));
    assert!(refused("parse", "format: csv").contains("unknown variant"));
}

#[test]
fn fields_share_the_line() {
    let line = r#"1.2.3.4 - - [27/Nov/2026:03:50:00 +0000] "GET /a HTTP/1.1" 200 5 "-" "curl""#;
    let message = Str::from(line);
    let mut fields = Map::new();
    access_log(&message, true, &mut fields, 0).unwrap();
    let Some(Value::Str(path)) = fields.get("path") else { panic!() };
    let start = message.as_ptr() as usize;
    assert!((path.as_ptr() as usize) >= start && (path.as_ptr() as usize) < start + line.len());
}
